"""Disentanglement metrics (paper section 5): pure functions of codes, predictions and factors.

Every metric is computed on *holdout* groups never seen in training. The functions take tensors,
not models, so they can be tested with known answers (true factors as codes, constant codes,
leaky codes) and applied alike to learned models and to the exact reference
(:mod:`cxvae.oracle`). :func:`evaluate` ties them to anything with the "scorer" interface::

    scorer.codes(data)                -> group codes (N, d_u), instance codes (N, K, d_v)
    scorer.reconstruction(data)       -> (N, K, x_dim)
    scorer.translation(data, target)  -> (N, K, x_dim)
    scorer.nll_per_observation(data)  -> float

==================  ==========  ==============================================================
metric              better      what it measures
==================  ==========  ==============================================================
recon_mse           lower       holdout reconstruction from the posterior-mean codes
holdout_nll         lower       -log p(x) per observation (IWAE bound for learned models)
translation_mse     lower       instance codes of group i + group code of group j, decoded,
                                against the ground-truth translation (paper 5.1)
u_probe_mse         lower       how well a probe recovers the true group factors from the
                                group code (information about u in the group code)
v_probe_mse         higher      how badly a Deep Sets probe recovers the true group factors
                                from the set of instance codes (group information leaking
                                into the instance codes; the prior variance is the ceiling)
instance_probe_mse  lower       how well a probe recovers each true instance factor v_ik from
                                its own instance code
==================  ==========  ==============================================================

Group factors are probed as (mu, |sigma|): sigma enters the data only through sigma^2, so its
sign is not identifiable from any amount of data and no encoder can (or should) recover it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict

import torch
import torch.nn as nn

from .data import GroupedData, translation_targets, true_translation

__all__ = [
    "METRICS", "masked_mse", "group_factor_targets", "ProbeConfig",
    "u_probe_mse", "v_probe_mse", "instance_probe_mse", "evaluate",
]

# metric -> "lower" or "higher" is better
METRICS: Dict[str, str] = {
    "recon_mse": "lower", "holdout_nll": "lower", "translation_mse": "lower",
    "u_probe_mse": "lower", "v_probe_mse": "higher", "instance_probe_mse": "lower",
}


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean squared error over observed positions: ``prediction, target (N, K, d)``, ``mask (N, K)``."""
    err = ((prediction - target) ** 2).sum(dim=-1)
    return float((err * mask).sum() / (mask.sum() * prediction.shape[-1]))


def group_factor_targets(u: torch.Tensor) -> torch.Tensor:
    """The identifiable group factors ``(mu, |sigma|)`` from true ``u (N, 2)`` -> ``(N, 2)``."""
    return torch.stack([u[:, 0], u[:, 1].abs()], dim=-1)


# ---------------------------------------------------------------------------------------------
# Probes: small regressors trained with a fixed budget and seed (probe-train split = training
# groups, probe-test split = holdout groups)
# ---------------------------------------------------------------------------------------------
@dataclass
class ProbeConfig:
    """Fixed probe budget: full-batch Adam for ``steps`` steps; inputs standardised on the
    probe-train split; at most ``max_train`` training groups (or observations)."""

    hidden: int = 32
    steps: int = 400
    lr: float = 1e-2
    max_train: int = 4096
    seed: int = 0


def _standardise(train: torch.Tensor, test: torch.Tensor, dims):
    mean = train.mean(dim=dims, keepdim=True)
    std = train.std(dim=dims, keepdim=True).clamp_min(1e-6)
    return (train - mean) / std, (test - mean) / std


def _fit(net: nn.Module, predict, target: torch.Tensor, cfg: ProbeConfig) -> None:
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    for _ in range(cfg.steps):
        opt.zero_grad()
        loss = ((predict() - target) ** 2).mean()
        loss.backward()
        opt.step()


def _mlp(in_dim: int, out_dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, out_dim))


def u_probe_mse(train_codes, train_u, test_codes, test_u, cfg: ProbeConfig = ProbeConfig()) -> float:
    """MSE of an MLP that predicts ``(mu, |sigma|)`` from the group code (lower is better).

    Args: group codes ``(N, d_u)`` and true group factors ``(N, 2)`` of the probe-train and
    probe-test groups. Returns the test MSE averaged over the two targets.
    """
    train_codes, test_codes = train_codes[: cfg.max_train].float(), test_codes.float()
    train_y, test_y = group_factor_targets(train_u[: cfg.max_train]).float(), group_factor_targets(test_u).float()
    a, b = _standardise(train_codes, test_codes, dims=0)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        net = _mlp(a.shape[-1], 2, cfg.hidden)
        _fit(net, lambda: net(a), train_y, cfg)
    with torch.no_grad():
        return float(((net(b) - test_y) ** 2).mean())


class _DeepSetsProbe(nn.Module):
    def __init__(self, in_dim: int, hidden: int):
        super().__init__()
        self.element = _mlp(in_dim, hidden, hidden)
        self.pooled = _mlp(hidden, 2, hidden)

    def forward(self, codes, mask):
        h = self.element(codes) * mask[..., None]
        return self.pooled(h.sum(dim=1) / mask.sum(dim=1, keepdim=True))


