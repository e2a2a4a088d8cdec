"""Tests of the MINE regularisers: the Donsker-Varadhan estimate against its formula, the pair
sampler's invariants, padding invariance, and whether a trained critic tells dependent pairs
from independent ones on toy data with a known answer."""
import math

import pytest
import torch

import numpy as np
import pandas as pd

from cxvae import regularisers
from cxvae.config import ConfigError
from cxvae.data import DataError, generate_exam_scores
from cxvae.regularisers import GroupwiseCritic, NemethCritic, donsker_varadhan, pairable, sample_pairs
from cxvae.tabular import fit

CRITICS = {"groupwise": GroupwiseCritic, "nemeth": NemethCritic}


def _ragged_mask(sizes, k_max=None):
    """A left-aligned mask for groups of ``sizes``."""
    k_max = k_max or max(sizes)
    return torch.arange(k_max)[None, :] < torch.tensor(sizes)[:, None]


# ---------------------------------------------------------------------------------------------
# Donsker-Varadhan
# ---------------------------------------------------------------------------------------------
def _dv_inputs(dtype):
    """Critic values on a ragged mask, with junk at the padded positions, and the direct formula
    mean(T_joint) - log mean(exp T_marginal) over the real positions."""
    gen = torch.Generator().manual_seed(0)
    mask = _ragged_mask([5, 2, 7, 3])
    t_joint, t_marginal = (torch.randn(4, 7, generator=gen, dtype=dtype) for _ in range(2))
    t_joint[~mask], t_marginal[~mask] = 1e3, 1e3  # junk at padding must not count
    joint, marginal = t_joint[mask].double(), t_marginal[mask].double()
    return t_joint, t_marginal, mask, joint.mean() - torch.log(torch.exp(marginal).mean())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_donsker_varadhan_equals_the_direct_formula(dtype):
    """DV = mean(T_joint) - log mean(exp T_marginal) over the real positions only."""
    t_joint, t_marginal, mask, expected = _dv_inputs(dtype)
    value = donsker_varadhan(t_joint, t_marginal, mask)
    assert value.dtype == dtype
    assert abs(float(value) - float(expected)) < 1e-6


def test_donsker_varadhan_keeps_float64_precision():
    """In float64 the DV estimate agrees with the direct formula to 1e-12."""
    t_joint, t_marginal, mask, expected = _dv_inputs(torch.float64)
    torch.testing.assert_close(donsker_varadhan(t_joint, t_marginal, mask), expected, rtol=1e-12, atol=1e-12)


def test_donsker_varadhan_is_stable_for_large_critic_values():
    """T = 1000 + small gives a finite estimate and finite gradients (no exp overflow)."""
    mask = _ragged_mask([4, 3, 6])
    gen = torch.Generator().manual_seed(1)
    small = 0.1 * torch.randn(3, 6, generator=gen)
    t_joint = (1000.0 + small).requires_grad_()
    t_marginal = (1000.0 + small.flip(1)).requires_grad_()
    value = donsker_varadhan(t_joint, t_marginal, mask)
    value.backward()
    assert math.isfinite(float(value.detach()))
    assert bool(torch.isfinite(t_joint.grad).all()) and bool(torch.isfinite(t_marginal.grad).all())
    # log mean exp(1000 + a) = 1000 + log mean exp(a), evaluated in float64 without overflow
    s = small.double()[mask]
    expected = (s.mean()) - torch.log(torch.exp(small.flip(1).double()[mask]).mean())
    assert abs(float(value.detach()) - float(expected)) < 1e-3
    huge = donsker_varadhan(torch.full((2, 2), 1e4), torch.full((2, 2), 1e4), torch.ones(2, 2, dtype=torch.bool))
    assert abs(float(huge)) < 1e-1


def test_donsker_varadhan_is_invariant_to_shifting_the_critic():
    """Adding a constant to T changes neither the estimate nor (so) the critic's output bias."""
    mask = _ragged_mask([3, 5])
    t_joint, t_marginal = torch.randn(2, 5, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64)
    torch.testing.assert_close(donsker_varadhan(t_joint + 7.5, t_marginal + 7.5, mask),
                               donsker_varadhan(t_joint, t_marginal, mask))


