"""The bias of the plain product of posteriors, in closed form (paper section 2.2, eq. (1)).

ML-VAE (Bouchacourt et al., 2018) forms the group posterior as a product of per-observation
posteriors, ``q(u|x) ∝ prod_k q(u|x_k)``. Bayes' rule for K observations that are independent
given u says instead (eq. (1))::

    p(u | x_1..K)  ∝  p(u)^-(K-1)  prod_k p(u | x_k),

because every per-observation posterior ``p(u|x_k) ∝ p(u) p(x_k|u)`` carries its own copy of the
prior: the plain product counts the prior K times instead of once.

This module measures that error where everything is exact: the conjugate 1-D model ::

    u ~ N(0, 1),        x_k | u ~ N(u, s^2),   k = 1..K   (s = ``noise_std``).

Writing ``lam = 1 / s^2`` for the precision of one likelihood factor and ``x_sum = sum_k x_k``:

=========================  ======================  ==========================================
posterior                  precision               mean
=========================  ======================  ==========================================
per observation p(u|x_k)   ``1 + lam``             ``lam x_k / (1 + lam) = x_k / (1 + s^2)``
exact p(u|x_1..K)          ``1 + K lam``           ``lam x_sum / (1 + K lam)``
plain product (ML-VAE)     ``K (1 + lam)``         ``lam x_sum / (K (1 + lam))``
corrected product, eq. (1) ``K (1 + lam) - (K-1)``  ``lam x_sum / (1 + K lam)`` (= exact)
=========================  ======================  ==========================================

The plain product is the exact posterior of a model whose prior is ``N(0, 1/K)``: a prior that
tightens as fast as the evidence accumulates, so its pull towards 0 never fades (see
:func:`product_bias_table` for the numbers). The learned counterpart of the corrected product is
:class:`cxvae.model.CorrectedProductGroupEncoder`.

All functions take array-likes or tensors, broadcast ``x_sum``, ``K`` and ``s`` against each other
and compute in float64.
"""
from __future__ import annotations

from typing import Iterable, Sequence, Tuple

import pandas as pd
import torch

from .model import gaussian_kl

__all__ = [
    "correction_verdicts",
    "correction_sentence",
    "observation_posterior",
    "conjugate_group_posterior",
    "plain_product_posterior",
    "corrected_product_posterior",
    "product_bias_table",
]

Tensor = torch.Tensor


def _as_float64(*values) -> Tuple[Tensor, ...]:
    """Tensors in float64, broadcast against each other."""
    return torch.broadcast_tensors(*(torch.as_tensor(v, dtype=torch.float64) for v in values))


def _check(K: Tensor, s: Tensor) -> None:
    if bool((K < 1).any()):
        raise ValueError(f"group sizes K must be at least 1; got min K = {float(K.min())}")
    if not bool((s > 0).all()) or not bool(torch.isfinite(s).all()):
        raise ValueError("noise standard deviations s must be finite and positive")


def observation_posterior(x, s) -> Tuple[Tensor, Tensor]:
    """Exact per-observation posterior ``p(u | x_k) = N(x_k / (1 + s^2), s^2 / (1 + s^2))``.

    Precision ``1 + 1/s^2`` (prior + one likelihood factor). Args broadcast; returns
    ``(mean, var)`` float64 of the broadcast shape.
    """
    x, s = _as_float64(x, s)
    _check(torch.ones_like(s), s)
    var = s ** 2 / (1.0 + s ** 2)
    return x / (1.0 + s ** 2), var


def conjugate_group_posterior(x_sum, K, s) -> Tuple[Tensor, Tensor]:
    """Exact group posterior ``p(u | x_1..K)`` of the conjugate model.

    Precision ``1 + K/s^2`` (one prior + K likelihood factors), mean
    ``(x_sum / s^2) / (1 + K/s^2)``.

    Args:
        x_sum: ``sum_k x_k``, any shape.
        K: group sizes (>= 1), broadcastable against ``x_sum``.
        s: likelihood noise standard deviations (> 0), broadcastable.
    Returns:
        ``(mean, var)``, float64 tensors of the broadcast shape.
    """
    x_sum, K, s = _as_float64(x_sum, K, s)
    _check(K, s)
    lam = 1.0 / s ** 2  # precision of one likelihood factor
    precision = 1.0 + K * lam  # prior (1) + K likelihood factors
    return lam * x_sum / precision, 1.0 / precision


