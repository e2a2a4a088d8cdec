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

Every observed (i, k) of the batch contributes one joint and one marginal pair, so each
expectation is a masked mean over the batch; ``log E[exp T]`` is a log-mean-exp, which is
numerically stable and is the bound itself (a log-sum-exp of a batch *sum* is not).
"""
from __future__ import annotations

import math
from typing import Dict

import torch
import torch.nn as nn

from .data import DataError

__all__ = ["NemethCritic", "GroupwiseCritic", "donsker_varadhan", "sample_pairs", "pairs_from_uniforms",
           "check_pairable", "make_regulariser"]


def donsker_varadhan(t_joint: torch.Tensor, t_marginal: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``mean(T_joint) - log mean(exp T_marginal)`` over the True entries of ``mask``.

    Shapes: ``t_joint, t_marginal, mask (B, K)`` -> scalar.
    """
    n = mask.sum().to(t_joint.dtype)
    mean_joint = t_joint.masked_fill(~mask, 0.0).sum() / n
    log_mean_exp = torch.logsumexp(t_marginal.masked_fill(~mask, -math.inf).flatten(), dim=0) - n.log()
    return mean_joint - log_mean_exp


def check_pairable(mask: torch.Tensor) -> None:
    """Raise :class:`DataError` unless every group of ``mask (B, K)`` can be paired: at least 2
    groups, each with at least 2 observations."""
    sizes = mask.sum(dim=1)
    if mask.shape[0] < 2:
        raise DataError("the mutual-information regulariser needs at least 2 groups per batch")
    if bool((sizes < 2).any()):
        raise DataError("the mutual-information regulariser needs groups of at least 2 observations; "
                        f"this batch has {int((sizes < 2).sum())} smaller group(s)")


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
    (uniform); ``other_group`` = a group j != i (uniform); ``other_group_obs`` = an observation of
    group j (uniform). Needs groups of at least 2 observations and at least 2 groups. The uniforms
    are drawn at observed positions only, so padding changes nothing.
    """
    from .model import uniform_pair_noise  # local import: model.py imports this module

    check_pairable(mask)
    return pairs_from_uniforms(mask, uniform_pair_noise(mask, generator=generator))


def _mlp(in_dim: int, out_dim: int, hidden: int, depth: int) -> nn.Sequential:
    from .model import MLP  # local import: model.py imports this module

    return MLP(in_dim, out_dim, hidden, depth)


class NemethCritic(nn.Module):
    """Single-observation critic ``T(x, v)`` of Nemeth (2020); paper eq. (2)."""

    def __init__(self, x_dim: int, v_dim: int, hidden: int = 32, depth: int = 3):
        super().__init__()
        self.critic = _mlp(x_dim + v_dim, 1, hidden, depth)

    sample_pairs = staticmethod(sample_pairs)

    def forward(self, x: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                pairs: Dict[str, torch.Tensor]) -> torch.Tensor:
        """DV estimate of ``I_r(x, v)`` for ``x (B, K, x_dim)``, codes ``v (B, K, v_dim)``."""
        v_same = torch.gather(v, 1, pairs["same_group_other"][..., None].expand(-1, -1, v.shape[-1]))
        v_other = v[pairs["other_group"], pairs["other_group_obs"]]  # (B, K, v_dim)
        t_joint = self.critic(torch.cat([x, v_same], dim=-1)).squeeze(-1)
        t_marginal = self.critic(torch.cat([x, v_other], dim=-1)).squeeze(-1)
        return donsker_varadhan(t_joint, t_marginal, mask)


class GroupwiseCritic(nn.Module):
    """Group-wise critic ``T(x_-k, v_k) = T_beta(v_k, mean_{l != k} T_alpha(x_l))``; paper eq. (3)."""

    def __init__(self, x_dim: int, v_dim: int, hidden: int = 32, depth: int = 3):
        super().__init__()
        self.element = _mlp(x_dim, hidden, hidden, depth)  # T_alpha
        self.critic = _mlp(hidden + v_dim, 1, hidden, depth)  # T_beta

    sample_pairs = staticmethod(sample_pairs)

    def forward(self, x: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                pairs: Dict[str, torch.Tensor]) -> torch.Tensor:
        """DV estimate of ``I_r(x_-k, v_k)`` for ``x (B, K, x_dim)``, codes ``v (B, K, v_dim)``."""
        h = self.element(x) * mask[..., None].to(x.dtype)  # (B, K, H), zero at padding
        others = mask.sum(dim=1).to(x.dtype) - 1.0  # K_i - 1
        leave_one_out = (h.sum(dim=1, keepdim=True) - h) / others[:, None, None]  # (B, K, H)
        v_other = v[pairs["other_group"], pairs["other_group_obs"]]
        t_joint = self.critic(torch.cat([leave_one_out, v], dim=-1)).squeeze(-1)
        t_marginal = self.critic(torch.cat([leave_one_out, v_other], dim=-1)).squeeze(-1)
        return donsker_varadhan(t_joint, t_marginal, mask)


def make_regulariser(cfg) -> nn.Module | None:
    """The critic named by ``cfg.regulariser`` (None for ``'none'``)."""
    if cfg.regulariser == "none":
        return None
    cls = {"nemeth": NemethCritic, "groupwise": GroupwiseCritic}[cfg.regulariser]
    return cls(cfg.x_dim, cfg.v_dim, cfg.hidden, cfg.depth)
