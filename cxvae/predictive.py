"""The predictive distribution of a trained Group VAE: new rows of known groups and of new groups.

* :func:`predictive_log_density`: ``log p(x*_ik | x_i)`` of held-out rows given the observed rows
  of their group (the plug-in variational predictive, by importance sampling);
* :func:`predictive_moments`: the mean and variance of a new row's predictive, given a group-code
  posterior (or the prior, for a new group).

:class:`cxvae.tabular.GroupModel` speaks through these in a table's own units.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from .config import require_int
from .data import DataError, GroupedData
from .model import GroupVAE, gaussian_log_prob, sample_normal

__all__ = ["predictive_log_density", "predictive_moments"]


@torch.no_grad()
def predictive_log_density(model: GroupVAE, context: GroupedData, query: GroupedData,
                           n_u: int = 64, n_v: int = 32, seed: int = 0) -> torch.Tensor:
    """``log p(x*_ik | x_i)`` of each query observation given the observed rows of its group.

    ``p(x* | x_i) = E_{p(u | x_i)} p(x* | u)`` with the variational posterior ``q(u | x_i)`` in
    place of ``p(u | x_i)`` (the plug-in *variational predictive*), and ``p(x* | u) = E_{p(v)}
    p(x* | u, v)`` estimated by importance sampling with the instance encoder as proposal::

        log 1/S sum_s [ 1/T sum_t p(x* | u_s, v_st) p(v_st) / q(v_st | x*, u_s) ],
        u_s ~ q(u | x_i),  v_st ~ q(v | x*, u_s)  (or q(v | x*) for an unconditional encoder).

    Each query observation is scored on its own (not jointly with the other held-out rows of its
    group), the counterpart of a mixed model's per-row conditional predictive density.

    Args:
        context: ``N`` groups, the observed rows (``x (N, K, d)``).
        query: the same ``N`` groups' held-out rows (``x (N, K*, d)``; a group may have none).
    Returns:
        ``(N, K*)`` log densities (0 at padded positions), in the units of ``x``.
    Raises:
        ConfigError: ``n_u`` or ``n_v`` below 1.
        DataError: context and query of different groups, or not of the model's ``x_dim``.
    """
    n_u, n_v = require_int("n_u", n_u, 1), require_int("n_v", n_v, 1)
    for name, d in (("context", context), ("query", query)):
        if not isinstance(d, GroupedData):
            raise DataError(f"{name} must be a GroupedData (e.g. from cxvae.data.from_groups); got {type(d).__name__}")
    if context.n_groups != query.n_groups:
        raise DataError(f"context and query must hold the same groups; got {context.n_groups} and {query.n_groups}")
    for name, d in (("context", context), ("query", query)):
        if d.x_dim != model.cfg.x_dim + model.cfg.c_dim:
            raise DataError(f"the model takes observations of x_dim={model.cfg.x_dim}"
                            + (f" plus {model.cfg.c_dim} covariate(s)" if model.cfg.c_dim else "")
                            + f"; {name} has x_dim={d.x_dim}")
    device = next(model.parameters()).device
    ctx, qry = context.to(device), query.to(device)
    # only the observed query positions are decoded (a padded (N, K*) layout can hold 10x more
    # slots than rows); the noise is still drawn in that layout, so the draws are those of decoding every slot
    group, _ = qry.mask.nonzero(as_tuple=True)  # (R,) the group of each query row, row-major
    rows = qry.x[qry.mask][:, None, :]  # (R, 1, d): each row on its own
    values, covariates = model.split_covariates(rows.expand(n_v, *rows.shape).flatten(0, 1))  # (T R, 1, .)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        u_mean, u_var = model.group_encoder(ctx.x, ctx.mask)  # q(u | x_i), (N, u_dim)
        per_u = []
        for _ in range(n_u):
            u = sample_normal(u_mean, u_var)[group]  # one u_s per group, (R, u_dim)
            v_mean, v_var = model.instance_encoder(rows, u)  # (R, 1, v_dim)
            eps = torch.randn(n_v, *qry.mask.shape, v_mean.shape[-1], dtype=v_mean.dtype, device=device)
            v = sample_normal(v_mean, v_var, eps=eps[:, qry.mask][:, :, None, :])  # (T, R, 1, v_dim)
            x_mean, x_var = model.decode(u.repeat(n_v, 1), v.flatten(0, 1), covariates)
            log_w = (gaussian_log_prob(values, x_mean, x_var).view(n_v, -1)
                     + gaussian_log_prob(v, torch.zeros_like(v), torch.ones_like(v)).view(n_v, -1)  # log p(v)
                     - gaussian_log_prob(v, v_mean, v_var).view(n_v, -1))  # - log q(v | x*, u)
            per_u.append(torch.logsumexp(log_w, dim=0) - math.log(n_v))  # log p^(x* | u_s), (R,)
        log_p = torch.logsumexp(torch.stack(per_u), dim=0) - math.log(n_u)
    out = torch.zeros(qry.mask.shape, dtype=log_p.dtype, device=device)
    out[qry.mask] = log_p
    return out.cpu()


@torch.no_grad()
def predictive_moments(model: GroupVAE, u_mean: torch.Tensor, u_var: torch.Tensor,
                       covariates: Optional[torch.Tensor] = None, n_samples: int = 2000, seed: int = 0,
                       chunk: int = 256) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of a new observation's predictive ``p(x* | u ~ N(u_mean, u_var))``.

    ``x* ~ p(x | u, v, c)`` with ``u ~ N(u_mean, diag u_var)`` (a group's ``q(u | x_i)``, or
    the prior ``N(0, I)`` for a group with no observed rows), ``v ~ p(v) = N(0, I)`` (the new
    row's own instance code is unknown) and its covariates ``c``. By the law of total variance::

        E[x*] = E_{u,v} f(u, v, c),   Var[x*] = E_{u,v} s^2(u, v, c) + Var_{u,v} f(u, v, c),

    estimated from ``n_samples`` joint draws of (u, v) per row; the Monte-Carlo relative error
    of the variance's second part is about ``sqrt(2 / n_samples)``.

    Args:
        u_mean, u_var: ``(R, u_dim)``, one group-code posterior per predicted row.
        covariates: ``(R, c_dim)`` for a model with covariates (standardised like its training data).
        chunk: rows per batch (memory ``chunk x n_samples`` decoder evaluations).
    Returns:
        ``(mean, var)``, each ``(R, x_dim)``, on the model's (standardised) scale, on the CPU.
    """
    n_samples = require_int("n_samples", n_samples, 2)
    device = next(model.parameters()).device
    means, variances = [], []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, len(u_mean), chunk):
            m, s = u_mean[start:start + chunk].to(device), u_var[start:start + chunk].to(device)
            u = sample_normal(m, s, eps=torch.randn(n_samples, *m.shape, dtype=m.dtype, device=device))  # (S, R, u_dim)
            v = torch.randn(n_samples * len(m), 1, model.cfg.v_dim, dtype=m.dtype, device=device)
            c = None if covariates is None else \
                covariates[start:start + chunk].to(device)[None, :, None, :].expand(n_samples, -1, 1, -1).flatten(0, 1)
            f, s2 = model.decode(u.flatten(0, 1), v, c)  # (S R, 1, x_dim)
            f, s2 = f.view(n_samples, len(m), -1).double(), s2.view(n_samples, len(m), -1).double()
            means.append(f.mean(0))
            variances.append(s2.mean(0) + f.var(0))
    return torch.cat(means).cpu(), torch.cat(variances).cpu()