def plain_product_posterior(x_sum, K, s) -> Tuple[Tensor, Tensor]:
    """Plain product of the K exact per-observation posteriors (ML-VAE, ``prod_k p(u|x_k)``).

    Precision ``K (1 + 1/s^2)`` (K priors + K likelihood factors), mean
    ``(x_sum / s^2) / (K (1 + 1/s^2))``. Shapes as in :func:`conjugate_group_posterior`.
    """
    x_sum, K, s = _as_float64(x_sum, K, s)
    _check(K, s)
    lam = 1.0 / s ** 2
    precision = K * (1.0 + lam)  # sum_k of per-observation precisions: the prior counted K times
    # precision-weighted sum of per-observation means: sum_k (1 + lam) * lam x_k / (1 + lam)
    return lam * x_sum / precision, 1.0 / precision


def corrected_product_posterior(x_sum, K, s) -> Tuple[Tensor, Tensor]:
    """Eq. (1): ``p(u)^-(K-1) prod_k p(u|x_k)``, the plain product with K-1 priors divided out.

    Dividing by the N(0, 1) prior K-1 times subtracts ``K-1`` from the precision and nothing from
    the precision-weighted mean (the prior mean is 0)::

        precision = K (1 + 1/s^2) - (K - 1) = 1 + K/s^2,   mean = (x_sum/s^2) / precision,

    which is the exact posterior, and a valid normal for every K >= 1. Shapes as in
    :func:`conjugate_group_posterior`.
    """
    x_sum, K, s = _as_float64(x_sum, K, s)
    _check(K, s)
    lam = 1.0 / s ** 2
    product_precision = K * (1.0 + lam)
    precision = product_precision - (K - 1.0)  # the q(u)^-(K-1) term of eq. (1)
    return lam * x_sum / precision, 1.0 / precision


def product_bias_table(K_values: Iterable[int] = range(1, 65),
                       noise_stds: Sequence[float] = (0.5, 1.0, 2.0)) -> pd.DataFrame:
    """How wrong the plain product is, per noise level s and group size K (all closed form).

    One row per ``(noise_std, K)``, with columns

    * ``K``, ``noise_std``;
    * ``mean_shrinkage``: plain-product mean / exact mean for the same data,
      ``(1 + K/s^2) / (K + K/s^2)`` (data independent; 1 = no bias);
    * ``mean_bias_at_u1``: ``E[plain mean - exact mean | u = 1]`` (the data are
      ``x_sum ~ N(K, K s^2)``), ``= 1/(1+s^2) - (K/s^2)/(1 + K/s^2)``; negative = towards the
      prior mean 0;
    * ``var_ratio``: plain-product variance / exact variance, also ``(1 + K/s^2) / (K + K/s^2)``
      (< 1 = over-confident);
    * ``corrected_mean_shrinkage``: corrected mean / exact mean (1),
      ``corrected_mean_error``: ``|corrected mean - exact mean|`` at ``x_sum = 1`` (and so for
      every ``|x_sum| <= 1``; 0 up to rounding), ``corrected_var_ratio``: corrected variance /
      exact variance (1);
    * ``kl_plain_to_exact``: ``E[KL(plain || exact) | u = 1]``, the Gaussian KL averaged exactly
      over ``x_sum ~ N(K, K s^2)`` (only the squared mean gap depends on the data:
      ``E[x_sum^2] = K s^2 + K^2``).

    What the numbers show. At K = 1 the two posteriors coincide (nothing to over-count). As K
    grows, ``mean_shrinkage`` and ``var_ratio`` both fall to ``1/(1 + s^2)`` (0.8, 0.5 and 0.2
    for s = 0.5, 1, 2): the plain product's bias does *not* vanish with K, it stays a fixed
    fraction ``s^2/(1 + s^2)`` of the posterior mean, so ``mean_bias_at_u1 -> -s^2/(1 + s^2)``;
    indeed ``E[plain mean | u = 1] = 1/(1 + s^2)`` for every K, while the exact mean tends to
    the true u = 1. Its variance is too small by the same factor, so the over-confidence persists
    too, and since both posteriors shrink like 1/K while the gap between their means does not,
    ``kl_plain_to_exact`` grows linearly, like ``K s^2 / (2 (1 + s^2)^2)``. The corrected product
    (eq. (1)) is exact for every K.
    """
    K = torch.as_tensor(list(K_values), dtype=torch.float64)
    s = torch.as_tensor(list(noise_stds), dtype=torch.float64)
    s, K = torch.meshgrid(s, K, indexing="ij")  # (n_s, n_K): one row per (s, K), s outermost
    s, K = s.flatten(), K.flatten()

    one = torch.ones_like(K)
    exact_mean1, exact_var = conjugate_group_posterior(one, K, s)  # means are linear in x_sum
    plain_mean1, plain_var = plain_product_posterior(one, K, s)
    corr_mean1, corr_var = corrected_product_posterior(one, K, s)
    gap_per_unit_sum = plain_mean1 - exact_mean1  # plain mean - exact mean = gap * x_sum

    # KL(N(m_p, v_p) || N(m_e, v_e)) depends on the data only through (m_p - m_e)^2 =
    # gap^2 x_sum^2, linearly: its mean over x_sum is the KL at the root-mean-square gap.
    expected_sum_sq = K * s ** 2 + K ** 2  # E[x_sum^2 | u = 1]
    rms_gap = gap_per_unit_sum * expected_sum_sq.sqrt()
    kl = gaussian_kl(rms_gap[:, None], plain_var[:, None], 0.0, exact_var[:, None])  # (n_s * n_K,)

    return pd.DataFrame(dict(
        K=K.long().numpy(),
        noise_std=s.numpy(),
        mean_shrinkage=(plain_mean1 / exact_mean1).numpy(),
        mean_bias_at_u1=(gap_per_unit_sum * K).numpy(),  # E[x_sum | u = 1] = K
        var_ratio=(plain_var / exact_var).numpy(),
        corrected_mean_shrinkage=(corr_mean1 / exact_mean1).numpy(),
        corrected_mean_error=(corr_mean1 - exact_mean1).abs().numpy(),  # at x_sum = 1
        corrected_var_ratio=(corr_var / exact_var).numpy(),
        kl_plain_to_exact=kl.numpy(),
    ))


