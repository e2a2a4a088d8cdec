"""Adversarial mutual-information regularisers (MINE critics, Belghazi et al. 2018).

Both estimate a mutual information with the Donsker-Varadhan bound

    I >= E_joint[T] - log E_marginals[exp T]                                   (paper eq. 2, 3)

and are trained adversarially: the critic T maximises the bound, the encoders minimise it.

* :class:`NemethCritic` (Nemeth 2020, paper eq. 2): ``T(x_k, v)`` with v inferred from *another*
  observation l != k of the same group (joint) or from an observation of another group
  (product of marginals).
* :class:`GroupwiseCritic` (CxVAE, paper eq. 3): ``T(x_-k, v_k) = T_beta(v_k, mean_{l != k}
  T_alpha(x_l))``, a Deep Sets summary of all the *other* observations of the group, paired with
  the instance code of observation k (joint) or of an observation of another group (marginals).

Every observed (i, k) of a group with at least 2 observations contributes one joint and one
marginal pair, so each expectation is a masked mean over those positions (:func:`pairable`); a
group of one observation has no other observation to pair with, so the critics skip it (its
instance codes still serve as marginal partners of other groups).  ``log E[exp T]`` is a log-mean-exp, which is
log-mean-exp, numerically stable and the bound itself (a log-sum-exp of a batch *sum* is not).
"""
from __future__ import annotations

import math
from typing import Dict

import torch
import torch.nn as nn

from .data import DataError
from .layers import MLP, uniform_pair_noise

__all__ = ["NemethCritic", "GroupwiseCritic", "donsker_varadhan", "pairable", "skipped_groups", "sample_pairs",
           "pairs_from_uniforms", "check_pairable", "make_regulariser", "fit_critic_on_codes"]