def test_donsker_varadhan_is_zero_when_joint_and_marginal_agree():
    """Identical constant critic values give an estimate of exactly 0."""
    mask = _ragged_mask([3, 5, 2])
    t = torch.full((3, 5), 0.3)
    assert abs(float(donsker_varadhan(t, t, mask))) < 1e-6


# ---------------------------------------------------------------------------------------------
# Pair sampling
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_sample_pairs_invariants(seed):
    """same_group_other != k and < K_i; other_group != i; other_group_obs < K_j (real positions)."""
    gen = torch.Generator().manual_seed(seed)
    sizes = (2 + torch.randint(0, 12, (9,), generator=gen)).tolist()
    mask = _ragged_mask(sizes, k_max=max(sizes) + 3)
    torch.manual_seed(seed)
    pairs = sample_pairs(mask)
    for name in ("same_group_other", "other_group", "other_group_obs"):
        assert pairs[name].shape == mask.shape and pairs[name].dtype == torch.long
    for i, k_i in enumerate(sizes):
        for k in range(k_i):
            other = int(pairs["same_group_other"][i, k])
            j = int(pairs["other_group"][i, k])
            assert other != k and 0 <= other < k_i
            assert j != i and 0 <= j < len(sizes)
            assert 0 <= int(pairs["other_group_obs"][i, k]) < sizes[j]


def test_sample_pairs_are_uniform():
    """Partners are uniform: l over the K_i - 1 others, j over the B - 1 other groups."""
    torch.manual_seed(3)
    mask = _ragged_mask([3, 4, 3])
    counts_l, counts_j = torch.zeros(3), torch.zeros(3)
    n = 4000
    for _ in range(n):
        pairs = sample_pairs(mask)
        counts_l += torch.bincount(pairs["same_group_other"][0, :1], minlength=3)  # partners of (0, 0)
        counts_j += torch.bincount(pairs["other_group"][1, :1], minlength=3)  # partners of group 1
    assert counts_l[0] == 0 and counts_j[1] == 0
    for c in (counts_l[1:], counts_j[[0, 2]]):
        assert bool(((c / n) - 0.5).abs().max() < 0.04)  # 5 standard errors


def test_sample_pairs_rejects_batches_it_cannot_pair():
    """One group raises DataError explaining what is needed; a group of one observation does not
    (it is its own partner, and the critics skip it)."""
    with pytest.raises(DataError, match="at least 2 groups"):
        sample_pairs(_ragged_mask([4]))
    pairs = sample_pairs(_ragged_mask([3, 1, 2]))
    assert int(pairs["same_group_other"][1, 0]) == 0


# ---------------------------------------------------------------------------------------------
# Groups of one observation
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CRITICS))
def test_critics_skip_groups_of_one_observation(name):
    """A singleton group's x reaches nothing (its positions are not scored, and it is no other
    group's context), gradients stay finite, and a batch of singletons only estimates exactly 0."""
    torch.manual_seed(9)
    critic = CRITICS[name](1, 1).double()
    mask = _ragged_mask([3, 1, 4, 1, 2])
    assert pairable(mask).sum() == 9 and regularisers.skipped_groups(mask) == 2
    x = torch.randn(5, 4, 1, dtype=torch.float64) * mask[..., None]
    v = torch.randn(5, 4, 1, dtype=torch.float64, requires_grad=True)
    pairs = sample_pairs(mask)
    value = critic(x, v, mask, pairs)
    moved = x.clone()
    moved[[1, 3], 0] += 100.0  # the singletons' observations
    assert float(critic(moved, v, mask, pairs).detach()) == float(value.detach())
    value.backward()
    assert all(bool(torch.isfinite(p.grad).all()) for p in [v, *critic.parameters()])
    singletons = _ragged_mask([1, 1, 1])
    zero = critic(x[:3, :1], v[:3, :1], singletons, sample_pairs(singletons))
    critic.zero_grad()
    zero.backward()
    assert float(zero) == 0.0 and all(bool((p.grad == 0).all()) for p in critic.parameters())


