"""Tests of the mixed-model baseline against known answers: recovery of simulated group effects,
BLUPs and their conditional variances against the closed form, the predictive densities against
scipy, and the code-comparison statistics on cases with known values."""
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cxvae.config import ConfigError
from cxvae.data import DataError
from cxvae.mixed import compare_presets, fit_mixed, multiple_correlation, rank_agreement, summarise_runs
from cxvae.frames import load_exam


def _simulate(n_groups=40, size=25, intercept_sd=0.8, slope_sd=0.0, noise_sd=0.5, seed=0):
    """y_ik = 1 + 0.5 t_ik + b_i + c_i t_ik + e_ik, with the true effects returned."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), size)
    b, c = rng.normal(0, intercept_sd, n_groups), rng.normal(0, slope_sd, n_groups)
    t = rng.normal(size=len(g))
    y = 1.0 + 0.5 * t + b[g] + c[g] * t + rng.normal(0, noise_sd, len(g))
    return pd.DataFrame({"group": g, "t": t, "y": y}), b, c


def test_random_intercepts_are_recovered():
    df, b, _ = _simulate()
    m = fit_mixed(df, "y", "group", covariates=["t"])
    assert m.beta == pytest.approx([1.0, 0.5], abs=0.3)
    assert m.psi[0, 0] == pytest.approx(0.64, rel=0.4) and m.residual_var == pytest.approx(0.25, rel=0.15)
    blup = m.group_effects()["intercept"].to_numpy()
    assert np.corrcoef(blup, b)[0, 1] > 0.97


def test_random_slopes_are_recovered():
    df, b, c = _simulate(n_groups=60, size=40, slope_sd=0.6, seed=1)
    m = fit_mixed(df, "y", "group", covariates=["t"], random_slopes=["t"])
    effects = m.group_effects()
    assert list(effects.columns) == ["intercept", "t"]
    assert np.corrcoef(effects["t"], c)[0, 1] > 0.9 and np.corrcoef(effects["intercept"], b)[0, 1] > 0.95


def test_blups_and_predictive_match_the_closed_form():
    """b_hat = (Z'Z/s^2 + Psi^-1)^-1 Z'(y - X beta)/s^2, Var = (Z'Z/s^2 + Psi^-1)^-1, and the
    conditional predictive of a held-out row is N(x'beta + z'b_hat, s^2 + z'Var z)."""
    df, _, _ = _simulate(n_groups=15, size=12, slope_sd=0.4, seed=2)
    held = df.groupby("group").tail(2)
    train = df.drop(held.index)
    m = fit_mixed(train, "y", "group", covariates=["t"], random_slopes=["t"])
    beta, psi, s2 = m.beta, m.psi, m.residual_var
    effects, covs = m.group_effects(), m.group_effect_covariances()
    for g, rows in train.groupby("group"):
        x = np.column_stack([np.ones(len(rows)), rows.t])
        precision = x.T @ x / s2 + np.linalg.inv(psi)
        var = np.linalg.inv(precision)
        np.testing.assert_allclose(effects.loc[g], var @ x.T @ (rows.y - x @ beta) / s2, rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(covs[g], var, rtol=1e-5, atol=1e-10)
    row = held.iloc[0]
    z = np.array([1.0, row.t])
    mean, var = z @ beta + z @ effects.loc[row.group].to_numpy(), s2 + z @ covs[row.group] @ z
    assert m.log_density(held).iloc[0] == pytest.approx(stats.norm.logpdf(row.y, mean, np.sqrt(var)))
    assert m.holdout_nll(held) == pytest.approx(-m.log_density(held).mean())
    resid = m.residuals()
    fitted = train.y - resid
    assert resid.index.equals(train.index) and np.isfinite(fitted).all()


def test_new_groups_are_scored_jointly_with_the_marginal():
    df, _, _ = _simulate(n_groups=20, size=10, seed=3)
    train, new = df[df.group < 18], df[df.group >= 18]
    m = fit_mixed(train, "y", "group", covariates=["t"])
    rows = new[new.group == 18]
    x = np.column_stack([np.ones(len(rows)), rows.t])
    cov = m.psi[0, 0] * np.ones((len(rows), len(rows))) + m.residual_var * np.eye(len(rows))
    expected = stats.multivariate_normal.logpdf(rows.y, x @ m.beta, cov) / len(rows)
    np.testing.assert_allclose(m.log_density(rows), expected)
    with pytest.raises(DataError, match="not fitted on"):
        m.residuals(rows)


def test_translation_keeps_the_residual_and_swaps_the_effect():
    df, _, _ = _simulate(n_groups=10, size=8, seed=4)
    m = fit_mixed(df, "y", "group", covariates=["t"])
    np.testing.assert_allclose(m.translate(3, 3), df.y[df.group == 3])
    shift = m.group_effects().loc[5, "intercept"] - m.group_effects().loc[3, "intercept"]
    np.testing.assert_allclose(m.translate(3, 5), df.y[df.group == 3] + shift)
    with pytest.raises(DataError, match="not one the mixed model was fitted on"):
        m.translate(3, 99)


def test_exam_random_intercept_fits_without_warnings():
    """L-BFGS alone stalls at the zero-variance boundary on Exam; the fallback order does not,
    and the estimates match lme4's (school variance 0.169, residual 0.848; Goldstein 1993)."""
    exam = load_exam()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = fit_mixed(exam, "normexam", "school")
    assert m.fit_warnings == []
    assert m.psi[0, 0] == pytest.approx(0.1717, abs=0.01) and m.residual_var == pytest.approx(0.8478, abs=0.01)


@pytest.mark.parametrize("kwargs, match", [
    (dict(covariates=[], random_slopes=["t"]), "must also be fixed-effect covariates"),
    (dict(covariates=["age"]), "not in the table"),
])
def test_fit_errors(kwargs, match):
    df, _, _ = _simulate(n_groups=5, size=5)
    with pytest.raises(DataError, match=match):
        fit_mixed(df, "y", "group", **kwargs)
    with pytest.raises(DataError, match="at least 2 groups"):
        fit_mixed(df[df.group == 0], "y", "group")


def test_multiple_correlation_known_answers():
    rng = np.random.default_rng(0)
    x = rng.normal(size=500)
    y = 2.0 * x + rng.normal(size=500)
    r = multiple_correlation(y, x, n_boot=200)
    assert r["r"] == pytest.approx(abs(np.corrcoef(x, y)[0, 1]))
    assert r["low"] < r["r"] < r["high"]
    flipped = multiple_correlation(y, np.column_stack([-3 * x + 1, rng.normal(size=500) * 0]), n_boot=50)
    assert flipped["r"] == pytest.approx(r["r"]), "invariant to sign and linear maps of the code"
    clusters = np.repeat(np.arange(50), 10)
    wide = multiple_correlation(y, x, clusters=clusters, n_boot=200)
    assert wide["r"] == r["r"] and wide["low"] <= wide["r"] <= wide["high"]


def test_rank_agreement_known_answers():
    rng = np.random.default_rng(1)
    a = rng.normal(size=200)
    same = rank_agreement(-a, a, n_boot=50)
    assert same["rho"] == pytest.approx(1.0) and same["top_overlap"] == 1.0
    unrelated = rank_agreement(rng.normal(size=200), a, n_boot=50)
    assert unrelated["rho"] < 0.3


def test_adjusted_removes_the_group_effect():
    df, _, _ = _simulate(n_groups=10, size=8, slope_sd=0.3, seed=5)
    m = fit_mixed(df, "y", "group", covariates=["t"], random_slopes=["t"])
    effects = m.group_effects().loc[df.group]
    expected = df.y - effects["intercept"].to_numpy() - effects["t"].to_numpy() * df.t
    np.testing.assert_allclose(m.adjusted(), expected)


@pytest.mark.parametrize("presets, seeds", [(["gvae"], [0]), ("gvae", 0)])
def test_compare_presets_tiny(presets, seeds):
    """One preset, one seed, two epochs: the runs table has every score and its interval. A single
    preset name or seed is one run, not one per letter."""
    df, _, _ = _simulate(n_groups=12, size=8, seed=6)
    held = df.groupby("group").tail(2)
    train = df.drop(held.index)
    m = fit_mixed(train, "y", "group")
    models, runs = compare_presets(train, held, group="group", values="y", presets=presets, seeds=seeds,
                                   epochs=2, effects=m.group_effects(), residuals=m.residuals().to_frame(),
                                   n_boot=20)
    assert list(models) == [("gvae", 0)] and len(runs) == 1
    row = runs.iloc[0]
    assert np.isfinite(row.holdout_nll) and row.v_information >= 0
    for name in ("u~intercept", "v~residual"):
        assert 0 <= row[f"{name} low"] <= row[f"{name} high"] <= 1 and 0 <= row[name] <= 1
    assert summarise_runs(runs, ["holdout_nll"]).index.tolist() == ["gvae"]
    assert summarise_runs(runs, "holdout_nll").equals(summarise_runs(runs, ["holdout_nll"]))


def test_single_column_names_are_one_column():
    """A covariate or random slope named by one string is that column, not its letters."""
    df, _, _ = _simulate(n_groups=8, size=6, slope_sd=0.3, seed=7)
    listed = fit_mixed(df, "y", "group", ["t"], ["t"])
    named = fit_mixed(df, "y", "group", "t", "t")
    assert named.covariates == ["t"] and named.random_slopes == ["t"]
    np.testing.assert_array_equal(named.beta, listed.beta)
    with pytest.raises(DataError, match=r"column\(s\) \['age'\] not in the table"):
        fit_mixed(df, "y", "group", "age")
    with pytest.raises(DataError, match="the response 'y' cannot also be a covariate"):
        fit_mixed(df, "y", "group", "y")


def test_model_input_errors():
    df, _, _ = _simulate(n_groups=6, size=5, seed=8)
    m = fit_mixed(df[df.group < 5], "y", "group", covariates=["t"])
    with pytest.raises(DataError, match="no rows"):
        m.holdout_nll(df.iloc[:0])
    with pytest.raises(DataError, match="not fitted on"):
        m.adjusted(df)  # group 5 is new: was a KeyError
    with pytest.raises(DataError, match="not in the table"):
        m.translate(0, 1, df=df[["y", "t"]])


@pytest.mark.parametrize("call, error, match", [
    (lambda: multiple_correlation(np.zeros(5), np.zeros((4, 2))), DataError, "got 4 codes and 5 targets"),
    (lambda: multiple_correlation([], []), DataError, "got 0 codes and 0 targets"),
    (lambda: multiple_correlation(np.arange(5.0), np.arange(5.0), clusters=[0, 1]), DataError,
     "one cluster per row; got 2 for 5 rows"),
    (lambda: multiple_correlation(np.arange(5.0), np.arange(5.0), n_boot=0), ConfigError, "n_boot must be"),
    (lambda: multiple_correlation(np.arange(5.0), np.arange(5.0), level=95), ConfigError, "level must be"),
    (lambda: multiple_correlation([1.0, np.nan, 2.0], np.arange(3.0)), DataError,
     "must be finite; 1 target value\\(s\\) and 0 code row\\(s\\)"),
    (lambda: multiple_correlation(np.arange(3.0), [[0.0, 1.0], [np.inf, 0.0], [np.nan, np.nan]]), DataError,
     "0 target value\\(s\\) and 2 code row\\(s\\) are NaN or infinite"),
    (lambda: rank_agreement(np.arange(5.0), np.arange(4.0)), DataError, "got 5 and 4 values"),
    (lambda: rank_agreement([0.0, np.nan, 1.0], np.arange(3.0)), DataError, "must be finite to rank them; 1 and 0"),
    (lambda: rank_agreement(np.arange(5.0), np.arange(5.0), top=0.0), ConfigError, "top must be"),
])
def test_comparison_input_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_compare_presets_checks_the_reference_tables_before_training():
    df, _, _ = _simulate(n_groups=6, size=5, seed=9)
    m = fit_mixed(df, "y", "group")
    kwargs = dict(group="group", values="y", presets="gvae", seeds=0, epochs=1, n_boot=2)
    with pytest.raises(DataError, match=r"effects has no row for 1 training group\(s\), e.g. \[5\]"):
        compare_presets(df, df, effects=m.group_effects().drop(5), residuals=m.residuals().to_frame(), **kwargs)
    with pytest.raises(DataError, match=r"residuals has no row for 2 training row\(s\)"):
        compare_presets(df, df, effects=m.group_effects(), residuals=m.residuals().iloc[2:].to_frame(), **kwargs)


def test_a_fit_whose_group_effects_cannot_be_predicted_is_refused_in_one_line(monkeypatch):
    """statsmodels cannot predict the group effects of a fit with a singular random-effects
    covariance (it raises deep inside its results); every optimiser failing so is a DataError
    that says what to do, not that traceback."""
    from cxvae import mixed

    rng = np.random.default_rng(0)
    df = pd.DataFrame(dict(g=np.repeat(np.arange(20), 5).astype(str), t=rng.normal(size=100), y=rng.normal(size=100)))
    monkeypatch.setattr(mixed, "_has_group_effects", lambda result: False)
    with pytest.raises(DataError, match="singular random-effects covariance; drop a random slope"):
        mixed.fit_mixed(df, "y", "g", covariates=["t"], random_slopes=["t"])