def donsker_varadhan(t_joint: torch.Tensor, t_marginal: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``mean(T_joint) - log mean(exp T_marginal)`` over the True entries of ``mask``.

    Shapes: ``t_joint, t_marginal, mask (B, K)`` -> scalar.
    """
    n = mask.sum().to(t_joint.dtype)
    mean_joint = t_joint.masked_fill(~mask, 0.0).sum() / n
    log_mean_exp = torch.logsumexp(t_marginal.masked_fill(~mask, -math.inf).flatten(), dim=0) - n.log()
    return mean_joint - log_mean_exp


def pairable(mask: torch.Tensor) -> torch.Tensor:
    """The positions of ``mask (B, K)`` the critics score: those of groups with at least 2
    observations, ``(B, K)`` bool. Where every group has 2 or more it is ``mask`` itself, so the
    estimate is then bit for bit the one over all positions."""
    return mask & (mask.sum(dim=1) >= 2)[:, None]


def skipped_groups(mask: torch.Tensor) -> int:
    """How many groups of ``mask (B, K)`` the critics skip (those with a single observation)."""
    return int((mask.sum(dim=1) == 1).sum())


def _dv_of_pairable(t_joint: torch.Tensor, t_marginal: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """:func:`donsker_varadhan` over the :func:`pairable` positions; exactly 0 (with zero
    gradients) for a batch with none. No data-dependent control flow (vmap): with no pairable
    position the estimate is taken over all positions and multiplied by 0, which keeps the
    gradient finite, and with some the mask and the factor 1.0 change no bit."""
    scored = pairable(mask)
    some = scored.any()
    return donsker_varadhan(t_joint, t_marginal, scored | (mask & ~some)) * some.to(t_joint.dtype)


def _leave_one_out_count(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``K_i - 1`` of every group of ``mask (B, K)`` -> ``(B,)``, at least 1: a group of one
    observation (skipped) then gets a leave-one-out mean of 0, not 0/0 = NaN, which would reach
    the critic's gradients through the masked positions. For ``K_i >= 2`` the clamp changes nothing."""
    return (mask.sum(dim=1).to(dtype) - 1.0).clamp(min=1.0)


def check_pairable(mask: torch.Tensor) -> None:
    """Raise :class:`DataError` unless the groups of ``mask (B, K)`` can be paired with other
    groups: at least 2 groups (groups of one observation are skipped by the critics)."""
    if mask.shape[0] < 2:
        raise DataError("the mutual-information regulariser needs at least 2 groups per batch")


def pairs_from_uniforms(mask: torch.Tensor, uniforms: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The partners of :func:`sample_pairs` computed from given ``uniforms (3, B, K)`` in [0, 1).

    No checks and no data-dependent control flow (so it can run under ``torch.func.vmap``); the
    caller guarantees :func:`check_pairable`.
    """
    batch, k_max = mask.shape
    sizes = mask.sum(dim=1)
    positions = torch.arange(k_max, device=mask.device)[None, :]
    offset = 1 + (uniforms[0] * (sizes - 1)[:, None]).long()  # in 1..K_i-1
    same_group_other = (positions + offset) % sizes[:, None]
    shift = 1 + (uniforms[1] * (batch - 1)).long()  # in 1..B-1
    other_group = (torch.arange(batch, device=mask.device)[:, None] + shift) % batch
    other_group_obs = (uniforms[2] * sizes[other_group]).long()
    return dict(same_group_other=same_group_other, other_group=other_group, other_group_obs=other_group_obs)


def sample_pairs(mask: torch.Tensor, generator: torch.Generator | None = None) -> Dict[str, torch.Tensor]:
    """Random partners for every position (i, k) of a left-aligned ``mask (B, K)``.

    Returns ``(B, K)`` long tensors: ``same_group_other`` = an observation l != k of group i
    (uniform; k itself in a group of one observation, which the critics skip); ``other_group`` =
    a group j != i (uniform); ``other_group_obs`` = an observation of group j (uniform). Needs at
    least 2 groups. The uniforms are drawn at observed positions only, so padding changes nothing.
    """
    check_pairable(mask)
    return pairs_from_uniforms(mask, uniform_pair_noise(mask, generator=generator))


class NemethCritic(nn.Module):
    """Single-observation critic ``T(x, v)`` of Nemeth (2020); paper eq. (2)."""

    def __init__(self, x_dim: int, v_dim: int, hidden: int = 32, depth: int = 3):
        super().__init__()
        self.critic = MLP(x_dim + v_dim, 1, hidden, depth)

    sample_pairs = staticmethod(sample_pairs)

    def forward(self, x: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                pairs: Dict[str, torch.Tensor]) -> torch.Tensor:
        """DV estimate of ``I_r(x, v)`` for ``x (B, K, x_dim)``, codes ``v (B, K, v_dim)``."""
        v_same = torch.gather(v, 1, pairs["same_group_other"][..., None].expand(-1, -1, v.shape[-1]))
        v_other = v[pairs["other_group"], pairs["other_group_obs"]]  # (B, K, v_dim)
        t_joint = self.critic(torch.cat([x, v_same], dim=-1)).squeeze(-1)
        t_marginal = self.critic(torch.cat([x, v_other], dim=-1)).squeeze(-1)
        return _dv_of_pairable(t_joint, t_marginal, mask)


class GroupwiseCritic(nn.Module):
    """Group-wise critic ``T(x_-k, v_k) = T_beta(v_k, mean_{l != k} T_alpha(x_l))``; paper eq. (3)."""

    def __init__(self, x_dim: int, v_dim: int, hidden: int = 32, depth: int = 3):
        super().__init__()
        self.element = MLP(x_dim, hidden, hidden, depth)  # T_alpha
        self.critic = MLP(hidden + v_dim, 1, hidden, depth)  # T_beta

    sample_pairs = staticmethod(sample_pairs)

    def forward(self, x: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                pairs: Dict[str, torch.Tensor]) -> torch.Tensor:
        """DV estimate of ``I_r(x_-k, v_k)`` for ``x (B, K, x_dim)``, codes ``v (B, K, v_dim)``."""
        h = self.element(x) * mask[..., None].to(x.dtype)  # (B, K, H), zero at padding
        others = _leave_one_out_count(mask, x.dtype)  # K_i - 1
        leave_one_out = (h.sum(dim=1, keepdim=True) - h) / others[:, None, None]  # (B, K, H)
        v_other = v[pairs["other_group"], pairs["other_group_obs"]]
        t_joint = self.critic(torch.cat([leave_one_out, v], dim=-1)).squeeze(-1)
        t_marginal = self.critic(torch.cat([leave_one_out, v_other], dim=-1)).squeeze(-1)
        return _dv_of_pairable(t_joint, t_marginal, mask)


def make_regulariser(cfg) -> nn.Module | None:
    """The critic named by ``cfg.regulariser`` (None for ``'none'``)."""
    if cfg.regulariser == "none":
        return None
    cls = {"nemeth": NemethCritic, "groupwise": GroupwiseCritic}[cfg.regulariser]
    return cls(cfg.x_dim + cfg.c_dim, cfg.v_dim, cfg.hidden, cfg.depth)  # the critic reads the covariates too


def fit_critic_on_codes(make_critic, train, holdout, codes, *, steps: int, batch_size: int, lr: float,
                        every: int = 25, seed: int = 0):
    """Train a critic alone on fixed instance codes and follow its Donsker-Varadhan estimate.

    ``make_critic()`` builds the critic (after the seed is set, so its initialisation is seeded
    too); ``codes(data) -> (N, K, v_dim)`` gives the codes of a :class:`cxvae.data.GroupedData` (for
    example a :class:`cxvae.evaluation.TrueFactorScorer`'s second code). The critic maximises its
    bound on batches of ``train`` groups with Adam for ``steps`` steps (as many epochs as needed);
    every ``every`` steps its estimate on all ``holdout`` groups is recorded. Returns a
    ``pandas.Series`` of the estimates (nats) indexed by step. Seeded: the same call gives the same
    curve (chapter 4 uses it to compare what the two critics can see).
    """
    import pandas as pd

    from .data import GroupBatchLoader

    torch.manual_seed(seed)
    critic = make_critic()
    opt = torch.optim.Adam(critic.parameters(), lr=lr)
    loader = GroupBatchLoader(train, batch_size, seed=seed)
    batches = (batch for _ in range(steps) for batch in loader)
    curve, v_holdout = [], codes(holdout)
    for step, batch in zip(range(1, steps + 1), batches):
        loss = -critic(batch.x, codes(batch), batch.mask, sample_pairs(batch.mask))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % every == 0:
            with torch.no_grad():
                curve.append(float(critic(holdout.x, v_holdout, holdout.mask, sample_pairs(holdout.mask))))
    return pd.Series(curve, index=range(every, steps + 1, every))