def _table(sizes, seed=0):
    """A long table of two value columns with a group effect, one group per entry of ``sizes``."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(len(sizes)), sizes)
    return pd.DataFrame({"g": g, "y": rng.normal(size=len(sizes))[g] + rng.normal(size=len(g)),
                         "z": rng.normal(size=len(g))})


def _fit_digest(df, preset):
    """Per-epoch losses and every weight of a 3-epoch tabular fit (seed 1), as exact numbers."""
    m = fit(df, "g", ["y", "z"], preset=preset, epochs=3, batch_size=8, seed=1)
    return (m.history[["train_neg_elbo", "train_mi", "valid_neg_elbo", "skipped_groups"]],
            {n: p.clone() for n, p in m.model.state_dict().items()})


@pytest.mark.parametrize("preset", ["cxvae", "cxvae-nemeth", "gvae-ad"])
def test_training_without_singletons_is_bit_identical(preset, monkeypatch):
    """Data whose groups all have 2+ observations train exactly as before singletons were
    accepted: the same losses and weights, bit for bit, as with the two changes switched back to
    their form at commit 81fa0fb (the DV estimate over all observed positions, and K_i - 1
    without a clamp). The same fits were also compared with an install of 81fa0fb itself (sha256
    of the weights, losses as hex floats): identical."""
    df = _table(np.random.default_rng(0).integers(2, 7, size=40))
    history, weights = _fit_digest(df, preset)
    assert (history.skipped_groups == 0).all()
    monkeypatch.setattr(regularisers, "_dv_of_pairable", donsker_varadhan)
    monkeypatch.setattr(regularisers, "_leave_one_out_count", lambda mask, dtype: mask.sum(dim=1).to(dtype) - 1.0)
    history_before, weights_before = _fit_digest(df, preset)
    pd.testing.assert_frame_equal(history, history_before, check_exact=True)
    for name, w in weights.items():
        assert torch.equal(w, weights_before[name]), name


def test_every_preset_trains_on_groups_of_one_observation():
    """A table where a third of the groups have one row: every preset fits, with finite losses,
    and the history counts the groups the regulariser skipped (each singleton, every epoch)."""
    from cxvae.config import PRESETS

    df = _table([1, 3, 1, 2, 4, 1, 2, 1, 5, 2, 1, 3])
    for preset in PRESETS:
        if PRESETS[preset].get("group_posterior") == "mirror":  # needs the true decoder: a table is refused
            with pytest.raises(ConfigError, match="decoder='true'"):
                fit(df, "g", ["y", "z"], preset=preset, epochs=2, batch_size=4, seed=0)
            continue
        h = fit(df, "g", ["y", "z"], preset=preset, epochs=2, batch_size=4, seed=0).history
        assert np.isfinite(h.train_neg_elbo).all(), preset
        regularised = PRESETS[preset]["regulariser"] != "none"
        assert h.skipped_groups.tolist() == ([5, 5] if regularised else [0, 0]), preset


# ---------------------------------------------------------------------------------------------
# Padding invariance
# ---------------------------------------------------------------------------------------------
def _pad_pairs(pairs, extra):
    """Extend sampled pairs with valid dummy partners for ``extra`` padded positions."""
    batch = pairs["other_group"].shape[0]
    fill = dict(same_group_other=0, other_group=None, other_group_obs=0)
    out = {}
    for name, t in pairs.items():
        pad = torch.zeros(batch, extra, dtype=torch.long) if fill[name] == 0 else \
            ((torch.arange(batch) + 1) % batch)[:, None].expand(-1, extra)
        out[name] = torch.cat([t, pad], dim=1)
    return out


@pytest.mark.parametrize("name", list(CRITICS))
def test_critics_ignore_padding(name):
    """Given the same partners, seven padded positions holding junk x and v leave the critic's estimate unchanged."""
    torch.manual_seed(4)
    critic = CRITICS[name](1, 1).double()
    data = generate_exam_scores(12, seed=5, dtype=torch.float64)
    v = torch.randn(data.x.shape, dtype=torch.float64) * data.mask[..., None]
    pairs = sample_pairs(data.mask)
    padded = data.pad_to(data.x.shape[1] + 7)
    padded.x[~padded.mask] = 2.5
    v_padded = torch.nn.functional.pad(v, (0, 0, 0, 7), value=-4.0)
    with torch.no_grad():
        value = critic(data.x, v, data.mask, pairs)
        value_padded = critic(padded.x, v_padded, padded.mask, _pad_pairs(pairs, 7))
    torch.testing.assert_close(value_padded, value, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Critics on toy problems with a known answer
# ---------------------------------------------------------------------------------------------
def _toy_batch(n_groups, gen, dependent, k_min=8, k_max=16, group_effect=True):
    """Groups of x_ik = m_i + 0.3 eps_ik (m_i ~ N(0, 1), or m_i = 0 without a group effect) and
    codes v_ik that are either the group's mean of x (dependent) or independent N(0, 1) noise."""
    sizes = torch.randint(k_min, k_max + 1, (n_groups,), generator=gen)
    mask = torch.arange(k_max)[None, :] < sizes[:, None]
    m = torch.randn(n_groups, 1, 1, generator=gen) if group_effect else torch.zeros(n_groups, 1, 1)
    x = (m + 0.3 * torch.randn(n_groups, k_max, 1, generator=gen)) * mask[..., None]
    if dependent:
        group_mean = (x.sum(1, keepdim=True) / sizes[:, None, None]).expand(-1, k_max, -1)
        v = group_mean * mask[..., None]
    else:
        v = torch.randn(n_groups, k_max, 1, generator=gen) * mask[..., None]
    return x, v, mask


def _train_critic(critic, make_batch, steps=300, lr=3e-3, seed=0):
    """Maximise the DV bound with Adam on fresh batches; return the estimate on fresh held-out data."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(critic.parameters(), lr=lr)
    for _ in range(steps):
        x, v, mask = make_batch(64, gen)
        loss = -critic(x, v, mask, sample_pairs(mask))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        x, v, mask = make_batch(2048, gen)
        return float(critic(x, v, mask, sample_pairs(mask)))


@pytest.mark.parametrize("name", list(CRITICS))
def test_critic_detects_codes_that_depend_on_the_group(name):
    """v_k = the group's mean of x: a trained critic's DV estimate is clearly positive (> 0.2 nats)."""
    torch.manual_seed(6)
    estimate = _train_critic(CRITICS[name](1, 1), lambda n, g: _toy_batch(n, g, dependent=True), seed=6)
    assert estimate > 0.2


@pytest.mark.parametrize("name", list(CRITICS))
def test_critic_finds_nothing_in_independent_codes(name):
    """v independent of the group: a trained critic's held-out DV estimate is ~ 0 (< 0.05 nats)."""
    torch.manual_seed(7)
    estimate = _train_critic(CRITICS[name](1, 1), lambda n, g: _toy_batch(n, g, dependent=False), seed=7)
    assert abs(estimate) < 0.05


def _own_observation_codes(n_groups, gen):
    """Groups without any group effect, x_ik iid N(0, 1), of two or three observations, and codes
    v_ik = x_ik: v_k depends on its own observation only, never on the others of the group."""
    sizes = torch.randint(2, 4, (n_groups,), generator=gen)
    mask = torch.arange(3)[None, :] < sizes[:, None]
    x = torch.randn(n_groups, 3, 1, generator=gen) * mask[..., None]
    return x, x.clone(), mask


@pytest.mark.parametrize("name", list(CRITICS))
def test_critic_pairs_a_code_only_with_the_other_observations(name):
    """With v_k = x_k and no group effect the joint pairs carry no information: the DV estimate stays ~ 0."""
    # I(x_-k, v_k) = I(x_l, v_k) = 0 here; a critic that leaked x_k into its joint pairs scores ~1 nat or more
    torch.manual_seed(8)
    estimate = _train_critic(CRITICS[name](1, 1), _own_observation_codes, seed=8)
    assert abs(estimate) < 0.05


def test_a_critic_trained_on_fixed_codes_sees_a_leak_and_repeats_itself():
    """fit_critic_on_codes: seeded (the same call gives the same curve), and the group-wise
    critic's estimate on codes that copy the group's mu ends above its estimate on true codes."""
    from cxvae.data import generate_exam_scores
    from cxvae.evaluation import TrueFactorScorer
    from cxvae.regularisers import GroupwiseCritic, fit_critic_on_codes

    data = generate_exam_scores(320, seed=2)
    train, holdout = data.subset(slice(0, 256)), data.subset(slice(256, 320))

    def curve(kind):
        codes = lambda d: TrueFactorScorer("true", kind).codes(d)[1]
        return fit_critic_on_codes(lambda: GroupwiseCritic(x_dim=1, v_dim=1), train, holdout, codes, steps=100,
                                   batch_size=32, lr=1e-3, every=25, seed=0)

    leaky = curve("leaky")
    assert list(leaky.index) == [25, 50, 75, 100]
    assert leaky.equals(curve("leaky"))
    assert leaky.iloc[-1] > curve("true").iloc[-1] + 0.05
