"""GPBoost baselines: the same held-out likelihood as MixedLM's, checked against it on data where
both models are right, and the boosted fixed effect against a curve a line cannot follow."""
import numpy as np
import pandas as pd
import pytest

from cxvae.classical import BoostConfig, fit_gpboost
from cxvae.config import ConfigError
from cxvae.data import DataError
from cxvae.mixed import fit_mixed
from cxvae.frames import split_by_group, split_within_groups

pytest.importorskip("gpboost")


def _random_intercepts(n_groups=300, per_group=6, curve=lambda t: 1.0 + 0.5 * t, seed=0):
    """y = curve(t) + b_i + e, b_i ~ N(0, 1), e ~ N(0, 0.5^2), t ~ U(0, 3)."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), per_group)
    t = rng.uniform(0, 3, size=len(g))
    y = curve(t) + rng.normal(size=n_groups)[g] + rng.normal(scale=0.5, size=len(g))
    return pd.DataFrame(dict(g=g.astype(str), t=t, y=y))


@pytest.mark.parametrize("split", ["within", "new"])
def test_the_linear_mixed_model_agrees_with_mixedlm_where_both_are_right(split):
    """Independent computations: statsmodels' REML and GPBoost's maximum likelihood of the same
    random-intercept model give held-out NLLs within 0.01 nats a row (300 groups; the two
    variance estimators differ by O(1/n)), for rows of known groups and for new groups alike."""
    df = _random_intercepts()
    train, hold = (split_within_groups(df, "g", holdout=0.2, seed=1) if split == "within"
                   else split_by_group(df, "g", holdout=0.2, seed=1))
    ours = fit_gpboost(train, "y", "g", ["t"], kind="lmm").holdout_nll(hold)
    theirs = fit_mixed(train, "y", "g", covariates=["t"]).holdout_nll(hold)
    assert ours == pytest.approx(theirs, abs=0.01)


def test_a_new_groups_rows_are_scored_jointly():
    """Known answer: for one new group of K rows the score is the joint Gaussian log density
    under the fitted variances divided by K, not the sum of K marginal ones (which ignores the
    shared group effect and so scores correlated rows too low)."""
    df = _random_intercepts(n_groups=200)
    train, hold = split_by_group(df, "g", holdout=0.1, seed=2)
    model = fit_gpboost(train, "y", "g", ["t"], kind="lmm")
    joint = model.log_density(hold)
    one = hold[hold.g == hold.g.iloc[0]]
    mean, var = model.predictive(one)
    independent = float(np.mean(-0.5 * np.log(2 * np.pi * var) - 0.5 * (one.y - mean) ** 2 / var))
    assert joint[one.index].nunique() == 1  # one value shared by the group's rows
    assert float(joint[one.index].iloc[0]) != pytest.approx(independent, abs=1e-3)
    assert np.isfinite(joint).all()


def test_boosted_trees_follow_a_curve_that_a_line_cannot():
    """A step-shaped mean: the boosted fixed effect scores held-out rows of known groups better
    than the linear one."""
    df = _random_intercepts(n_groups=150, curve=lambda t: 2.0 * (t > 1.5))
    train, hold = split_within_groups(df, "g", holdout=0.2, seed=3)
    boosted = fit_gpboost(train, "y", "g", ["t"], kind="boosted", boost=BoostConfig(max_rounds=100))
    linear = fit_gpboost(train, "y", "g", ["t"], kind="lmm")
    assert boosted.rounds >= 1
    assert boosted.holdout_nll(hold) < linear.holdout_nll(hold) - 0.05


def test_bad_input_is_one_clear_line():
    df = _random_intercepts(n_groups=20)
    with pytest.raises(ConfigError, match="unknown GPBoost kind"):
        fit_gpboost(df, "y", "g", ["t"], kind="forest")
    with pytest.raises(DataError, match="random slope"):
        fit_gpboost(df, "y", "g", [], random_slopes=["t"])
    with pytest.raises(DataError):
        fit_gpboost(df, "missing", "g", ["t"])
    with pytest.raises(DataError, match="at least 2 groups"):
        fit_gpboost(df[df.g == "0"], "y", "g", ["t"])


def test_repeated_splits_resume_and_pair_by_split(tmp_path, capsys):
    """cxvae table-splits on one table, two classical models, two splits: one row per (split kind,
    split seed, model) with the mean and median row NLL, and a line (not an empty table) saying that
    without a preset there is nothing to compare; a second run fits nothing; the paired
    difference is the mean over splits of the per-split differences."""
    from cxvae.cli import main
    from cxvae.table_bench import paired_differences, run_repeated

    out = tmp_path / "splits"
    assert main(["table-splits", "--tables", "orthodont", "--models", "MixedLM,GPBoost-LMM", "--splits", "0-1",
                 "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out.strip().endswith("nothing to compare")
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 2 * 2 * 2 and set(runs.split) == {"within", "new"} and runs.covariate.all()
    assert (runs.nll_median_row.notna() & runs.nll.notna()).all()
    cover = runs[["coverage_50", "coverage_80", "coverage_95"]]
    assert cover.notna().all().all() and ((cover >= 0) & (cover <= 1)).all().all()
    assert (cover.coverage_50 <= cover.coverage_80).all() and (cover.coverage_80 <= cover.coverage_95).all()
    before = (out / "runs.csv").read_text()
    run_repeated(out, ["orthodont"], ["MixedLM", "GPBoost-LMM"], [0, 1], progress=False)
    assert (out / "runs.csv").read_text() == before
    diff = paired_differences(runs, "GPBoost-LMM", ["MixedLM"]).set_index("split")
    within = runs[runs.split == "within"].pivot(index="split_seed", columns="model", values="nll")
    assert diff.loc["within", "mean"] == pytest.approx((within["GPBoost-LMM"] - within["MixedLM"]).mean())
    assert diff.loc["within", "lo"] < diff.loc["within", "mean"] < diff.loc["within", "hi"]
    assert diff.loc["within", "n_splits"] == 2


def test_best_against_best_picks_the_lowest_means_and_tests_the_interval():
    """Known answer on a hand-made table: preset b (lower mean than a) against classical C (lower
    than D); b - C = -0.1 at every split, so the interval collapses below 0: at or below."""
    from cxvae.table_bench import best_against_best

    rows = [dict(table="t", split="within", split_seed=s, model=m, nll=v, nll_median_row=v)
            for s in range(3) for m, v in [("a", 2.0 + s), ("b", 1.0 + s), ("C", 1.1 + s), ("D", 3.0)]]
    best = best_against_best(pd.DataFrame(rows), ["a", "b"], ["C", "D"]).iloc[0]
    assert (best.best_preset, best.best_classical) == ("b", "C")
    assert best["mean"] == pytest.approx(-0.1) and best.at_or_below


@pytest.mark.parametrize("name", ["MixedLM", "GPBoost-LMM"])
def test_interval_coverage_is_nominal_for_the_right_model(name):
    """On random-intercept data the linear mixed model is the true model, so its predictive
    intervals hold held-out rows at their level: 1,200 held-out rows give a binomial standard error
    of at most 1.5 points; we allow 4 (MixedLM's estimated variances add a little)."""
    from cxvae.table_bench import interval_coverage

    df = _random_intercepts(n_groups=600, per_group=10, seed=3)
    train, hold = split_within_groups(df, "g", holdout=0.2, seed=0)
    model = (fit_mixed(train, "y", "g", covariates=["t"]) if name == "MixedLM"
             else fit_gpboost(train, "y", "g", ["t"], kind="lmm"))
    cover = interval_coverage(model, hold, "y")
    assert set(cover) == {"coverage_50", "coverage_80", "coverage_95"}
    for level in (50, 80, 95):
        assert cover[f"coverage_{level}"] == pytest.approx(level / 100, abs=0.04)


def test_a_presets_row_records_its_calibrated_coverage(tmp_path):
    """A preset at its defaults in the repeated benchmark: its row has the three coverages of its
    calibrated intervals, nested by level."""
    from cxvae.table_bench import run_repeated

    runs = run_repeated(tmp_path / "splits", ["sleepstudy"], ["gvae"], [0], kinds=["within"], progress=False)
    row = runs.iloc[0]
    assert row.model == "gvae" and np.isfinite(row.nll)
    assert row.steps > 0 and row.converged in (True, False)
    assert 0 <= row.coverage_50 <= row.coverage_80 <= row.coverage_95 <= 1


def test_coverage_by_table_averages_over_the_splits_that_recorded_it():
    """Known answer: two splits record coverage, one older row has none and is left out."""
    from cxvae.table_bench import coverage_by_table

    rows = [dict(table="t", split="new", split_seed=s, model="m", coverage_50=c, coverage_80=c, coverage_95=c)
            for s, c in [(0, 0.4), (1, 0.6), (2, np.nan)]]
    out = coverage_by_table(pd.DataFrame(rows)).loc[("t", "new", "m")]
    assert out.coverage_95 == pytest.approx(0.5) and out.n_splits == 2


def test_coverage_by_table_of_a_folder_without_coverage_is_empty_but_indexed():
    """Rows written before coverage was recorded: an empty table that still has the (table,
    split, model) index, so a chapter can select on it."""
    from cxvae.table_bench import coverage_by_table

    out = coverage_by_table(pd.DataFrame(dict(table=["t"], split=["new"], split_seed=[0], model=["m"], nll=[1.0])))
    assert out.empty and out.index.names == ["table", "split", "model"]


def test_paired_differences_leave_out_a_table_the_model_was_not_run_on():
    """A model fitted on one table only: no row (and no 0-split interval) for the other."""
    from cxvae.table_bench import paired_differences

    rows = [dict(table=t, split="within", split_seed=s, model=m, nll=1.0 + s, nll_median_row=1.0)
            for t in ("a", "b") for s in range(3) for m in ("base", "other") if not (t == "b" and m == "other")]
    out = paired_differences(pd.DataFrame(rows), "other", ["base"])
    assert list(out.table) == ["a"] and out.n_splits.tolist() == [3]
