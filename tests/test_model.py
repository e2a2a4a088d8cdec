"""Tests of the Group VAE maths against independent computations: closed forms against
``torch.distributions``, the product encoders against brute-force products of densities on a
grid, the average against explicit averaging, and the invariances (permutation, padding) and
gradient flow that the model promises."""
import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from cxvae.config import ModelConfig, model_preset
from cxvae.data import from_groups, generate_exam_scores
from cxvae.model import (AverageGroupEncoder, CorrectedProductGroupEncoder, DeepSetsGroupEncoder, GroupVAE,
                         InstanceEncoder, ProductGroupEncoder, gaussian_kl, gaussian_log_prob, kl_to_standard_normal,
                         masked_mean, masked_sum, split_normal)

GROUP_ENCODERS = {"average": AverageGroupEncoder, "product": ProductGroupEncoder,
                  "product-corrected": CorrectedProductGroupEncoder, "deepsets": DeepSetsGroupEncoder}


def _encoder(name, seed=0, **cfg):
    """A float64 group encoder ``name`` initialised from ``seed``."""
    torch.manual_seed(seed)
    return GROUP_ENCODERS[name](ModelConfig(**cfg)).double()


def _model(preset="cxvae", seed=0, **overrides):
    """A float64 GroupVAE of ``preset`` initialised from ``seed``."""
    torch.manual_seed(seed)
    return GroupVAE(model_preset(preset, **overrides)).double()


def _data(n=12, seed=0):
    """Small float64 exam-scores data."""
    return generate_exam_scores(n, seed=seed, dtype=torch.float64)


def _garbage_padding(data, extra=7, value=3.5):
    """``data`` padded by ``extra`` positions whose x holds a non-zero value (which must be ignored)."""
    padded = data.pad_to(data.x.shape[1] + extra)
    padded.x[~padded.mask] = value
    return padded


def _log_normal_pdf(u, mean, var):
    """log N(u; mean, var) written out by hand (broadcasting)."""
    var = torch.as_tensor(var, dtype=u.dtype)
    return -0.5 * ((u - mean) ** 2 / var + torch.log(2 * math.pi * var))


def _grid_moments(log_density, grid):
    """Mean and variance of an unnormalised log density tabulated on a uniform grid."""
    w = torch.softmax(log_density, dim=0)  # normalised weights on the grid
    mean = (w * grid).sum()
    return mean, (w * (grid - mean) ** 2).sum()