# ---------------------------------------------------------------------------------------------
# The learned question: how far is a trained model's q(u|x) from the exact p(u|x)?
# ---------------------------------------------------------------------------------------------
def folded_normal_mean(mean: Tensor, var: Tensor) -> Tensor:
    """``E|z|`` for ``z ~ N(mean, var)``: ``sqrt(2 var / pi) exp(-mean^2 / 2 var) + mean (1 - 2 Phi(-mean / sd))``."""
    sd = var.sqrt()
    normal = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    return sd * (2.0 / torch.pi) ** 0.5 * torch.exp(-0.5 * (mean / sd) ** 2) + mean * (1 - 2 * normal.cdf(-mean / sd))


@torch.no_grad()
def group_posterior_gap(model, data, oracle=None, batch_size: int = 1024) -> pd.DataFrame:
    """Compare a trained model's group posterior ``q(u|x)`` with the exact ``p(u|x)``, per group.

    Meaningful for models with the ``true`` decoder, whose u has the meaning of (mu, sigma). sigma's
    sign is not identifiable (the exact posterior is symmetric in it), so sigma is compared through
    ``E|sigma|``. Returns one row per group with ``K``, the exact and learned posterior mean and
    variance of mu, ``mu_mean_error`` (learned - exact), ``mu_shrinkage`` (learned / exact mean,
    < 1 means pulled towards the prior mean 0), ``mu_log_var_ratio`` (log learned / exact variance,
    < 0 means over-confident), ``mu_kl`` (``KL[q(mu|x) || N(exact mean, exact var)]``, the exact
    marginal of mu replaced by its moment-matched normal) and ``abs_sigma_bias`` (learned -
    exact ``E|sigma|``).

    Args:
        model: a :class:`cxvae.model.GroupVAE` (any device).
        data: exam-scores groups (:class:`cxvae.data.GroupedData`).
        oracle: an :class:`cxvae.oracle.ExamScoresOracle` (default: the data's noise 0.1).
    """
    from .data import GroupBatchLoader
    from .oracle import ExamScoresOracle

    oracle = oracle or ExamScoresOracle()
    exact = oracle.posterior_u(data)
    device = next(model.parameters()).device
    means, variances = [], []
    for batch in GroupBatchLoader(data, batch_size, shuffle=False, bucket=False):
        batch = batch.to(device)
        mean, var = model.group_encoder(batch.x, batch.mask)
        means.append(mean.double().cpu())
        variances.append(var.double().cpu())
    q_mean, q_var = torch.cat(means), torch.cat(variances)
    qm, qv, pm, pv = q_mean[:, 0], q_var[:, 0], exact["mu_mean"], exact["mu_var"]
    kl = gaussian_kl(qm[:, None], qv[:, None], pm[:, None], pv[:, None])  # (N,): KL[q(mu|x) || N(pm, pv)]
    return pd.DataFrame(dict(
        K=data.sizes.cpu().numpy(),
        mu_exact_mean=pm.numpy(), mu_exact_var=pv.numpy(), mu_learned_mean=qm.numpy(), mu_learned_var=qv.numpy(),
        mu_mean_error=(qm - pm).numpy(), mu_log_var_ratio=torch.log(qv / pv).numpy(), mu_kl=kl.numpy(),
        abs_sigma_bias=(folded_normal_mean(q_mean[:, 1], q_var[:, 1]) - exact["abs_sigma_mean"]).numpy(),
    ))