def v_probe_mse(train_codes, train_mask, train_u, test_codes, test_mask, test_u,
                cfg: ProbeConfig = ProbeConfig()) -> float:
    """MSE of a Deep Sets probe predicting ``(mu, |sigma|)`` from a group's *instance* codes
    (higher is better: the instance codes should carry no group information).

    Args: instance codes ``(N, K, d_v)`` with masks ``(N, K)`` and true group factors ``(N, 2)``
    for the probe-train and probe-test groups. The ceiling is the variance of the targets
    (what a probe that learned nothing scores), ``(1 + (1 - 2/pi)) / 2 ~ 0.68`` under the prior.
    """
    n = cfg.max_train
    tr_c, tr_m = train_codes[:n].float(), train_mask[:n].float()
    te_c, te_m = test_codes.float(), test_mask.float()
    train_y, test_y = group_factor_targets(train_u[:n]).float(), group_factor_targets(test_u).float()
    flat = tr_c[tr_m.bool()]
    mean, std = flat.mean(dim=0), flat.std(dim=0).clamp_min(1e-6)
    tr_c, te_c = (tr_c - mean) / std * tr_m[..., None], (te_c - mean) / std * te_m[..., None]
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        net = _DeepSetsProbe(tr_c.shape[-1], cfg.hidden)
        _fit(net, lambda: net(tr_c, tr_m), train_y, cfg)
    with torch.no_grad():
        return float(((net(te_c, te_m) - test_y) ** 2).mean())


def instance_probe_mse(train_codes, train_mask, train_v, test_codes, test_mask, test_v,
                       cfg: ProbeConfig = ProbeConfig()) -> float:
    """MSE of an MLP predicting each true instance factor ``v_ik`` from its own instance code
    alone (lower is better). Codes ``(N, K, d_v)``, masks ``(N, K)``, factors ``(N, K, 1)``;
    at most ``cfg.max_train * 8`` training observations are used."""
    n = cfg.max_train * 8
    tr_c, tr_y = train_codes[train_mask][:n].float(), train_v[train_mask][:n].float()
    te_c, te_y = test_codes[test_mask].float(), test_v[test_mask].float()
    a, b = _standardise(tr_c, te_c, dims=0)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        net = _mlp(a.shape[-1], tr_y.shape[-1], cfg.hidden)
        _fit(net, lambda: net(a), tr_y, cfg)
    with torch.no_grad():
        return float(((net(b) - te_y) ** 2).mean())


# ---------------------------------------------------------------------------------------------
# Everything at once
# ---------------------------------------------------------------------------------------------
def evaluate(scorer, train: GroupedData, holdout: GroupedData, *, translation_seed: int = 0,
             probe: ProbeConfig = ProbeConfig()) -> Dict[str, float]:
    """All metrics of :data:`METRICS` for ``scorer`` (a learned model wrapped in
    :class:`cxvae.evaluation.ModelScorer`, or the exact :class:`cxvae.oracle.ExamScoresOracle`).

    ``train`` provides the probe-train split (its first ``probe.max_train`` groups), ``holdout``
    the test split of every metric. Translation pairs each holdout group with the target of
    :func:`cxvae.data.translation_targets` (seeded).
    """
    target = translation_targets(holdout.n_groups, seed=translation_seed)
    probe_train = train.subset(slice(0, probe.max_train))
    tr_u_code, tr_v_code = scorer.codes(probe_train)
    te_u_code, te_v_code = scorer.codes(holdout)
    m_tr, m_te = probe_train.mask.cpu(), holdout.mask.cpu()
    hx = holdout.to("cpu")
    return dict(
        recon_mse=masked_mse(scorer.reconstruction(holdout).cpu().double(), hx.x.double(), m_te),
        holdout_nll=float(scorer.nll_per_observation(holdout)),
        translation_mse=masked_mse(scorer.translation(holdout, target).cpu().double(),
                                   true_translation(hx, target).double(), m_te),
        u_probe_mse=u_probe_mse(tr_u_code.cpu(), probe_train.u.cpu(), te_u_code.cpu(), hx.u, probe),
        v_probe_mse=v_probe_mse(tr_v_code.cpu(), m_tr, probe_train.u.cpu(), te_v_code.cpu(), m_te, hx.u, probe),
        instance_probe_mse=instance_probe_mse(tr_v_code.cpu(), m_tr, probe_train.v.cpu(), te_v_code.cpu(), m_te,
                                              hx.v, probe),
    )


def prior_group_factor_variance() -> float:
    """Variance of (mu, |sigma|) under the N(0, I) prior, averaged over the two: the MSE of the
    best constant prediction, i.e. the ceiling of ``v_probe_mse`` and the worst ``u_probe_mse``."""
    return (1.0 + (1.0 - 2.0 / math.pi)) / 2.0