# ---------------------------------------------------------------------------------------------
# Closed forms
# ---------------------------------------------------------------------------------------------
def test_kl_to_standard_normal_matches_torch_distributions():
    """KL[N(m, diag s^2) || N(0, I)] equals torch's kl_divergence summed over the last dim."""
    gen = torch.Generator().manual_seed(0)
    mean = 3 * torch.randn(5, 4, 3, generator=gen, dtype=torch.float64)
    var = torch.exp(2 * torch.randn(5, 4, 3, generator=gen, dtype=torch.float64))
    expected = kl_divergence(Normal(mean, var.sqrt()), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(kl_to_standard_normal(mean, var), expected, rtol=1e-12, atol=1e-12)
    assert float(kl_to_standard_normal(torch.zeros(1, 2), torch.ones(1, 2))) == 0.0


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_gaussian_kl_between_two_normals_matches_torch_distributions(dtype, tol):
    """KL[N(m, diag v) || N(m', diag v')] equals torch's kl_divergence summed over the last dim,
    with the second normal given per element, broadcast, or as numbers; N(0, I) gives
    kl_to_standard_normal, a normal against itself 0."""
    gen = torch.Generator().manual_seed(1)
    mean, other_mean = (3 * torch.randn(5, 4, 3, generator=gen, dtype=torch.float64) for _ in range(2))
    var, other_var = (torch.exp(2 * torch.randn(5, 4, 3, generator=gen, dtype=torch.float64)) for _ in range(2))
    expected = kl_divergence(Normal(mean, var.sqrt()), Normal(other_mean, other_var.sqrt())).sum(-1)
    m, v, om, ov = (t.to(dtype) for t in (mean, var, other_mean, other_var))
    got = gaussian_kl(m, v, om, ov)
    assert got.dtype == dtype and got.shape == (5, 4)
    torch.testing.assert_close(got, expected.to(dtype), rtol=tol, atol=tol)
    row = kl_divergence(Normal(mean, var.sqrt()), Normal(other_mean[0, 0], other_var[0, 0].sqrt())).sum(-1)
    torch.testing.assert_close(gaussian_kl(m, v, om[0, 0], ov[0, 0]), row.to(dtype), rtol=tol, atol=tol)
    scalar = kl_divergence(Normal(mean, var.sqrt()), Normal(0.5, 2.0)).sum(-1)
    torch.testing.assert_close(gaussian_kl(m, v, 0.5, 4.0), scalar.to(dtype), rtol=tol, atol=tol)
    torch.testing.assert_close(gaussian_kl(m, v, 0.0, 1.0), kl_to_standard_normal(m, v), rtol=0, atol=0)
    assert torch.all(gaussian_kl(m, v, m, v) == 0)


def test_gaussian_log_prob_matches_torch_distributions():
    """log N(x; m, diag v) equals torch's Normal.log_prob summed over the last dim."""
    gen = torch.Generator().manual_seed(1)
    x, mean = (torch.randn(6, 5, 2, generator=gen, dtype=torch.float64) for _ in range(2))
    var = torch.exp(torch.randn(6, 5, 2, generator=gen, dtype=torch.float64))
    expected = Normal(mean, var.sqrt()).log_prob(x).sum(-1)
    torch.testing.assert_close(gaussian_log_prob(x, mean, var), expected, rtol=1e-12, atol=1e-12)


def test_masked_sum_and_mean_use_only_observed_positions():
    """masked_sum / masked_mean equal sums and means over the real positions of each group."""
    h = torch.randn(3, 4, 2, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 0, 0]], dtype=torch.bool)
    for i, k in enumerate([4, 1, 2]):
        torch.testing.assert_close(masked_sum(h, mask)[i], h[i, :k].sum(0))
        torch.testing.assert_close(masked_mean(h, mask)[i], h[i, :k].mean(0))


# ---------------------------------------------------------------------------------------------
# Group encoders against brute force
# ---------------------------------------------------------------------------------------------
def _per_observation_normals(enc, x_group):
    """The encoder's own per-observation posteriors (mean_k, var_k), each ``(K, u_dim)``."""
    with torch.no_grad():
        return split_normal(enc.per_observation(x_group))


def test_product_encoder_matches_grid_product_of_densities():
    """The ML-VAE product equals prod_k N(u; mu_k, Sigma_k) multiplied and normalised on a grid."""
    enc = _encoder("product", seed=1)
    data = from_groups([[0.3], [1.0, -2.0], [-1.0, 0.5, 2.5, 4.0, -3.0], list(torch.linspace(-4, 4, 10))],
                       dtype=torch.float64)
    with torch.no_grad():
        mean, var = enc(data.x, data.mask)
    for i, k in enumerate(data.sizes.tolist()):
        mean_k, var_k = _per_observation_normals(enc, data.x[i, :k])
        for d in range(mean_k.shape[1]):
            m, v = mean_k[:, d], var_k[:, d]
            # the product is narrower than every factor and sits between their means
            lo, hi = float((m - 12 * v.sqrt()).min()), float((m + 12 * v.sqrt()).max())
            grid = torch.linspace(lo, hi, 400_001, dtype=torch.float64)
            log_density = _log_normal_pdf(grid[:, None], m, v).sum(1)  # log prod_k N(u; m_k, v_k)
            grid_mean, grid_var = _grid_moments(log_density, grid)
            torch.testing.assert_close(mean[i, d], grid_mean, rtol=1e-6, atol=1e-7)
            torch.testing.assert_close(var[i, d], grid_var, rtol=1e-5, atol=1e-9)


