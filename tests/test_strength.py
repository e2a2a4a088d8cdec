"""The group-strength family of exam-scores data sets (paper section 6.3, :mod:`cxvae.strength`):
the generator, the true decoder and the exact oracle at every strength c, and the study runner."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import logsumexp

from cxvae.config import ConfigError, make_run_config
from cxvae.data import DataError, exam_scores_mean, from_groups, generate_exam_scores, true_translation
from cxvae.model import GroupVAE
from cxvae.oracle import ExamScoresOracle
from cxvae.strength import (first_strength_all_better, read_strength_study, single_observation_floor, strength_folder,
                            strength_study, summarise_strength, translation_checks)

TINY = dict(data=dict(n_train=256, n_valid=64, n_holdout=96), train=dict(epochs=1, batch_size=64),
            eval=dict(iwae_samples=4, probe_steps=20, probe_max_train=128))


def test_strength_one_is_the_papers_data_and_the_draws_do_not_depend_on_it():
    paper = generate_exam_scores(50, seed=3)
    assert torch.equal(generate_exam_scores(50, seed=3, group_strength=1.0).x, paper.x)
    for c in (0.0, 0.4, 2.0):
        d = generate_exam_scores(50, seed=3, group_strength=c)
        assert torch.equal(d.u, paper.u) and torch.equal(d.v, paper.v) and d.group_strength == c
        mu, sigma = d.u[:, None, :1], d.u[:, None, 1:]
        noise = paper.x - (2 * mu + (sigma ** 2 + 1) * paper.v)  # the same eps at every c
        expected = (c * 2 * mu + (c * sigma ** 2 + 1) * d.v + noise) * d.mask[..., None]
        torch.testing.assert_close(d.x, expected, rtol=1e-5, atol=1e-5)


def test_strength_zero_leaves_one_observation_enough_to_read_its_instance_factor():
    d = generate_exam_scores(200, seed=4, group_strength=0.0, noise_std=0.1)
    err = (d.x - d.v)[d.mask]
    assert float(err.std()) == pytest.approx(0.1, rel=0.05)  # x = v + eps: only the noise is left


def test_group_strength_travels_with_the_data_and_drives_the_true_translation():
    d = generate_exam_scores(20, seed=5, group_strength=0.5)
    for moved in (d.subset(torch.arange(5)), d.to("cpu"), d.pad_to(d.x.shape[1] + 3)):
        assert moved.group_strength == 0.5
    target = torch.roll(torch.arange(20), 1)
    expected = exam_scores_mean(d.u[target][:, None, :], d.v, 0.5) * d.mask[..., None]
    torch.testing.assert_close(true_translation(d, target), expected)


def test_bad_strengths_and_mismatched_configs_are_refused():
    with pytest.raises(DataError, match="group_strength"):
        generate_exam_scores(5, group_strength=-1.0)
    with pytest.raises(DataError, match="group_strength"):
        generate_exam_scores(5, group_strength=float("nan"))
    with pytest.raises(ValueError, match="group_strength"):
        ExamScoresOracle(group_strength=-0.5)
    cfg = make_run_config("cxvae", data=dict(group_strength=0.25))
    assert cfg.model.group_strength == 0.25  # the true decoder follows the data
    with pytest.raises(ConfigError, match="group_strength"):
        make_run_config("cxvae", data=dict(group_strength=0.25), model=dict(group_strength=1.0))
    assert make_run_config("cxvae", data=dict(group_strength=0.25), model=dict(decoder="mlp", group_strength=1.0))


def test_the_true_decoder_uses_the_strength():
    cfg = make_run_config("cxvae", data=dict(group_strength=0.3)).model
    model = GroupVAE(cfg)
    u, v = torch.randn(4, 2), torch.randn(4, 6, 1)
    mean, _ = model.decode(u, v)
    torch.testing.assert_close(mean, exam_scores_mean(u[:, None, :], v, 0.3))


def _brute_force_2d(x, noise_std, c, n_mu=1801, n_sigma=1601, mu_max=9.0, sigma_max=7.0):
    """log p(x), E[mu], E[|sigma|], E[v_k] of one group on a 2-D grid over (mu, sigma)
    (per-observation likelihoods N(x_k; 2 c mu, a^2 + s^2), a = c sigma^2 + 1)."""
    mu = np.linspace(-mu_max, mu_max, n_mu)[:, None]
    sigma = np.linspace(-sigma_max, sigma_max, n_sigma)[None, :]
    a = c * sigma ** 2 + 1
    var = a ** 2 + noise_std ** 2
    log_joint = -0.5 * (mu ** 2 + sigma ** 2) - math.log(2 * math.pi) + np.zeros_like(mu * sigma)
    for xk in x:
        log_joint = log_joint - 0.5 * np.log(2 * np.pi * var) - (xk - 2 * c * mu) ** 2 / (2 * var)
    simpson = np.where(np.arange(n_sigma) % 2 == 1, 4.0, 2.0) / 3
    simpson[[0, -1]] = 1 / 3
    trapezoid = np.ones(n_mu)
    trapezoid[[0, -1]] = 0.5
    log_terms = (log_joint + np.log(trapezoid[:, None] * simpson[None, :])
                 + math.log((2 * mu_max / (n_mu - 1)) * (2 * sigma_max / (n_sigma - 1))))
    log_p = logsumexp(log_terms)
    w = np.exp(log_terms - log_p)
    v_mean = [np.sum(w * a * (xk - 2 * c * mu) / var) for xk in x]
    return log_p, np.sum(w * mu), np.sum(w * np.abs(sigma)), np.array(v_mean)


@pytest.mark.parametrize("c", [0.0, 0.5, 1.5])
def test_the_oracle_matches_a_brute_force_integral_at_every_strength(c):
    rng = np.random.default_rng(7)
    groups = [2 * c * rng.normal() + (c * rng.normal() ** 2 + 1) * rng.normal(size=k) + 0.3 * rng.normal(size=k)
              for k in (1, 4, 9)]
    oracle = ExamScoresOracle(0.3, group_strength=c)
    data = from_groups(groups)
    lm, pu = oracle.log_marginal(data), oracle.posterior_u(data)
    v_mean, _ = oracle.posterior_v(data)
    for i, x in enumerate(groups):
        log_p, mu_m, sig_m, v_m = _brute_force_2d(x, 0.3, c)
        assert lm[i].item() == pytest.approx(log_p, rel=1e-6, abs=1e-6)
        assert pu["mu_mean"][i].item() == pytest.approx(mu_m, abs=1e-6)
        assert pu["abs_sigma_mean"][i].item() == pytest.approx(sig_m, abs=1e-6)
        np.testing.assert_allclose(v_mean[i, :len(x), 0].numpy(), v_m, atol=1e-6)


def test_at_strength_zero_the_oracle_knows_nothing_about_the_group():
    """c = 0: the group factors do not touch the data, so their posterior is the prior."""
    d = generate_exam_scores(30, seed=8, group_strength=0.0)
    pu = ExamScoresOracle(0.1, group_strength=0.0).posterior_u(d)
    torch.testing.assert_close(pu["mu_mean"], torch.zeros(30, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(pu["mu_var"], torch.ones(30, dtype=torch.float64), atol=1e-9, rtol=0)
    assert pu["abs_sigma_mean"].sub(math.sqrt(2 / math.pi)).abs().max() < 1e-6  # E|sigma| under N(0, 1)


def test_strength_study_writes_one_resumable_sweep_and_oracle_per_setting(tmp_path):
    out = tmp_path / "strength"
    table = strength_study([0.0, 1.0], ["gvae"], [0, 1], scale="smoke", out=out, device="cpu", stack=2,
                           progress=False, overrides=TINY)
    assert (strength_folder(out, 0.0) / "runs.csv").exists() and (strength_folder(out, 1.0) / "oracle.csv").exists()
    assert sorted(table.group_strength.unique()) == [0.0, 1.0]
    assert set(table.preset) == {"gvae", "oracle"} and len(table) == 2 * (2 + 1)
    summary = summarise_strength(table, metrics=["translation_mse", "u_probe_mse"])
    assert set(summary.columns) >= {"group_strength", "preset", "metric", "median", "lo", "hi", "n_seeds"}
    assert len(summary) == 2 * 2 * 2
    # the oracle at c = 0 cannot beat predicting the mean of the group factors
    oracle_u = summary.query("preset == 'oracle' and metric == 'u_probe_mse'").set_index("group_strength")["median"]
    assert oracle_u[0.0] > 2 * oracle_u[1.0]
    again = strength_study([0.0, 1.0], ["gvae"], [0, 1], scale="smoke", out=out, device="cpu", stack=2,
                           progress=False, overrides=TINY)
    assert len(again) == len(table)  # nothing retrained
    with pytest.raises(FileNotFoundError, match="cxvae strength"):
        read_strength_study(tmp_path / "empty")


def _summary(cells):
    """A hand-made summarise_strength table of translation_mse: {(c, preset): (median, lo, hi)}."""
    rows = [dict(group_strength=c, preset=p, metric="translation_mse", better="lower",
                 n_seeds=0 if p == "oracle" else 10, median=m, lo=lo, hi=hi) for (c, p), (m, lo, hi) in cells.items()]
    return pd.DataFrame(rows)


def test_translation_checks_and_the_first_winning_strength_on_known_tables():
    """A textbook confounding story passes all nine checks; a model that wins everywhere fails the
    c = 0 check; the first strength from which CxVAE wins is found."""
    story = {}
    for c, base, cx in ((0.0, (1.0, 0.9, 1.1), (1.0, 0.9, 1.1)), (0.5, (3.0, 2.9, 3.1), (1.2, 1.1, 1.3)),
                        (1.0, (9.0, 8.0, 10.0), (2.0, 1.8, 2.2))):
        story.update({(c, b): base for b in ("ml-vae", "gvae", "gvae-ad")})
        story[(c, "cxvae")], story[(c, "oracle")] = cx, (0.5, 0.5, 0.5)
    checks = translation_checks(_summary(story))
    assert checks.to_numpy().all() and checks.shape == (3, 3)
    assert first_strength_all_better(_summary(story)) == 0.5
    always = {**story, (0.0, "cxvae"): (0.5, 0.45, 0.55)}
    checks = translation_checks(_summary(always))
    assert not checks["CxVAE not better at c = 0"].any() and checks["CxVAE better at c = 1"].all()
    assert first_strength_all_better(_summary(always)) == 0.0
    never = {**story, (1.0, "cxvae"): (9.0, 8.0, 10.0), (0.5, "cxvae"): (3.0, 2.9, 3.1)}
    assert first_strength_all_better(_summary(never)) is None
    with pytest.raises(ValueError, match="strengths 0 and 1"):
        translation_checks(_summary({k: v for k, v in story.items() if k[0] != 1.0}))


def test_the_single_observation_floor_rises_with_the_strength():
    floors = [single_observation_floor(c, n_groups=4000) for c in (0.0, 0.5, 1.0)]
    assert floors[0] == pytest.approx(0.01 / 1.01, rel=1e-6)  # v from v + eps: s^2 / (1 + s^2), exactly
    assert floors[0] < floors[1] < floors[2] < 1.0


def test_the_single_observation_floor_is_the_error_of_the_best_single_score_guess():
    """Independent check: the mean squared error of E[v | x_k] over 60,000 fresh draws (standard
    error 0.0035) agrees with the averaged posterior variance, at the paper's c = 1."""
    single = generate_exam_scores(60_000, mean_extra_size=0.0, min_size=1, seed=7)
    v_mean, _ = ExamScoresOracle(0.1).posterior_v(single)
    squared_error = float(((v_mean[:, 0, 0] - single.v[:, 0, 0].double()) ** 2).mean())
    assert single_observation_floor(1.0) == pytest.approx(squared_error, abs=0.015)


