"""Tests of the exact exam-scores oracle against independent computations.

The references below never use the oracle's sufficient-statistic / closed-form-in-mu shortcut:
a brute-force 2-D trapezoid over (mu, sigma) of per-observation likelihoods, and importance
sampling from the prior that integrates the instance factors v explicitly.
"""
import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from cxvae.data import GroupedData, from_groups, generate_exam_scores, translation_targets, true_translation
from cxvae.oracle import ExamScoresOracle


def _groups(sizes, noise_std, seed):
    """A few groups of the given sizes drawn from the true model, as (data, list of numpy arrays)."""
    rng = np.random.default_rng(seed)
    groups = []
    for k in sizes:
        mu, sigma = rng.normal(size=2)
        groups.append(2 * mu + (sigma ** 2 + 1) * rng.normal(size=k) + noise_std * rng.normal(size=k))
    return from_groups(groups), groups


def _brute_force_2d(x, noise_std, n_mu=1801, n_sigma=1601, mu_max=9.0, sigma_max=7.0):
    """log p(x), E[mu], E[|sigma|], E[v_k] and E[2mu + a v_k] on a 2-D grid over (mu, sigma) in a
    wide box (trapezoid in mu, Simpson in sigma, whose panels meet at the kink of |sigma| at 0),
    multiplying per-observation likelihoods N(x_k; 2mu, a^2 + s^2)."""
    mu = np.linspace(-mu_max, mu_max, n_mu)[:, None]
    sigma = np.linspace(-sigma_max, sigma_max, n_sigma)[None, :]
    a = sigma ** 2 + 1
    var = a ** 2 + noise_std ** 2
    log_joint = -0.5 * (mu ** 2 + sigma ** 2) - math.log(2 * math.pi) + np.zeros_like(mu * sigma)
    for xk in x:
        log_joint = log_joint - 0.5 * np.log(2 * np.pi * var) - (xk - 2 * mu) ** 2 / (2 * var)
    assert (n_sigma - 1) % 4 == 0  # an even number of Simpson panels on each side of 0
    simpson = np.where(np.arange(n_sigma) % 2 == 1, 4.0, 2.0) / 3
    simpson[[0, -1]] = 1 / 3
    trapezoid = np.ones(n_mu)
    trapezoid[[0, -1]] = 0.5
    quad = trapezoid[:, None] * simpson[None, :]
    log_terms = log_joint + np.log(quad) + math.log((2 * mu_max / (n_mu - 1)) * (2 * sigma_max / (n_sigma - 1)))
    log_p = logsumexp(log_terms)
    w = np.exp(log_terms - log_p)
    v_mean = [np.sum(w * a * (xk - 2 * mu) / var) for xk in x]  # E[v_k | x_k, mu, sigma] averaged
    recon = [np.sum(w * (2 * mu + a ** 2 * (xk - 2 * mu) / var)) for xk in x]
    return log_p, np.sum(w * mu), np.sum(w * np.abs(sigma)), np.array(v_mean), np.array(recon)


def _prior_importance(x, noise_std, n, seed):
    """Samples of (mu, |sigma|, v_0) from the prior with weights prod_k N(x_k; 2mu + a v_k, s^2):
    every latent, v included, is integrated by Monte Carlo."""
    rng = np.random.default_rng(seed)
    mu, sigma = rng.normal(size=n), rng.normal(size=n)
    a = sigma ** 2 + 1
    log_w = np.zeros(n)
    v0 = None
    for xk in x:
        v = rng.normal(size=n)
        v0 = v if v0 is None else v0
        log_w += -0.5 * math.log(2 * math.pi * noise_std ** 2) - (xk - 2 * mu - a * v) ** 2 / (2 * noise_std ** 2)
    return np.exp(log_w), mu, np.abs(sigma), v0


def test_log_marginal_and_moments_match_brute_force_2d_integral():
    for noise_std in (0.1, 0.5):
        data, groups = _groups([1, 3, 10], noise_std, seed=1)
        oracle = ExamScoresOracle(noise_std)
        lm = oracle.log_marginal(data)
        pu = oracle.posterior_u(data)
        v_mean, _ = oracle.posterior_v(data)
        recon = oracle.reconstruction(data)
        for i, x in enumerate(groups):
            log_p, mu_m, sig_m, v_m, rec = _brute_force_2d(x, noise_std)
            assert abs(lm[i].item() - log_p) < 1e-6 * max(1.0, abs(log_p))
            assert abs(pu["mu_mean"][i].item() - mu_m) < 1e-6
            assert abs(pu["abs_sigma_mean"][i].item() - sig_m) < 1e-6
            np.testing.assert_allclose(v_mean[i, :len(x), 0].numpy(), v_m, atol=1e-6)
            np.testing.assert_allclose(recon[i, :len(x), 0].numpy(), rec, atol=1e-6)


