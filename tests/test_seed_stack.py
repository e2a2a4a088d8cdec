"""Tests of training many seeds at once (:class:`cxvae.train.SeedStack`, :func:`train_seeds`):
the stack computes each seed's own losses, never mixes seeds in gradients, clipping or Adam, and
a seed trains alike alone or beside others."""
import dataclasses
import math

import pytest
import torch

from cxvae.config import ConfigError, make_run_config
from cxvae.data import GroupBatchLoader, generate_exam_scores
from cxvae.model import GroupVAE
from cxvae import regularisers
from cxvae.regularisers import donsker_varadhan, pairs_from_uniforms
from cxvae.train import (SeedStack, TrainingDiverged, adversarial_backward, clip_grad_norm_per_seed_, clip_into_flat_,
                         make_splits, train, train_seeds, train_step)

SEEDS = [3, 7, 11]


def _cfg(preset="cxvae", epochs=1, **train):
    return make_run_config(preset, seed=0, scale="smoke", device="cpu", data=dict(n_train=512, n_valid=64),
                           train=dict(epochs=epochs, **train))


def _batch_for(stack, n_groups=16, seed=0):
    data = generate_exam_scores(n_groups, seed=seed)
    x = data.x.expand(len(stack.seeds), *data.x.shape)
    mask = data.mask.expand(len(stack.seeds), *data.mask.shape)
    return data, x, mask