def test_budget_verdicts_count_each_verdict_at_both_budgets():
    """Per metric: CxVAE's verdicts against the baselines at the study's c = 0 and c = 1 and at the
    paper's budget, counted ('better 2/3, worse 1/3'), with CxVAE's median beside them."""
    from cxvae.strength import budget_verdicts

    study = {}
    for c, cx in ((0.0, (1.2, 1.1, 1.3)), (1.0, (2.0, 1.9, 2.1))):
        study.update({(c, "ml-vae"): (1.0, 0.9, 1.05), (c, "gvae"): (3.0, 2.9, 3.1), (c, "gvae-ad"): (2.0, 1.8, 2.2)})
        study[(c, "cxvae")], study[(c, "oracle")] = cx, (0.5, 0.5, 0.5)
    paper = _summary({(1.0, p): v for p, v in [("ml-vae", (5.0, 4.9, 5.1)), ("gvae", (5.0, 4.9, 5.1)),
                                                ("gvae-ad", (5.0, 4.9, 5.1)), ("cxvae", (1.0, 0.9, 1.1))]})
    table = budget_verdicts(_summary(study), paper.drop(columns="group_strength"), ["translation_mse"])
    row = table.loc["translation_mse"]
    assert row["study scale, c = 0"] == "better 2/3, worse 1/3"
    assert row["study scale, c = 1"] == "better 1/3, overlap 1/3, worse 1/3"
    assert row["paper scale, c = 1"] == "better 3/3"
    assert row["study scale, c = 1: cxvae"] == 2.0 and row["paper scale, c = 1: cxvae"] == 1.0