def test_average_encoder_is_the_explicit_average():
    """The Hosoya average is 1/K sum_k mu_k and 1/K sum_k Sigma_k over the group's own observations."""
    enc = _encoder("average", seed=2)
    data = _data(9, seed=3)
    with torch.no_grad():
        mean, var = enc(data.x, data.mask)
    for i, k in enumerate(data.sizes.tolist()):
        mean_k, var_k = _per_observation_normals(enc, data.x[i, :k])
        torch.testing.assert_close(mean[i], sum(mean_k) / k, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(var[i], sum(var_k) / k, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 10])
def test_corrected_product_matches_grid_of_eq1(k):
    """The corrected encoder equals prior^-(K-1) prod_k [N(0,1) N(m_k, 1/l_k)] on a grid (paper eq. 1)."""
    enc = _encoder("product-corrected", seed=3)
    x = torch.linspace(-5.0, 6.0, k, dtype=torch.float64)[None, :, None]  # one group of K
    mask = torch.ones(1, k, dtype=torch.bool)
    with torch.no_grad():
        mean, var = enc(x, mask)
        m_k, raw = enc.per_observation(x[0]).chunk(2, dim=-1)
    l_k = torch.nn.functional.softplus(raw)  # likelihood precisions of the factors
    # q(u | x_k) = N(0, 1) x N(u; m_k, 1/l_k), normalised: precision 1 + l_k
    post_var = 1.0 / (1.0 + l_k)
    post_mean = l_k * m_k * post_var
    for d in range(m_k.shape[1]):
        lo = min(0.0, float(m_k[:, d].min())) - 15.0  # the result has variance <= 1 and its mean
        hi = max(0.0, float(m_k[:, d].max())) + 15.0  # lies between 0 and the m_k
        grid = torch.linspace(lo, hi, 400_001, dtype=torch.float64)
        log_density = (-(k - 1) * _log_normal_pdf(grid, 0.0, 1.0)
                       + _log_normal_pdf(grid[:, None], post_mean[:, d], post_var[:, d]).sum(1))
        grid_mean, grid_var = _grid_moments(log_density, grid)
        torch.testing.assert_close(mean[0, d], grid_mean, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(var[0, d], grid_var, rtol=1e-5, atol=1e-9)
    if k == 1:  # one observation: the group posterior is that observation's posterior
        torch.testing.assert_close(mean[0], post_mean[0])
        torch.testing.assert_close(var[0], post_var[0])


@pytest.mark.parametrize("k", [1, 200])
def test_corrected_product_variance_is_positive_and_at_most_the_prior(k):
    """For K = 1 and K = 200 the corrected posterior variance is finite, > 0 and <= 1."""
    enc = _encoder("product-corrected", seed=4)
    x = torch.randn(3, k, 1, dtype=torch.float64) * 5
    with torch.no_grad():
        mean, var = enc(x, torch.ones(3, k, dtype=torch.bool))
    assert bool(torch.isfinite(mean).all()) and bool(torch.isfinite(var).all())
    assert bool((var > 0).all()) and bool((var <= 1).all())


def test_group_encoders_give_different_outputs():
    """Average, product and Deep Sets encoders from the same seed give different q(u|x) on the same groups."""
    # (averaging or multiplying after pooling, instead of over per-observation posteriors, makes them agree)
    data = _data(16, seed=5)
    outputs = {}
    for name in ("average", "product", "deepsets"):
        with torch.no_grad():
            outputs[name] = _encoder(name, seed=6)(data.x, data.mask)
    names = list(outputs)
    for a in range(3):
        for b in range(a + 1, 3):
            (ma, va), (mb, vb) = outputs[names[a]], outputs[names[b]]
            gap = max(float((ma - mb).abs().max()), float((va - vb).abs().max()))
            assert gap > 1e-3, (names[a], names[b])
    # the same per-observation network: the average and product variances differ by a factor ~K
    ratio = outputs["average"][1] / outputs["product"][1]
    assert bool((ratio > 0.5 * data.sizes[:, None]).all())


# ---------------------------------------------------------------------------------------------
# Invariances
# ---------------------------------------------------------------------------------------------
def _permute_within_groups(data, seed):
    """The same groups with the observations of each group shuffled (still left aligned), and the
    permutation of each row."""
    gen = torch.Generator().manual_seed(seed)
    x = data.x.clone()
    perms = []
    for i, k in enumerate(data.sizes.tolist()):
        perm = torch.randperm(k, generator=gen)
        x[i, :k] = data.x[i, perm]
        perms.append(perm)
    return x, perms


@pytest.mark.parametrize("name", list(GROUP_ENCODERS))
def test_group_encoders_are_permutation_invariant(name):
    """Shuffling the observations within each group leaves q(u|x) unchanged."""
    enc = _encoder(name, seed=7)
    data = _data(10, seed=8)
    x_perm, _ = _permute_within_groups(data, seed=1)
    with torch.no_grad():
        mean, var = enc(data.x, data.mask)
        mean_p, var_p = enc(x_perm, data.mask)
    torch.testing.assert_close(mean_p, mean, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(var_p, var, rtol=1e-10, atol=1e-12)


def test_instance_encoder_is_permutation_equivariant():
    """Shuffling observations within a group shuffles q(v_k|x_k, u) the same way."""
    model = _model("cxvae", seed=9)
    data = _data(6, seed=10)
    x_perm, perms = _permute_within_groups(data, seed=2)
    with torch.no_grad():
        codes = model.encode(data.x, data.mask, sample=False)
        codes_p = model.encode(x_perm, data.mask, sample=False)
    for i, perm in enumerate(perms):
        torch.testing.assert_close(codes_p["v_mean"][i, :len(perm)], codes["v_mean"][i, perm])


@pytest.mark.parametrize("name", list(GROUP_ENCODERS))
def test_group_encoders_ignore_padding(name):
    """Seven extra padded positions holding non-zero junk leave q(u|x) unchanged."""
    enc = _encoder(name, seed=11)
    data = _data(10, seed=12)
    padded = _garbage_padding(data)
    with torch.no_grad():
        mean, var = enc(data.x, data.mask)
        mean_p, var_p = enc(padded.x, padded.mask)
    torch.testing.assert_close(mean_p, mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(var_p, var, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("conditional", [False, True])
def test_instance_encoders_ignore_padding(conditional):
    """q(v_k|x_k[, u]) at real positions does not change when padding is added."""
    torch.manual_seed(13)
    enc = InstanceEncoder(ModelConfig(), conditional=conditional).double()
    data = _data(10, seed=14)
    padded = _garbage_padding(data)
    u = torch.randn(10, 2, dtype=torch.float64)
    k = data.x.shape[1]
    with torch.no_grad():
        mean, var = enc(data.x, u)
        mean_p, var_p = enc(padded.x, u)
    torch.testing.assert_close(mean_p[:, :k][data.mask], mean[data.mask])
    torch.testing.assert_close(var_p[:, :k][data.mask], var[data.mask])


@pytest.mark.parametrize("preset", ["cxvae", "ml-vae", "ml-vae-corrected", "gvae"])
def test_elbo_terms_ignore_padding_without_sampling_noise(preset):
    """With the sampling noise switched off, every ELBO term (log-likelihood, KLs) is unchanged by padding."""
    model = _model(preset, seed=15, decoder="mlp")
    data = _data(10, seed=16)
    padded = _garbage_padding(data)
    # zero noise: the samples become the means
    zero = lambda d: {k: torch.zeros_like(t) for k, t in model.draw_noise(d.mask, dtype=d.x.dtype).items()}  # noqa: E731
    with torch.no_grad():
        terms = model.elbo_terms(data.x, data.mask, zero(data))
        terms_p = model.elbo_terms(padded.x, padded.mask, zero(padded))
    for name in ("elbo", "log_lik", "kl_u", "kl_v", "u"):
        torch.testing.assert_close(terms_p[name], terms[name], rtol=1e-12, atol=1e-10)


def test_elbo_terms_ignore_padding_with_a_fixed_seed():
    """With the same RNG seed the one-sample ELBO of each group does not depend on padding."""
    model = _model("cxvae", seed=17)
    data = _data(10, seed=18)
    padded = data.pad_to(data.x.shape[1] + 7)
    with torch.no_grad():
        torch.manual_seed(0)
        elbo = model.elbo_terms(data.x, data.mask)["elbo"]
        torch.manual_seed(0)
        elbo_p = model.elbo_terms(padded.x, padded.mask)["elbo"]
    torch.testing.assert_close(elbo_p, elbo, rtol=1e-10, atol=1e-8)


# ---------------------------------------------------------------------------------------------
# The ELBO and the codes
# ---------------------------------------------------------------------------------------------
def test_elbo_terms_match_an_independent_computation():
    """log_lik, kl_u, kl_v of the true-decoder model equal torch.distributions sums over real observations."""
    # the true decoder: x ~ N(2 mu + (sigma^2 + 1) v, 0.1^2)
    model = _model("cxvae", seed=19)
    data = _data(5, seed=20)
    torch.manual_seed(1)
    with torch.no_grad():
        t = model.elbo_terms(data.x, data.mask)
    for i, k in enumerate(data.sizes.tolist()):
        mu, sigma = t["u"][i]
        x_mean = 2 * mu + (sigma ** 2 + 1) * t["v"][i, :k, 0]
        log_lik = Normal(x_mean, 0.1).log_prob(data.x[i, :k, 0]).sum()
        kl_u = kl_divergence(Normal(t["u_mean"][i], t["u_var"][i].sqrt()), Normal(0.0, 1.0)).sum()
        kl_v = kl_divergence(Normal(t["v_mean"][i, :k], t["v_var"][i, :k].sqrt()), Normal(0.0, 1.0)).sum()
        # rtol 1e-6: the true decoder stores log(0.1^2) as a float32 buffer before .double()
        torch.testing.assert_close(t["log_lik"][i], log_lik, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(t["kl_u"][i], kl_u, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(t["kl_v"][i], kl_v, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(t["elbo"][i], log_lik - kl_u - kl_v, rtol=1e-6, atol=1e-9)


def test_encode_without_sampling_returns_means():
    """encode(sample=False) returns u = u_mean and v = v_mean with positive variances."""
    model = _model("cxvae", seed=21)
    data = _data(4, seed=22)
    with torch.no_grad():
        codes = model.encode(data.x, data.mask, sample=False)
    assert torch.equal(codes["u"], codes["u_mean"]) and torch.equal(codes["v"], codes["v_mean"])
    assert codes["u"].shape == (4, 2) and codes["v"].shape == data.x.shape
    assert bool((codes["u_var"] > 0).all()) and bool((codes["v_var"] > 0).all())


def test_conditional_instance_encoder_sees_the_decoders_u(monkeypatch):
    """Inside elbo_terms the conditional encoder q(v|x,u) and the decoder receive the same sampled u."""
    model = _model("cxvae", seed=23)
    data = _data(6, seed=24)
    seen = {}

    def recorder(module, key):
        original = module.forward

        def forward(*args):
            seen[key] = args[1] if key == "encoder" else args[0]
            return original(*args)
        monkeypatch.setattr(module, "forward", forward)

    recorder(model.instance_encoder, "encoder")
    recorder(model.decoder, "decoder")
    with torch.no_grad():
        terms = model.elbo_terms(data.x, data.mask)
    assert torch.equal(seen["encoder"], seen["decoder"])
    assert torch.equal(seen["decoder"], terms["u"])
    assert not torch.equal(terms["u"], terms["u_mean"])  # a sample, not the mean


def test_conditional_instance_encoder_depends_on_u():
    """q(v|x,u) changes when u changes; q(v|x) does not, and q(v|x,u) refuses a missing u."""
    torch.manual_seed(25)
    data = _data(4, seed=26)
    u1, u2 = torch.zeros(4, 2, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    conditional = InstanceEncoder(ModelConfig(), conditional=True).double()
    unconditional = InstanceEncoder(ModelConfig(), conditional=False).double()
    with torch.no_grad():
        assert float((conditional(data.x, u1)[0] - conditional(data.x, u2)[0]).abs().max()) > 1e-4
        assert torch.equal(unconditional(data.x, u1)[0], unconditional(data.x, u2)[0])
        assert torch.equal(unconditional(data.x, None)[0], unconditional(data.x, u1)[0])
    with pytest.raises(ValueError, match="needs a group code u"):
        conditional(data.x, None)


# ---------------------------------------------------------------------------------------------
# Gradient flow
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("group_encoder", list(GROUP_ENCODERS))
@pytest.mark.parametrize("instance_encoder, regulariser",
                         [("conditional", "groupwise"), ("unconditional", "nemeth")])
def test_every_parameter_gets_a_gradient(group_encoder, instance_encoder, regulariser):
    """VAE loss reaches every encoder/decoder parameter; the critic's objective (mi, on its own
    parameters) every critic parameter."""
    # (except the critic's output bias: DV is invariant to T -> T + c, so its gradient is exactly 0)
    torch.manual_seed(27)
    model = GroupVAE(ModelConfig(group_encoder=group_encoder, instance_encoder=instance_encoder,
                                 regulariser=regulariser, decoder="mlp"))
    out = model.losses(generate_exam_scores(32, seed=28))
    (out["neg_elbo"] + out["mi"]).backward(retain_graph=True)
    for name, p in model.named_parameters():
        if not name.startswith("regulariser."):
            assert p.grad is not None and float(p.grad.abs().sum()) > 0, name
    model.zero_grad(set_to_none=True)
    (-out["mi"]).backward(inputs=model.critic_parameters())
    output_bias = f"regulariser.critic.{2 * model.cfg.depth}.bias"  # T -> T + c leaves DV unchanged
    for name, p in model.named_parameters():
        if name == output_bias:
            assert float(p.grad.abs().max()) < 1e-6
        elif name.startswith("regulariser."):
            assert p.grad is not None and float(p.grad.abs().sum()) > 0, name
        else:
            assert p.grad is None or float(p.grad.abs().sum()) == 0, name
    assert {id(p) for p in model.critic_parameters()}.isdisjoint({id(p) for p in model.vae_parameters()})


def test_regulariser_gradient_reaches_the_instance_encoder():
    """The MI estimate alone sends gradient to the instance encoder (the adversarial signal), none to the decoder."""
    torch.manual_seed(29)
    model = GroupVAE(model_preset("cxvae", decoder="mlp"))
    out = model.losses(generate_exam_scores(32, seed=30))
    out["mi"].backward()
    assert all(float(p.grad.abs().sum()) > 0 for p in model.instance_encoder.parameters())
    assert all(p.grad is None for p in model.decoder.parameters())


def test_losses_without_regulariser():
    """With regulariser 'none' the mi term is exactly 0 and there is no critic."""
    model = _model("gvae", seed=31)
    data = _data(8, seed=32)
    out = model.losses(data)
    assert float(out["mi"]) == 0.0 and "mi" in out
    assert model.critic_parameters() == [] and model.regulariser is None


def test_the_log_importance_weight_is_log_joint_minus_log_proposal_by_torch_distributions():
    """Independent computation with torch.distributions: sum over observed positions of
    log N(x; mean, var) + log N(v; 0, 1) - log N(v; v_mean, v_var), plus log N(u; 0, 1) -
    log N(u; u_mean, u_var), per group; padding contributes nothing."""
    from torch.distributions import Normal

    from cxvae.model import log_importance_weight

    g = torch.Generator().manual_seed(0)
    B, K = 3, 4
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    pos = lambda *s: torch.rand(*s, generator=g, dtype=torch.float64) + 0.1  # noqa: E731
    x, xm, xv = r(B, K, 1), r(B, K, 1), pos(B, K, 1)
    u, um, uv = r(B, 2), r(B, 2), pos(B, 2)
    v, vm, vv = r(B, K, 1), r(B, K, 1), pos(B, K, 1)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.float64)
    per_obs = (Normal(xm, xv.sqrt()).log_prob(x) + Normal(0.0, 1.0).log_prob(v) - Normal(vm, vv.sqrt()).log_prob(v))
    expected = (per_obs.sum(-1) * mask).sum(1) + (Normal(0.0, 1.0).log_prob(u) - Normal(um, uv.sqrt()).log_prob(u)).sum(-1)
    torch.testing.assert_close(log_importance_weight(x, xm, xv, mask, u, um, uv, v, vm, vv), expected)
