"""Disentanglement metrics (paper section 5): pure functions of codes, predictions and factors.

Every metric is computed on *holdout* groups never seen in training. The functions take tensors,
not models, so they can be tested with known answers (true factors as codes, constant codes,
leaky codes) and applied alike to learned models and to the exact reference
(:mod:`cxvae.oracle`). :func:`evaluate` ties them to anything with the "scorer" interface::

    scorer.codes(data)                -> group codes (N, d_u), instance codes (N, K, d_v)
    scorer.reconstruction(data)       -> (N, K, x_dim)
    scorer.sampled_reconstructions(data, n_draws) -> (n_draws, N, K, x_dim)
    scorer.translation(data, target)  -> (N, K, x_dim)
    scorer.nll_per_observation(data)  -> float

==================  ==========  ==============================================================
metric              better      what it measures
==================  ==========  ==============================================================
recon_mse           lower       holdout reconstruction from the posterior-mean codes
recon_sampled_mse   lower       holdout reconstruction from codes drawn from the posterior
                                (mean over draws): it charges each model its posterior's width
holdout_nll         lower       -log p(x) per observation (IWAE bound for learned models)
translation_mse     lower       instance codes of group i + group code of group j, decoded,
                                against the ground-truth translation (paper 5.1)
u_probe_mse         lower       how well a probe (kernel ridge regression on the standardised
                                group code, closed form) recovers the true group factors
                                (information about u in the group code)
v_probe_mse         higher      how badly a set probe (kernel ridge regression on the first
                                two moments of a group's instance codes, closed form) recovers
                                the true group factors (group information leaking into the
                                instance codes; the prior variance is the ceiling)
instance_probe_mse  lower       how well a probe recovers each true instance factor v_ik from
                                its own instance code
==================  ==========  ==============================================================

Group factors are probed as (mu, |sigma|): sigma enters the data only through sigma^2, so its
sign is not identifiable from any amount of data and no encoder can (or should) recover it.

The u- and v-probes are solved in closed form (float64 linear algebra), because trained probes
did not converge to the digits the book prints: the Deep Sets v-probe the study first used
(:func:`v_probe_deepsets_mse`, kept for the committed runs whose models were not kept) moved by
up to 11% when only the CPU's kernels changed, the MLP u-probe by up to 7e-3 relative. The
instance probe is a small MLP trained with a fixed budget.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple

import torch
import torch.nn as nn

from .data import GroupedData, translation_targets, true_translation

__all__ = [
    "METRICS", "RECON_DRAWS", "masked_mse", "sampled_masked_mse", "group_factor_targets", "ProbeConfig",
    "u_probe_mse", "u_probe_mlp_mse", "v_probe_mse", "v_probe_deepsets_mse", "instance_probe_mse", "probe_mses", "evaluate",
    "evaluate_many", "group_code_moments", "centred_within_groups",
]

# metric -> "lower" or "higher" is better
METRICS: Dict[str, str] = {
    "recon_mse": "lower", "recon_sampled_mse": "lower", "holdout_nll": "lower", "translation_mse": "lower",
    "u_probe_mse": "lower", "v_probe_mse": "higher", "instance_probe_mse": "lower",
}


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean squared error over observed positions: ``prediction, target (N, K, d)``, ``mask (N, K)``."""
    err = ((prediction - target) ** 2).sum(dim=-1)
    return float((err * mask).sum() / (mask.sum() * prediction.shape[-1]))


# Codes drawn per holdout group for ``recon_sampled_mse`` (our choice: the paper names no form of
# its reconstruction). Each draw covers every holdout observation, so 8 draws suffice.
RECON_DRAWS = 8