@pytest.mark.parametrize("preset", ["cxvae", "gvae-ad", "ml-vae"])
def test_each_seed_starts_as_its_own_single_run_and_computes_its_own_losses(preset):
    """Seed s's stacked parameters are those of GroupVAE under torch.manual_seed(s), and its
    stacked losses equal the plain model's losses with the same noise."""
    stack = SeedStack(_cfg(preset).model, SEEDS, torch.device("cpu"))
    data, x, mask = _batch_for(stack)
    noise = stack.draw_noise(mask, step=0)
    out = stack.losses(x, mask, noise)
    dv_terms = []  # (mean_joint, log_mean_exp) of each plain forward, to size the tolerance of mi

    def recording_dv(t_joint, t_marginal, m):
        bound = donsker_varadhan(t_joint, t_marginal, m)
        mean_joint = float(t_joint.detach().masked_fill(~m, 0.0).sum() / m.sum())
        dv_terms.append((mean_joint, mean_joint - float(bound.detach())))
        return bound

    for i, seed in enumerate(SEEDS):
        torch.manual_seed(seed)
        alone = GroupVAE(_cfg(preset).model)
        for name, tensor in alone.state_dict().items():
            assert torch.equal(stack.model(i).state_dict()[name], tensor)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(regularisers, "donsker_varadhan", recording_dv)
            ref = alone(data.x, data.mask, {k: v[i] for k, v in noise.items()})
        assert bool(dv_terms) == (preset != "ml-vae")  # the critic's bound was recorded where there is one
        for name in ref:
            if name == "mi" and dv_terms:
                # mi = E[T] - log E[exp T] is a small difference (~1e-5) of two terms of ~0.1. The
                # stacked and plain paths round each critic output differently (other matmul
                # kernels for batched and plain layers; the error grows through the critic's layers
                # of 32-term dot products), so the error scales with the terms, not their difference:
                # 256 float32 epsilons of their size (a mispaired group moves mi by ~1e-2).
                joint, log_mean_exp = dv_terms[-1]
                atol = 256 * torch.finfo(torch.float32).eps * (abs(joint) + abs(log_mean_exp))
                torch.testing.assert_close(out[name][i], ref[name], rtol=0, atol=atol)
            else:
                torch.testing.assert_close(out[name][i], ref[name], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("preset", ["cxvae", "gvae-ad"])
def test_gradients_never_cross_seeds(preset):
    """The loss of one seed has exactly zero gradient with respect to every other seed's parameters."""
    stack = SeedStack(_cfg(preset).model, SEEDS, torch.device("cpu"))
    _, x, mask = _batch_for(stack, seed=1)
    out = stack.losses(x, mask, stack.draw_noise(mask, step=0))
    (out["neg_elbo"][1] + 0.5 * out["mi"][1]).backward()
    # the DV bound is unchanged by adding a constant to the critic, so its output bias has zero gradient
    critic_output_bias = [n for n in stack.params if n.startswith("regulariser.") and n.endswith(".bias")][-1]
    for name, p in stack.params.items():
        assert p.grad is not None, name
        assert torch.count_nonzero(p.grad[[0, 2]]) == 0, name
        assert torch.count_nonzero(p.grad[1]) > 0 or name.endswith("log_var") or name == critic_output_bias, name


def test_gradient_clipping_is_per_seed():
    """A seed with huge gradients is clipped to max_norm; the other seed's gradients are untouched."""
    params = [torch.zeros(2, 3, 4, requires_grad=True), torch.zeros(2, 5, requires_grad=True)]
    torch.manual_seed(0)
    for p in params:
        p.grad = torch.randn_like(p) * 0.01
        p.grad[0] *= 1e5
    before = [p.grad[1].clone() for p in params]
    norms = clip_grad_norm_per_seed_(params, max_norm=1.0)
    assert norms[0] > 10 and norms[1] < 1
    assert all(torch.equal(p.grad[1], b) for p, b in zip(params, before))
    clipped = math.sqrt(sum(float(p.grad[0].pow(2).sum()) for p in params))
    assert clipped == pytest.approx(1.0, rel=1e-5)
    # the single-model clipping of torch gives the same norm for a seed taken alone
    single = [torch.zeros(3, 4, requires_grad=True), torch.zeros(5, requires_grad=True)]
    for s, b in zip(single, before):
        s.grad = b.clone()
    assert float(torch.nn.utils.clip_grad_norm_(single, 1.0)) == pytest.approx(float(norms[1]), rel=1e-6)


@pytest.mark.parametrize("preset", ["cxvae", "ml-vae"])
@pytest.mark.parametrize("with_critic", [True, False])
def test_a_stack_draws_for_each_seed_what_its_model_draws(preset, with_critic):
    """Seed s's slice of the stack's noise at step t is GroupVAE.draw_noise(seed=s, step=t) of the
    plain model, with the pairs only where the model has a critic (and with_critic)."""
    cfg = _cfg(preset).model
    stack = SeedStack(cfg, SEEDS, torch.device("cpu"))
    _, _, mask = _batch_for(stack, seed=2)
    drawn = stack.draw_noise(mask, step=12, with_critic=with_critic)
    assert ("pairs" in drawn) == (preset == "cxvae" and with_critic)
    for i, seed in enumerate(SEEDS):
        own = stack.template.draw_noise(mask[i], seed=seed, step=12, with_critic=with_critic)
        assert own.keys() == drawn.keys()
        for key in own:
            assert torch.equal(drawn[key][i], own[key]), key
    assert torch.count_nonzero(drawn["v"][:, ~mask[0]]) == 0  # nothing at padding


def test_row_wise_clipping_norms_equal_the_per_seed_ones():
    """The GPU's way of taking the per-seed norms (row-wise over the seed axis) agrees with the
    per-seed loop; both ways run here on the CPU."""
    torch.manual_seed(1)
    grads = [torch.randn(4, 3, 5), torch.randn(4, 7)]
    params = [torch.zeros_like(g, requires_grad=True) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    loop = clip_grad_norm_per_seed_(params, max_norm=1e9, row_wise=False)
    rows = clip_grad_norm_per_seed_(params, max_norm=1e9, row_wise=True)
    torch.testing.assert_close(rows, loop, rtol=1e-6, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_stack_on_the_gpu_computes_what_it_computes_on_the_cpu():
    """The same stacked step on CUDA and on the CPU, each drawing its own noise: losses and
    clipped gradients agree to rounding."""
    cfg = _cfg("cxvae").model
    outs = {}
    for dev in ("cpu", "cuda"):
        stack = SeedStack(cfg, SEEDS, torch.device(dev))
        data = generate_exam_scores(16, seed=0).to(dev)
        x, mask = data.x.expand(3, *data.x.shape), data.mask.expand(3, *data.mask.shape)
        out = stack.losses(x, mask, stack.draw_noise(mask, step=0))  # the same noise on both devices
        out["neg_elbo"].sum().backward(inputs=stack.vae_params)
        norms = clip_grad_norm_per_seed_(stack.vae_params, 1.0)
        outs[dev] = (out["neg_elbo"].cpu(), norms.cpu())
    for a, b in zip(outs["cpu"], outs["cuda"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_one_seed_trains_exactly_like_the_plain_training_step():
    """train() is the plain loop over train_step (same seed, same batches, the noise of
    GroupVAE.draw_noise at each step): identical weights."""
    cfg = _cfg("cxvae", epochs=1)
    splits = make_splits(cfg.data)
    result = train(cfg, splits, progress=False)

    torch.manual_seed(cfg.seed)
    model = GroupVAE(cfg.model)
    loader = GroupBatchLoader(splits["train"], cfg.train.batch_size, seed=cfg.train.shuffle_seed,
                              drop_last=splits["train"].n_groups >= 2 * cfg.train.batch_size)
    steps = len(loader)
    decay = lambda t: cfg.train.lr_decay_to + (1 - cfg.train.lr_decay_to) * 0.5 * (1 + math.cos(math.pi * t / steps))  # noqa: E731
    opt = torch.optim.Adam(model.vae_parameters(), lr=cfg.train.lr)
    critic_opt = torch.optim.Adam(model.critic_parameters(), lr=cfg.train.critic_lr)
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, decay) for o in (opt, critic_opt)]
    for step, batch in enumerate(loader):
        train_step(model, batch, opt, critic_opt, cfg.train, model.draw_noise(batch.mask, seed=cfg.seed, step=step))
        for s in schedulers:
            s.step()
    for name, tensor in model.state_dict().items():
        assert torch.equal(result.model.state_dict()[name], tensor), name


def test_a_seed_trains_alike_alone_or_beside_other_seeds():
    """Seed 0 trained alone and inside a stack of three ends in the same place: its losses agree
    to float rounding (batched products round their last bits differently, nothing more)."""
    cfg = _cfg("cxvae", epochs=2)
    splits = make_splits(cfg.data)
    alone = train_seeds(cfg, [0], splits, progress=False)[0]
    stacked = train_seeds(cfg, [5, 0, 9], splits, progress=False)
    beside = stacked[1]
    assert beside.config.seed == 0 and [r.config.seed for r in stacked] == [5, 0, 9]
    torch.testing.assert_close(torch.tensor(beside.history.valid_neg_elbo.values),
                               torch.tensor(alone.history.valid_neg_elbo.values), rtol=1e-3, atol=0)
    for name, tensor in alone.model.state_dict().items():
        torch.testing.assert_close(beside.model.state_dict()[name], tensor, rtol=0, atol=2e-2)
    # and the other seeds really are different models
    assert not torch.allclose(stacked[0].model.instance_encoder.net[0].weight,
                              beside.model.instance_encoder.net[0].weight, atol=0.1)


def test_train_seeds_rejects_repeated_seeds_and_names_a_diverged_seed():
    with pytest.raises(ConfigError, match="distinct"):
        train_seeds(_cfg(), [1, 1], progress=False)
    with pytest.raises(TrainingDiverged, match=r"seed 4, 6\) diverged in epoch 1"):
        train_seeds(_cfg("gvae", lr=1e9), [4, 6], progress=False)


def test_cuda_graphs_need_a_cuda_device():
    with pytest.raises(ConfigError, match="cuda_graphs needs a CUDA device"):
        train_seeds(_cfg(), [0], progress=False, cuda_graphs=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("preset", ["cxvae", "ml-vae"])
def test_a_stack_replayed_from_cuda_graphs_trains_like_the_eager_stack(preset):
    """Two epochs of three seeds on the GPU, eager and from CUDA graphs (padded batches, capturable
    Adam): the same validation curves and weights, to float rounding."""
    cfg = dataclasses.replace(_cfg(preset, epochs=2), device="cuda")
    splits = make_splits(cfg.data)
    eager = train_seeds(cfg, SEEDS, splits, progress=False)
    graphed = train_seeds(cfg, SEEDS, splits, progress=False, cuda_graphs=True)
    for a, b in zip(eager, graphed):
        torch.testing.assert_close(torch.tensor(b.history.valid_neg_elbo.values),
                                   torch.tensor(a.history.valid_neg_elbo.values), rtol=1e-3, atol=0)
        for name, tensor in a.model.state_dict().items():
            torch.testing.assert_close(b.model.state_dict()[name], tensor, rtol=0, atol=2e-2)


def _two_pass_step(model, batch, opt, critic_opt, tc, noise):
    """The adversarial step computed the plain way, as a reference: the VAE's backward pass, then
    a second forward and backward pass of the critic alone on the detached instance codes."""
    out = model(batch.x, batch.mask, noise)
    v = model.elbo_terms(batch.x, batch.mask, noise)["v"].detach()  # the same codes, by the same noise
    critic_loss = -model.regulariser(batch.x, v, batch.mask, pairs_from_uniforms(batch.mask, noise["pairs"]))
    opt.zero_grad(set_to_none=True)
    critic_opt.zero_grad(set_to_none=True)
    (out["neg_elbo"] + tc.reg_weight * out["mi"]).backward(inputs=model.vae_parameters())
    torch.nn.utils.clip_grad_norm_(model.vae_parameters(), tc.grad_clip)
    opt.step()
    critic_loss.backward(inputs=model.critic_parameters())
    torch.nn.utils.clip_grad_norm_(model.critic_parameters(), tc.grad_clip)
    critic_opt.step()


@pytest.mark.parametrize("preset", ["cxvae", "cxvae-nemeth"])
def test_one_backward_pass_trains_exactly_like_two(preset):
    """train_step takes both players' gradients from one backward pass; 12 steps of it end in the
    same weights, bit for bit, as the plain two-pass step (a separate critic pass on detached codes)."""
    cfg = _cfg(preset)
    data = generate_exam_scores(256, seed=4)
    models = []
    for step_fn in (train_step, _two_pass_step):
        torch.manual_seed(0)
        model = GroupVAE(cfg.model)
        opt = torch.optim.Adam(model.vae_parameters(), lr=1e-2)
        critic_opt = torch.optim.Adam(model.critic_parameters(), lr=1e-2)
        for step, batch in enumerate(list(GroupBatchLoader(data, 64, seed=1)) * 3):
            step_fn(model, batch, opt, critic_opt, cfg.train, model.draw_noise(batch.mask, seed=0, step=step))
        models.append(model)
    for name, tensor in models[0].state_dict().items():
        assert torch.equal(models[1].state_dict()[name], tensor), name


@pytest.mark.parametrize("reg_weight, exact", [(1.0, True), (0.25, True), (0.0, True), (0.3, False)])
def test_adversarial_backward_gives_each_player_its_own_gradient(reg_weight, exact):
    """The VAE gets d(neg_elbo + w mi), the critic d(-mi): bit for bit those of two separate passes
    when w is a power of two or 0, to rounding otherwise."""
    torch.manual_seed(5)
    model = GroupVAE(_cfg("cxvae").model)
    data = generate_exam_scores(32, seed=6)
    noise = model.draw_noise(data.mask, seed=1, step=0)
    vae, critic = model.vae_parameters(), model.critic_parameters()
    out = model(data.x, data.mask, noise)
    adversarial_backward(out["neg_elbo"], out["mi"], vae, critic, reg_weight)
    got = [p.grad.clone() for p in vae + critic]
    model.zero_grad(set_to_none=True)
    out = model(data.x, data.mask, noise)
    (out["neg_elbo"] + reg_weight * out["mi"]).backward(inputs=vae)
    (-model(data.x, data.mask, noise)["mi"]).backward(inputs=critic)
    for p, g in zip(vae + critic, got):
        if exact:
            assert torch.equal(p.grad, g)
        else:
            torch.testing.assert_close(g, p.grad, rtol=1e-5, atol=1e-6)  # rounding differs along the chain


def test_the_stacked_parameters_are_views_of_one_flat_tensor_per_player():
    """Each stacked parameter is a leaf sharing memory with its player's (S, P) tensor, so an
    optimiser step on the flat tensor moves it; clipping into the flat gradient gives the numbers
    of clip_grad_norm_per_seed_."""
    stack = SeedStack(_cfg("cxvae").model, SEEDS, torch.device("cpu"))
    n_vae = sum(p[0].numel() for p in stack.vae_params)
    assert stack.vae_flat.shape == (3, n_vae) and stack.critic_flat.shape[0] == 3
    assert all(p.is_leaf and p.requires_grad for p in stack.vae_params + stack.critic_params)
    first = stack.vae_params[0]
    before = first.detach().clone()
    with torch.no_grad():
        stack.vae_flat[1] += 1.0
    assert torch.equal(first[1], before[1] + 1.0) and torch.equal(first[0], before[0])

    stack = SeedStack(_cfg("cxvae").model, SEEDS, torch.device("cpu"))
    _, x, mask = _batch_for(stack, seed=3)
    out = stack.losses(x, mask, stack.draw_noise(mask, step=0))
    (out["neg_elbo"].sum() * 1e3).backward(inputs=stack.vae_params)  # large, so that clipping bites
    copies = [p.detach().clone().requires_grad_() for p in stack.vae_params]
    for c, p in zip(copies, stack.vae_params):
        c.grad = p.grad.clone()
    norms = clip_into_flat_(stack.vae_params, stack.vae_flat, max_norm=1.0)
    reference = clip_grad_norm_per_seed_(copies, max_norm=1.0)
    assert torch.equal(norms, reference) and bool((norms > 1.0).all())
    assert torch.equal(stack.vae_flat.grad, torch.cat([c.grad.flatten(1) for c in copies], dim=1))


def test_a_stack_without_a_critic_has_an_empty_critic_tensor():
    stack = SeedStack(_cfg("gvae").model, SEEDS, torch.device("cpu"))
    assert stack.critic_params == [] and stack.critic_flat.numel() == 0
    stack.zero_grad()  # nothing to forget, and no error
