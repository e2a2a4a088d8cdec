"""The closed forms of cxvae.bias against brute force on a grid, and their K -> infinity limits."""
import math

import numpy as np
import pytest
import torch

from cxvae.bias import (
    conjugate_group_posterior,
    corrected_product_posterior,
    observation_posterior,
    plain_product_posterior,
    product_bias_table,
)

torch.set_num_threads(1)

GRID = torch.linspace(-12.0, 12.0, 200_001, dtype=torch.float64)  # step 1.2e-4


def normal_logpdf(u, mean, var):
    return -0.5 * (u - mean) ** 2 / var - 0.5 * math.log(2 * math.pi * var)


def grid_moments(log_density: torch.Tensor):
    """Mean and variance of the density ∝ exp(log_density) on GRID (normalised numerically)."""
    w = torch.exp(log_density - log_density.max())
    w = w / w.sum()
    mean = (w * GRID).sum()
    return float(mean), float((w * (GRID - mean) ** 2).sum())


def sample_group(K, s, seed):
    gen = np.random.default_rng(seed)
    u = gen.normal()
    return torch.as_tensor(u + s * gen.normal(size=K), dtype=torch.float64)


CASES = [(K, s) for K in (1, 2, 10) for s in (0.5, 1.0, 2.0)]


@pytest.mark.parametrize("K,s", CASES)
def test_exact_posterior_is_prior_times_likelihoods_on_grid(K, s):
    x = sample_group(K, s, seed=K)
    log_joint = normal_logpdf(GRID, 0.0, 1.0) + sum(normal_logpdf(xk, GRID, s ** 2) for xk in x)
    mean, var = conjugate_group_posterior(x.sum(), K, s)
    grid_mean, grid_var = grid_moments(log_joint)
    assert float(mean) == pytest.approx(grid_mean, abs=1e-8)
    assert float(var) == pytest.approx(grid_var, abs=1e-8)


@pytest.mark.parametrize("K,s", CASES)
def test_plain_product_is_product_of_observation_posteriors_on_grid(K, s):
    x = sample_group(K, s, seed=K + 1)
    # brute force: multiply the K exact per-observation posteriors p(u|x_k) ∝ p(u) p(x_k|u)
    log_prod = sum(normal_logpdf(GRID, 0.0, 1.0) + normal_logpdf(xk, GRID, s ** 2) for xk in x)
    mean, var = plain_product_posterior(x.sum(), K, s)
    grid_mean, grid_var = grid_moments(log_prod)
    assert float(mean) == pytest.approx(grid_mean, abs=1e-8)
    assert float(var) == pytest.approx(grid_var, abs=1e-8)
    # and the per-observation posterior itself is what the module says
    obs_mean, obs_var = observation_posterior(x[0], s)
    single = grid_moments(normal_logpdf(GRID, 0.0, 1.0) + normal_logpdf(x[0], GRID, s ** 2))
    assert (float(obs_mean), float(obs_var)) == pytest.approx(single, abs=1e-8)


@pytest.mark.parametrize("K,s", CASES)
def test_corrected_product_is_exact(K, s):
    x = sample_group(K, s, seed=K + 2)
    exact = conjugate_group_posterior(x.sum(), K, s)
    corrected = corrected_product_posterior(x.sum(), K, s)
    assert float(corrected[0]) == pytest.approx(float(exact[0]), abs=1e-8)
    assert float(corrected[1]) == pytest.approx(float(exact[1]), abs=1e-8)
    # eq. (1) on the grid: prod_k p(u|x_k) / p(u)^(K-1)
    log_eq1 = (sum(normal_logpdf(GRID, 0.0, 1.0) + normal_logpdf(xk, GRID, s ** 2) for xk in x)
               - (K - 1) * normal_logpdf(GRID, 0.0, 1.0))
    assert (float(corrected[0]), float(corrected[1])) == pytest.approx(grid_moments(log_eq1), abs=1e-8)


@pytest.mark.parametrize("K", [1, 200])
def test_corrected_product_is_a_valid_normal(K):
    mean, var = corrected_product_posterior(torch.tensor(3.0), K, torch.tensor([0.1, 1.0, 10.0]))
    assert bool((var > 0).all()) and bool(torch.isfinite(mean).all())
    torch.distributions.Normal(mean, var.sqrt(), validate_args=True)


def test_plain_product_bias_matches_closed_form_ratio():
    K = torch.arange(1, 65, dtype=torch.float64)[:, None]
    s = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)[None, :]
    x_sum = torch.tensor(-1.7, dtype=torch.float64)
    exact_mean, exact_var = conjugate_group_posterior(x_sum, K, s)
    plain_mean, plain_var = plain_product_posterior(x_sum, K, s)
    predicted = (1 + K / s ** 2) / (K + K / s ** 2)
    torch.testing.assert_close(plain_mean / exact_mean, predicted, rtol=1e-12, atol=0)
    torch.testing.assert_close(plain_var / exact_var, predicted, rtol=1e-12, atol=0)
    # K = 1: nothing is over-counted, so no bias and no over-confidence
    torch.testing.assert_close(plain_mean[0], exact_mean[0], rtol=1e-15, atol=0)
    torch.testing.assert_close(plain_var[0], exact_var[0], rtol=1e-15, atol=0)
    # K > 1: shrunk towards the prior mean 0 and over-confident
    assert bool((predicted[1:] < 1).all())