def sampled_masked_mse(draws: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """:func:`masked_mse` averaged over draws: ``draws (S, N, K, d)``, ``target (N, K, d)``, ``mask (N, K)``."""
    return sum(masked_mse(draw, target, mask) for draw in draws) / len(draws)


def group_factor_targets(u: torch.Tensor) -> torch.Tensor:
    """The identifiable group factors ``(mu, |sigma|)`` from true ``u (N, 2)`` -> ``(N, 2)``."""
    return torch.stack([u[:, 0], u[:, 1].abs()], dim=-1)


# ---------------------------------------------------------------------------------------------
# Probes: small regressors trained with a fixed budget and seed (probe-train split = training
# groups, probe-test split = holdout groups)
# ---------------------------------------------------------------------------------------------
@dataclass
class ProbeConfig:
    """Fixed probe budget: inputs standardised on the probe-train split; at most ``max_train``
    training groups (or observations). The trained instance probe (and the legacy Deep Sets
    v-probe) run full-batch Adam for ``steps`` steps. The closed-form u- and v-probes use
    ``landmarks`` kernel centres and pick their ridge from ``ridges`` by exact leave-one-out
    error; the u-probe picks its kernel's length scale from ``u_length_scales`` the same way
    (the group codes of some models are far from round, and one scale fits them badly)."""

    hidden: int = 32
    steps: int = 400
    lr: float = 1e-2
    max_train: int = 4096
    seed: int = 0
    landmarks: int = 512
    ridges: Tuple[float, ...] = tuple(10.0 ** k for k in range(-6, 4))
    u_length_scales: Tuple[float, ...] = (0.125, 0.25, 0.5, 1.0)


def _standardise(train: torch.Tensor, test: torch.Tensor, dims):
    mean = train.mean(dim=dims, keepdim=True)
    std = train.std(dim=dims, keepdim=True).clamp_min(1e-6)
    return (train - mean) / std, (test - mean) / std


def _fit(params, loss: Callable[[], torch.Tensor], cfg: ProbeConfig) -> None:
    """Full-batch Adam on ``params`` for ``cfg.steps`` steps of the scalar ``loss()``."""
    opt = torch.optim.Adam(params, lr=cfg.lr)
    for _ in range(cfg.steps):
        opt.zero_grad()
        loss().backward()
        opt.step()


def _fit_predict(make_net: Callable[[], nn.Module], train_inputs: Tuple[torch.Tensor, ...], train_y: torch.Tensor,
                 test_inputs: Tuple[torch.Tensor, ...], cfg: ProbeConfig) -> torch.Tensor:
    """Train S probes, probe s on ``train_inputs[i][s]`` against ``train_y[s]``, and predict
    ``test_inputs[i][s]``: every tensor has a leading seed axis ``S``; returns ``(S, ...)``.

    Every probe starts from the same initialisation (``cfg.seed``), as a probe trained alone does.
    Several probes are trained at once, vectorised with ``torch.func.vmap``; each one's loss is its
    own mean and Adam is elementwise, so probe s follows the same steps as alone, up to rounding.
    One probe runs the plain module, bit-identical to training it alone.
    """
    n_stack = train_y.shape[0]
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        net = make_net().to(train_y.device)
    if n_stack == 1:
        _fit(net.parameters(), lambda: ((net(*(a[0] for a in train_inputs)) - train_y[0]) ** 2).mean(), cfg)
        with torch.no_grad():
            return net(*(b[0] for b in test_inputs))[None]
    params, buffers = torch.func.stack_module_state([copy.deepcopy(net) for _ in range(n_stack)])
    template = copy.deepcopy(net).to("meta")
    predict = torch.func.vmap(lambda p, b, *xs: torch.func.functional_call(template, (p, b), xs))
    # each probe's own mean, summed: no gradient mixes probes
    _fit(list(params.values()), lambda: ((predict(params, buffers, *train_inputs) - train_y) ** 2)
         .flatten(1).mean(dim=1).sum(), cfg)
    with torch.no_grad():
        return predict(params, buffers, *test_inputs)


def _mlp(in_dim: int, out_dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, out_dim))