def summarise_posterior_gap(gap: pd.DataFrame, bins: Sequence[int] = (8, 16, 20, 24, 28, 32, 100)) -> pd.DataFrame:
    """Aggregate :func:`group_posterior_gap` by group size: per K bin, the number of groups, the
    ``mu_shrinkage`` slope (least-squares slope of learned on exact posterior mean of mu through
    the origin: 1 is unbiased, < 1 is pulled towards the prior), the mean ``mu_log_var_ratio``,
    the mean ``mu_kl`` and the mean ``abs_sigma_bias``; a last row ``K = 'all'`` pools every group."""
    def row(label, g):  # one K bin's summary
        return dict(K=label, groups=len(g),
                    mu_shrinkage=float((g.mu_learned_mean * g.mu_exact_mean).sum() / (g.mu_exact_mean ** 2).sum()),
                    mu_log_var_ratio=float(g.mu_log_var_ratio.mean()), mu_kl=float(g.mu_kl.mean()),
                    abs_sigma_bias=float(g.abs_sigma_bias.mean()))

    binned = pd.cut(gap["K"], bins=list(bins), right=False)
    rows = [row(f"{iv.left}-{iv.right - 1}", g) for iv, g in gap.groupby(binned, observed=True)]
    return pd.DataFrame(rows + [row("all", gap)])


def correction_verdicts(summary: pd.DataFrame, plain: str = "ml-vae", corrected: str = "ml-vae-corrected",
                        reference: str = "cxvae") -> pd.DataFrame:
    """Does dividing out the surplus priors help a trained model? Per metric (rows), from
    :func:`cxvae.runner.summarise` output: the verdict of ``corrected`` against ``plain`` and of
    ``reference`` against ``plain`` (:func:`cxvae.runner.compare_to`), both medians, and the share
    of ``plain``'s gap to ``reference`` that the correction closes,
    ``(plain - corrected) / (plain - reference)`` (1: all of it; 0: none; negative: worse), given
    only where ``reference`` is ``better`` than ``plain`` (elsewhere there is no gap to close)."""
    from .summary import compare_to

    vs_plain = compare_to(summary, model=corrected, baselines=[plain]).set_index("metric")
    vs_ref = compare_to(summary, model=reference, baselines=[plain]).set_index("metric")
    table = vs_plain[["better", "verdict"]].rename(columns={"better": "better is", "verdict": f"corrected vs {plain}"})
    table[f"{reference} vs {plain}"] = vs_ref.verdict
    medians = summary.pivot(index="metric", columns="preset", values="median")
    table["plain"], table["corrected"] = medians[plain], medians[corrected]
    closed = (medians[plain] - medians[corrected]) / (medians[plain] - medians[reference])
    table["gap closed"] = closed.where(table[f"{reference} vs {plain}"] == "better")
    return table


def correction_sentence(verdicts: pd.DataFrame, counts: str, plain: str = "ml-vae") -> str:
    """:func:`correction_verdicts` in one paragraph: on which metrics the corrected model is
    ``better`` and ``worse`` than the plain one (medians), and the share of the gap it closes;
    ``counts`` names the seeds behind it (e.g. ``'100 (ml-vae), 100 (ml-vae-corrected)'``)."""
    said = {w: "; ".join(f"{m} ({r['corrected']:.4f} vs {r['plain']:.4f})" for m, r in
                         verdicts[verdicts[f"corrected vs {plain}"] == w].iterrows()) or "no metric"
            for w in ("better", "worse")}
    closed = "; ".join(f"{m}: {g:.2f}" for m, g in verdicts["gap closed"].dropna().items()) or "none"
    return (f"With {counts} seeds, the corrected ML-VAE is better than the plain one on "
            f"{said['better']} and worse on {said['worse']} (medians, corrected vs plain; 95% "
            f"intervals that do not overlap). Where CxVAE beats ML-VAE, the share of the gap "
            f"that the correction closes is {closed}.")