def test_limits_as_K_grows():
    s = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    limit = 1.0 / (1.0 + s ** 2)
    table = product_bias_table([10 ** 6], s.tolist())
    np.testing.assert_allclose(table["mean_shrinkage"], limit, rtol=1e-5)
    np.testing.assert_allclose(table["var_ratio"], limit, rtol=1e-5)
    np.testing.assert_allclose(table["mean_bias_at_u1"], -(s ** 2) / (1 + s ** 2), rtol=1e-5)
    # the KL grows linearly: KL / K -> s^2 / (2 (1 + s^2)^2)
    np.testing.assert_allclose(table["kl_plain_to_exact"] / 10 ** 6, s ** 2 / (2 * (1 + s ** 2) ** 2), rtol=1e-5)
    # the plain-product mean given u = 1 is 1/(1+s^2) for every K; the exact one tends to u = 1
    K = torch.tensor([1.0, 10.0, 1e6], dtype=torch.float64)[:, None]
    plain_mean, _ = plain_product_posterior(K, K, s)  # E[x_sum | u = 1] = K; means are linear in x_sum
    torch.testing.assert_close(plain_mean, limit.expand(3, 3), rtol=1e-12, atol=0)
    exact_mean, _ = conjugate_group_posterior(K[-1], K[-1], s)
    torch.testing.assert_close(exact_mean, torch.ones(3, dtype=torch.float64), rtol=1e-5, atol=0)


def test_bias_table_columns_and_values():
    table = product_bias_table(range(1, 9), (0.5, 2.0))
    assert list(table.columns) == [
        "K", "noise_std", "mean_shrinkage", "mean_bias_at_u1", "var_ratio", "corrected_mean_shrinkage",
        "corrected_mean_error", "corrected_var_ratio", "kl_plain_to_exact"]
    assert len(table) == 16 and table["K"].tolist() == list(range(1, 9)) * 2
    assert table["noise_std"].tolist() == [0.5] * 8 + [2.0] * 8
    assert table["corrected_mean_error"].max() < 1e-12
    np.testing.assert_allclose(table["corrected_var_ratio"], 1.0, rtol=1e-12)
    np.testing.assert_allclose(table["corrected_mean_shrinkage"], 1.0, rtol=1e-12)
    k1 = table[table["K"] == 1]
    np.testing.assert_allclose(k1[["mean_shrinkage", "var_ratio"]], 1.0, rtol=1e-12)
    np.testing.assert_allclose(k1[["mean_bias_at_u1", "kl_plain_to_exact"]], 0.0, atol=1e-12)
    # shrinkage s = 2, K = 8: (1 + 8/4) / (8 + 8/4) = 0.3
    assert float(table.query("K == 8 and noise_std == 2.0")["mean_shrinkage"].iloc[0]) == pytest.approx(0.3)


@pytest.mark.parametrize("K,s", [(1, 1.0), (5, 0.5), (20, 2.0)])
def test_expected_bias_and_kl_against_quadrature(K, s):
    """Averages over the data given u = 1 by Gauss-Hermite quadrature over x_sum ~ N(K, K s^2),
    with the KL from torch.distributions."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(40)
    x_sum = torch.as_tensor(K + math.sqrt(K) * s * nodes, dtype=torch.float64)
    w = torch.as_tensor(weights / weights.sum(), dtype=torch.float64)
    exact_mean, exact_var = conjugate_group_posterior(x_sum, K, s)
    plain_mean, plain_var = plain_product_posterior(x_sum, K, s)
    kl = torch.distributions.kl_divergence(
        torch.distributions.Normal(plain_mean, plain_var.sqrt()),
        torch.distributions.Normal(exact_mean, exact_var.sqrt()))
    row = product_bias_table([K], [s]).iloc[0]
    assert row["mean_bias_at_u1"] == pytest.approx(float((w * (plain_mean - exact_mean)).sum()), abs=1e-12)
    assert row["kl_plain_to_exact"] == pytest.approx(float((w * kl).sum()), rel=1e-10, abs=1e-12)


def test_rejects_bad_inputs():
    with pytest.raises(ValueError, match="at least 1"):
        plain_product_posterior(0.0, 0, 1.0)
    with pytest.raises(ValueError, match="positive"):
        conjugate_group_posterior(0.0, 3, 0.0)


def test_correction_verdicts_and_sentence_on_a_known_summary():
    """Corrected better than plain on translation (disjoint intervals) and closing half of the
    gap to CxVAE; no gap to close where CxVAE is not better; the sentence says so."""
    import pandas as pd

    from cxvae.bias import correction_sentence, correction_verdicts

    rows = []
    for preset, trans, nll in (("ml-vae", (4.0, 3.9, 4.1), (3.0, 2.9, 3.1)), ("ml-vae-corrected", (3.0, 2.9, 3.1),
                                (3.0, 2.9, 3.1)), ("cxvae", (2.0, 1.9, 2.1), (3.0, 2.95, 3.05))):
        for metric, (m, lo, hi) in (("translation_mse", trans), ("holdout_nll", nll)):
            rows.append(dict(preset=preset, metric=metric, better="lower", n_seeds=10, median=m, lo=lo, hi=hi))
    table = correction_verdicts(pd.DataFrame(rows))
    assert table.loc["translation_mse", "corrected vs ml-vae"] == "better"
    assert table.loc["translation_mse", "gap closed"] == pytest.approx(0.5)
    assert pd.isna(table.loc["holdout_nll", "gap closed"])  # CxVAE not better: no gap
    text = correction_sentence(table, "10 (ml-vae)")
    assert "better than the plain one on translation_mse (3.0000 vs 4.0000)" in text and "worse on no metric" in text
    assert "translation_mse: 0.50" in text