def u_probe_mse(train_codes, train_u, test_codes, test_u, cfg: ProbeConfig = ProbeConfig()) -> float:
    """MSE of a probe that predicts ``(mu, |sigma|)`` from the group code (lower is better).

    The probe is solved in closed form, as the v-probe's read-out is: the codes are standardised
    on the probe-train groups and a Gaussian-kernel ridge regression (:func:`_kernel_ridge`,
    its penalty chosen by exact leave-one-out error) predicts the factors. Float64 throughout and
    no training loop, so the score depends on the CPU's kernels only through the codes' float32
    rounding (the trained MLP probe it replaces moved by up to 7e-3 relative between kernel
    settings, more than the 3 digits the book prints).

    Args: group codes ``(N, d_u)`` and true group factors ``(N, 2)`` of the probe-train and
    probe-test groups (at most ``cfg.max_train`` probe-train groups are used). Returns the test
    MSE averaged over the two targets; a constant code scores the targets' variance.
    """
    return float(_u_probe(train_codes[None], train_u, test_codes[None], test_u, cfg)[0])


def _u_probe(train_codes, train_u, test_codes, test_u, cfg: ProbeConfig) -> torch.Tensor:
    """:func:`u_probe_mse` of S encoders at once: codes ``(S, N, d_u)``, factors shared; ``-> (S,)``
    (each encoder's probe is solved alone, so entry s is exactly its own)."""
    n = cfg.max_train
    train_y, test_y = group_factor_targets(train_u[:n]).double(), group_factor_targets(test_u).double()
    scores = []
    for s in range(train_codes.shape[0]):
        z_train, z_test = _standardise(train_codes[s, :n].double(), test_codes[s].double(), dims=0)
        pred = _kernel_ridge(z_train, train_y, z_test, cfg, length_scales=cfg.u_length_scales)
        scores.append(((pred - test_y) ** 2).mean())
    return torch.stack(scores).float()


def u_probe_mlp_mse(train_codes, train_u, test_codes, test_u, cfg: ProbeConfig = ProbeConfig()) -> float:
    """The u-probe the study used until the closed-form one: an MLP trained with full-batch Adam for
    ``cfg.steps`` steps. Kept to measure what retired it (``scripts/kernel_spread.py``) and to read
    the committed runs' ``u_probe_mlp_mse`` column; it is *not* portable: its score moved by up to
    7e-3 relative when only the CPU's kernels changed. Shapes as :func:`u_probe_mse`."""
    n = cfg.max_train
    a, b = _standardise(train_codes[:n].float(), test_codes.float(), dims=0)
    train_y, test_y = group_factor_targets(train_u[:n]).float(), group_factor_targets(test_u).float()
    pred = _fit_predict(lambda: _mlp(a.shape[-1], 2, cfg.hidden), (a[None],), train_y[None], (b[None],), cfg)
    return float(((pred[0] - test_y) ** 2).mean())