def test_log_marginal_and_moments_match_importance_sampling_over_all_latents():
    noise_std, n = 0.5, 400_000
    data, groups = _groups([1, 2, 3], noise_std, seed=2)
    oracle = ExamScoresOracle(noise_std)
    lm, pu = oracle.log_marginal(data), oracle.posterior_u(data)
    v_mean, _ = oracle.posterior_v(data)
    for i, x in enumerate(groups):
        w, mu, abs_sigma, v0 = _prior_importance(x, noise_std, n, seed=10 + i)
        p_hat, p_se = w.mean(), w.std() / math.sqrt(n)
        assert p_se / p_hat < 0.05, "importance sampler too noisy to be a meaningful check"
        assert abs(p_hat - math.exp(lm[i].item())) < 5 * p_se
        for f, exact in ((mu, pu["mu_mean"][i]), (abs_sigma, pu["abs_sigma_mean"][i]), (v0, v_mean[i, 0, 0])):
            est = np.sum(w * f) / w.sum()
            se = math.sqrt(np.sum(w ** 2 * (f - est) ** 2)) / w.sum()  # delta-method standard error
            assert abs(est - exact.item()) < 5 * se + 1e-9


def test_posterior_samples_match_posterior_moments():
    data = generate_exam_scores(6, mean_extra_size=2, min_size=1, noise_std=0.1, seed=3)
    oracle = ExamScoresOracle(0.1)
    u, v = oracle.sample_posterior(data, 20_000, torch.Generator().manual_seed(0))
    assert u.shape == (20_000, 6, 2) and v.shape == (20_000,) + tuple(data.x.shape)
    pu = oracle.posterior_u(data)
    v_mean, v_var = oracle.posterior_v(data)
    recon = oracle.reconstruction(data)
    sample_recon = (2 * u[..., :1, None] + (u[..., 1:2, None] ** 2 + 1) * v) * data.mask[..., None]
    checks = [(u[..., 0], pu["mu_mean"]), (u[..., 1].abs(), pu["abs_sigma_mean"]), (u[..., 1] ** 2 + 1, pu["a_mean"]),
              (v, v_mean), ((v - v_mean) ** 2, v_var), (sample_recon, recon)]
    for samples, exact in checks:
        se = samples.std(0) / math.sqrt(samples.shape[0]) + 1e-12
        assert bool(((samples.mean(0) - exact).abs() <= 5 * se).all())
    assert torch.allclose(u[..., 1].mean(0), torch.zeros(6, dtype=torch.float64), atol=0.1)  # random sign
    grid, log_w = oracle.sigma_posterior(data)
    assert grid.shape == (2001,) and log_w.shape == (6, 2001)
    assert torch.allclose(log_w.exp().sum(1), torch.ones(6, dtype=torch.float64), atol=1e-12)


def test_grid_refinement_and_range_do_not_matter():
    data = generate_exam_scores(200, noise_std=0.1, seed=4)
    ref = ExamScoresOracle(0.1, n_sigma=4001, sigma_max=10.0)
    for other in (ExamScoresOracle(0.1, n_sigma=501), ExamScoresOracle(0.1, sigma_max=10.0)):
        assert (other.log_marginal(data) - ref.log_marginal(data)).abs().max() < 1e-10
        for key, value in other.posterior_u(data).items():  # |sigma| converges as O(h^4), the rest faster
            assert (value - ref.posterior_u(data)[key]).abs().max() < 1e-7, key