def centred_within_groups(codes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Instance codes minus their mean over each group's observed positions: ``codes (N, K, d)``,
    ``mask (N, K)`` -> ``(N, K, d)``, 0 at padding. What is left carries no shift shared by a
    whole group (chapter 5 removes the exact posterior's shared shift with it)."""
    m = mask.to(codes.dtype)[..., None]
    return (codes - (codes * m).sum(dim=1, keepdim=True) / m.sum(dim=1, keepdim=True)) * m


def group_code_moments(codes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The first two moments of each group's instance codes, in float64: per group the mean of
    ``c`` and of the products ``c_a c_b`` (``a <= b``). ``codes (S, N, K, d)``, ``mask (N, K)``
    -> ``(S, N, d + d(d+1)/2)``. Padded positions do not count."""
    c = codes.double()
    a, b = torch.triu_indices(c.shape[-1], c.shape[-1])
    per_obs = torch.cat([c, c[..., a] * c[..., b]], dim=-1) * mask.double()[..., None]
    return per_obs.sum(dim=2) / mask.double().sum(dim=1)[:, None]


def _ridge_loo(features: torch.Tensor, y: torch.Tensor, ridges: Sequence[float]):
    """Ridge regression with an intercept, its penalty chosen by exact leave-one-out error.

    ``features (n, p)``, ``y (n, t)``, float64. Returns ``(predict, ridge, loo)``: a function of
    new features ``(m, p) -> (m, t)``, the chosen penalty and its leave-one-out mean squared
    error (over observations and targets). scikit-learn's :class:`~sklearn.linear_model.RidgeCV`
    does the work: without ``cv`` it computes every penalty's leave-one-out residuals in closed
    form from one decomposition, the intercept unpenalised.
    """
    from sklearn.linear_model import RidgeCV  # here, not at the top: it takes ~0.5 s, and `cxvae --help` needs none of it

    fitted = RidgeCV(alphas=list(ridges)).fit(features.numpy(), y.numpy())
    predict = lambda new: torch.from_numpy(fitted.predict(new.numpy())).to(y.dtype)  # noqa: E731
    return predict, float(fitted.alpha_), -float(fitted.best_score_)


def _kernel_ridge(train_z: torch.Tensor, train_y: torch.Tensor, test_z: torch.Tensor, cfg: ProbeConfig,
                  length_scales: Sequence[float] = (1.0,)) -> torch.Tensor:
    """Ridge regression on Gaussian-kernel features: ``exp(-|z - c|^2 / (2 p l))`` for the first
    ``cfg.landmarks`` training points ``c`` as centres (a landmark approximation of kernel ridge
    regression, without Nystroem's whitening). The features are standardised, so ``sqrt(p)`` is the
    typical distance between points; ``l`` is taken from ``length_scales`` (multiples of it, squared)
    together with the ridge, by exact leave-one-out error: ``(n, p), (n, t), (m, p) -> (m, t)``."""
    centres, best = train_z[: cfg.landmarks], None
    for scale in length_scales:
        scale2 = 2.0 * train_z.shape[1] * scale
        rbf = lambda z, scale2=scale2: torch.exp(-torch.cdist(z, centres) ** 2 / scale2)  # noqa: E731
        predict, _, loo = _ridge_loo(rbf(train_z), train_y, cfg.ridges)
        if best is None or loo < best[0]:
            best = (loo, predict, rbf)
    _, predict, rbf = best
    return predict(rbf(test_z))


def v_probe_mse(train_codes, train_mask, train_u, test_codes, test_mask, test_u,
                cfg: ProbeConfig = ProbeConfig()) -> float:
    """MSE of a set probe predicting ``(mu, |sigma|)`` from a group's *instance* codes
    (higher is better: the instance codes should carry no group information).

    The probe is a Deep Sets regressor with fixed element features, solved in closed form: each
    group is summarised by the first two moments of its standardised codes
    (:func:`group_code_moments`), and a Gaussian-kernel ridge regression on those summaries
    (:func:`_kernel_ridge`) predicts the factors. Float64 throughout and no training loop, so it
    gives the same score whatever the CPU's kernels, up to rounding.

    Args: instance codes ``(N, K, d_v)`` with masks ``(N, K)`` and true group factors ``(N, 2)``
    for the probe-train and probe-test groups. The ceiling is the variance of the targets
    (what a probe that learned nothing scores), ``(1 + (1 - 2/pi)) / 2 ~ 0.68`` under the prior.
    """
    return float(_v_probe(train_codes[None], train_mask, train_u, test_codes[None], test_mask, test_u, cfg)[0])


def _v_probe(train_codes, train_mask, train_u, test_codes, test_mask, test_u, cfg: ProbeConfig) -> torch.Tensor:
    """:func:`v_probe_mse` of S encoders at once: codes ``(S, N, K, d_v)``, masks and factors
    shared; ``-> (S,)`` (each encoder's probe is solved alone, so entry s is exactly its own)."""
    n = cfg.max_train
    tr_c, tr_m = train_codes[:, :n].double(), train_mask[:n]
    train_y, test_y = group_factor_targets(train_u[:n]).double(), group_factor_targets(test_u).double()
    scores = []
    for s in range(tr_c.shape[0]):
        flat = tr_c[s][tr_m.bool()]  # (observations, d_v): standardise codes as the element features see them
        mean, std = flat.mean(dim=0), flat.std(dim=0).clamp_min(1e-6)
        tr_f = group_code_moments(((tr_c[s] - mean) / std)[None], tr_m)[0]
        te_f = group_code_moments(((test_codes[s].double() - mean) / std)[None], test_mask)[0]
        z_train, z_test = _standardise(tr_f, te_f, dims=0)
        pred = _kernel_ridge(z_train, train_y, z_test, cfg)
        scores.append(((pred - test_y) ** 2).mean())
    return torch.stack(scores).float()


class _DeepSetsProbe(nn.Module):
    def __init__(self, in_dim: int, hidden: int):
        super().__init__()
        self.element = _mlp(in_dim, hidden, hidden)
        self.pooled = _mlp(hidden, 2, hidden)

    def forward(self, codes, mask):
        """``codes (B, K, d)``, ``mask (B, K)`` float -> ``(B, 2)``: read from the group's mean embedding."""
        h = self.element(codes) * mask[..., None]
        return self.pooled(h.sum(dim=1) / mask.sum(dim=1, keepdim=True))


def v_probe_deepsets_mse(train_codes, train_mask, train_u, test_codes, test_mask, test_u,
                         cfg: ProbeConfig = ProbeConfig()) -> float:
    """The v-probe the study used until the closed-form one: a Deep Sets MLP trained with Adam for
    ``cfg.steps`` steps. Kept to read the committed runs whose models were not kept (their
    ``v_probe_deepsets_mse`` column); it is *not* portable: its score moved by up to 11% when
    only the CPU's kernels changed, because the training did not converge. Shapes as
    :func:`v_probe_mse`."""
    n = cfg.max_train
    tr_c, tr_m = train_codes[:n].float(), train_mask[:n].float()
    te_c, te_m = test_codes.float(), test_mask.float()
    train_y, test_y = group_factor_targets(train_u[:n]).float(), group_factor_targets(test_u).float()
    flat = tr_c[tr_m.bool()]
    mean, std = flat.mean(dim=0), flat.std(dim=0).clamp_min(1e-6)
    tr_c, te_c = (tr_c - mean) / std * tr_m[..., None], (te_c - mean) / std * te_m[..., None]
    pred = _fit_predict(lambda: _DeepSetsProbe(tr_c.shape[-1], cfg.hidden), (tr_c[None], tr_m[None]),
                        train_y[None], (te_c[None], te_m[None]), cfg)
    return float(((pred[0] - test_y) ** 2).mean())


def instance_probe_mse(train_codes, train_mask, train_v, test_codes, test_mask, test_v,
                       cfg: ProbeConfig = ProbeConfig()) -> float:
    """MSE of an MLP predicting each true instance factor ``v_ik`` from its own instance code
    alone (lower is better). Codes ``(N, K, d_v)``, masks ``(N, K)``, factors ``(N, K, 1)``;
    at most ``cfg.max_train * 8`` training observations are used."""
    return float(_instance_probe(train_codes[None], train_mask, train_v, test_codes[None], test_mask, test_v, cfg)[0])


def _instance_probe(train_codes, train_mask, train_v, test_codes, test_mask, test_v, cfg: ProbeConfig) -> torch.Tensor:
    """:func:`instance_probe_mse` of S encoders at once: codes ``(S, N, K, d_v)``; ``-> (S,)``."""
    n = cfg.max_train * 8
    tr_c, tr_y = train_codes[:, train_mask][:, :n].float(), train_v[train_mask][:n].float()
    te_c, te_y = test_codes[:, test_mask].float(), test_v[test_mask].float()
    a, b = _standardise(tr_c, te_c, dims=1)
    n_stack = a.shape[0]
    pred = _fit_predict(lambda: _mlp(a.shape[-1], tr_y.shape[-1], cfg.hidden), (a,), tr_y.expand(n_stack, -1, -1),
                        (b,), cfg)
    return ((pred - te_y) ** 2).flatten(1).mean(dim=1)


def probe_mses(train_codes: Sequence[Tuple[torch.Tensor, torch.Tensor]], train: GroupedData,
               test_codes: Sequence[Tuple[torch.Tensor, torch.Tensor]], test: GroupedData,
               cfg: ProbeConfig = ProbeConfig(), device="cpu") -> Dict[str, torch.Tensor]:
    """The three probe metrics of S encoders at once, their probes trained side by side.

    Args: per encoder, its ``(group codes (N, d_u), instance codes (N, K, d_v))`` of the
    probe-train groups ``train`` and of the probe-test groups ``test``. Returns ``u_probe_mse``,
    ``v_probe_mse`` and ``instance_probe_mse``, each ``(S,)``; entry s equals what the single-
    encoder functions give for encoder s, up to rounding (exactly, for one encoder). The probes
    train on ``device`` (the CPU by default; on a GPU they agree with the CPU's up to rounding).
    """
    tr_u, tr_v = (torch.stack([c[i].to(device) for c in train_codes]) for i in (0, 1))
    te_u, te_v = (torch.stack([c[i].to(device) for c in test_codes]) for i in (0, 1))
    tr, te = train.to(device), test.to(device)
    probes = dict(u_probe_mse=_u_probe(tr_u, tr.u, te_u, te.u, cfg),
                v_probe_mse=_v_probe(tr_v, tr.mask, tr.u, te_v, te.mask, te.u, cfg),
                instance_probe_mse=_instance_probe(tr_v, tr.mask, tr.v, te_v, te.mask, te.v, cfg))
    return {name: values.cpu() for name, values in probes.items()}


# ---------------------------------------------------------------------------------------------
# Everything at once
# ---------------------------------------------------------------------------------------------
def evaluate(scorer, train: GroupedData, holdout: GroupedData, *, translation_seed: int = 0,
             probe: ProbeConfig = ProbeConfig(), recon_draws: int = RECON_DRAWS) -> Dict[str, float]:
    """All metrics of :data:`METRICS` for ``scorer`` (a learned model wrapped in
    :class:`cxvae.evaluation.ModelScorer`, or the exact :class:`cxvae.oracle.ExamScoresOracle`).

    ``train`` provides the probe-train split (its first ``probe.max_train`` groups), ``holdout``
    the test split of every metric. Translation pairs each holdout group with the target of
    :func:`cxvae.data.translation_targets` (seeded). ``recon_sampled_mse`` averages ``recon_draws``
    draws of the codes (seeded by the scorer); a scorer without a posterior to draw from (no
    ``sampled_reconstructions``) gets NaN there.
    """
    return evaluate_many([scorer], train, holdout, translation_seed=translation_seed, probe=probe,
                         recon_draws=recon_draws)[0]


def evaluate_many(scorers: Sequence, train: GroupedData, holdout: GroupedData, *, translation_seed: int = 0,
                  probe: ProbeConfig = ProbeConfig(), probe_device="cpu",
                  recon_draws: int = RECON_DRAWS) -> List[Dict[str, float]]:
    """:func:`evaluate` for several scorers (e.g. the seeds of one study), their probes trained
    side by side (:func:`probe_mses`, on ``probe_device``): one dict per scorer, equal to its own
    :func:`evaluate` up to rounding."""
    target = translation_targets(holdout.n_groups, seed=translation_seed)
    probe_train = train.subset(slice(0, probe.max_train))
    m_te, hx = holdout.mask.cpu(), holdout.to("cpu")
    truth = true_translation(hx, target).double()
    rows, train_codes, test_codes = [], [], []
    for scorer in scorers:
        train_codes.append(scorer.codes(probe_train))
        test_codes.append(scorer.codes(holdout))
        sampled = getattr(scorer, "sampled_reconstructions", None)
        rows.append(dict(
            recon_mse=masked_mse(scorer.reconstruction(holdout).cpu().double(), hx.x.double(), m_te),
            recon_sampled_mse=(float("nan") if sampled is None else
                               sampled_masked_mse(sampled(holdout, recon_draws).cpu().double(), hx.x.double(), m_te)),
            holdout_nll=float(scorer.nll_per_observation(holdout)),
            translation_mse=masked_mse(scorer.translation(holdout, target).cpu().double(), truth, m_te)))
    probes = probe_mses(train_codes, probe_train, test_codes, holdout, probe, device=probe_device)
    return [dict(row, **{name: float(values[i]) for name, values in probes.items()}) for i, row in enumerate(rows)]


def prior_group_factor_variance() -> float:
    """Variance of (mu, |sigma|) under the N(0, I) prior, averaged over the two: the MSE of the
    best constant prediction, i.e. the ceiling of ``v_probe_mse`` and the worst ``u_probe_mse``."""
    return (1.0 + (1.0 - 2.0 / math.pi)) / 2.0