def test_padding_and_input_dtype_do_not_change_outputs():
    data = generate_exam_scores(50, noise_std=0.1, seed=5)
    padded = data.pad_to(data.x.shape[1] + 5)
    oracle, k = ExamScoresOracle(0.1), data.x.shape[1]
    target = translation_targets(50, seed=0)
    close = lambda a, b: torch.allclose(a, b, rtol=1e-12, atol=1e-12)  # noqa: E731
    assert close(oracle.log_marginal(data), oracle.log_marginal(padded))
    for key, value in oracle.posterior_u(data).items():
        assert close(value, oracle.posterior_u(padded)[key])
    for a, b in zip(oracle.posterior_v(data), oracle.posterior_v(padded)):
        assert close(a, b[:, :k]) and not b[:, k:].any()
    assert close(oracle.reconstruction(data), oracle.reconstruction(padded)[:, :k])
    assert close(oracle.translation(data, target), oracle.translation(padded, target)[:, :k])
    as64 = GroupedData(data.x.double(), data.mask)
    assert oracle.log_marginal(as64).dtype == torch.float64
    assert close(oracle.log_marginal(as64), oracle.log_marginal(data))


def test_large_groups_recover_the_true_factors():
    data = generate_exam_scores(20, mean_extra_size=500, noise_std=0.01, seed=6)
    oracle = ExamScoresOracle(0.01)
    pu = oracle.posterior_u(data)
    assert ((pu["mu_mean"] - data.u[:, 0].double()).abs() < 5 * pu["mu_var"].sqrt()).all()
    assert ((pu["mu_mean"] - data.u[:, 0].double()).abs() < 0.3).all()
    assert ((pu["abs_sigma_mean"] - data.u[:, 1].abs().double()).abs() < 0.3).all()
    v_mean, _ = oracle.posterior_v(data)
    err = (v_mean - data.v.double())[data.mask]
    assert err.pow(2).mean().sqrt() < 0.1


def test_calibration_reconstruction_and_translation_on_generated_data():
    noise_std = 0.1
    data = generate_exam_scores(2000, noise_std=noise_std, seed=7)
    oracle = ExamScoresOracle(noise_std)
    pu = oracle.posterior_u(data)
    # Bayes posterior: the mean squared error of the posterior mean equals the mean posterior variance
    for err2, var in (((pu["mu_mean"] - data.u[:, 0].double()) ** 2, pu["mu_var"]),
                      ((pu["abs_sigma_mean"] - data.u[:, 1].abs().double()) ** 2, pu["abs_sigma_var"])):
        assert abs(err2.mean() / var.mean() - 1) < 0.15
    v_mean, v_var = oracle.posterior_v(data)
    m = data.mask
    assert abs(((v_mean - data.v.double()) ** 2)[m].mean() / v_var[m].mean() - 1) < 0.15
    x = data.x.double()
    assert ((oracle.reconstruction(data) - x) ** 2)[m].mean() <= noise_std ** 2
    target = translation_targets(2000, seed=1)
    truth = true_translation(data, target).double()
    mse = lambda pred: ((pred - truth) ** 2)[m].mean()  # noqa: E731
    oracle_mse = mse(oracle.translation(data, target))
    assert oracle_mse < mse(torch.zeros_like(truth)) and oracle_mse < mse(x)
    group_code, instance_code = oracle.codes(data)
    assert group_code.shape == (2000, 2) and torch.equal(instance_code, v_mean)
    assert math.isfinite(oracle.nll_per_observation(data))


def test_readable_errors():
    for bad in (0.0, -0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="noise_std"):
            ExamScoresOracle(bad)
    data = generate_exam_scores(4, seed=0)
    two_dims = GroupedData(torch.cat([data.x, data.x], dim=-1), data.mask)
    with pytest.raises(ValueError, match="scalar observations"):
        ExamScoresOracle().log_marginal(two_dims)
    with pytest.raises(ValueError, match="target"):
        ExamScoresOracle().translation(data, torch.tensor([1, 0]))


def test_instance_predictions_improve_with_information_and_match_their_definitions():
    """From one score, the whole group, and the true u: the errors fall in that order; the first
    equals the oracle on one-observation groups, the last its closed form."""
    from cxvae.oracle import instance_predictions

    data = generate_exam_scores(200, seed=8)
    pred = instance_predictions(data)
    mse = {k: float(((v - pred["true v"]) ** 2).mean()) for k, v in pred.items() if k != "true v"}
    assert mse["x_ik alone"] > mse["whole group x_i"] > mse["x_ik and the true u_i"]
    assert all(v.shape == (data.n_observations,) for v in pred.values())
    i, k = 3, 2
    x, (mu, sigma) = float(data.x[i, k, 0]), data.u[i].double().tolist()
    flat = int(data.mask[:i].sum()) + k
    a = sigma ** 2 + 1
    assert float(pred["x_ik and the true u_i"][flat]) == pytest.approx(a * (x - 2 * mu) / (a ** 2 + 0.01), rel=1e-6)
