"""The real-data study of chapter 9 (cxvae.real_data): it writes every table the chapter reads,
the tables read back as written, and a missing study says how to make it."""
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from cxvae import real_data
from cxvae.chapters import load_or_run_real_data
from cxvae.real_data import FILES, read_real_data_study, run_real_data_study

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(scores=1, intake=1, soy=1, soy_1d=1)  # one epoch of every fit: the plumbing, not the numbers

COLUMNS = {
    "mixed": ["model", "intercept", "slope", "school variance", "residual variance", "holdout_nll"],
    "mixed_nll": ["analysis", "holdout_nll"],
    "runs_scores": ["preset", "seed", "holdout_nll", "u_information", "v_information", "u~intercept",
                    "u~intercept low", "u~intercept high", "v~residual"],
    "runs_intake": ["preset", "seed", "holdout_nll", "u~intercept", "u~standLRT", "u~intake",
                    "v~exam residual", "v~intake residual"],
    "noise_scores": ["preset", "seed", "noise_std", "within_school_sd"],
    "students": ["row", "school", "standLRT", "normexam", "exam residual", "intake residual",
                 "adjusted_cxvae", "adjusted_mixed"],
    "rank_agreement": ["rho", "low", "high", "top_overlap"],
    "translation": ["what", "school", "row", "standLRT", "normexam"],
    "soy_weight_only": ["u_information", "v_information", "noise_std", "total_sd"],
    "soy_structure": ["code", "Variety", "Year", "preset", "seed", "u_information", "v_information", "v_time_R"],
    "soy_group_codes": ["preset", "seed", "Plot", "u0", "u1", "Variety", "Year"],
    "soy_instance_codes": ["preset", "seed", "row", "Plot", "Time", "Variety", "v0"],
}


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "real_data" / "smoke"
    tables = run_real_data_study(out, seeds=[0], presets=["gvae", "cxvae"], epochs=TINY, n_boot=3, progress=False)
    return out, tables


def test_study_writes_every_table_the_chapter_reads(tiny_study):
    out, tables = tiny_study
    assert sorted(p.name for p in out.iterdir()) == sorted([*FILES, "config.json"])
    for name, columns in COLUMNS.items():
        missing = set(columns) - set(tables[name].columns)
        assert not missing, f"{name}.csv lacks {missing}"
    assert list(tables["mixed"].model) == ["scores alone", "scores with intake", "intake"]
    assert list(tables["runs_scores"].preset) == ["gvae", "cxvae"] == list(tables["runs_intake"].preset)
    assert set(tables["translation"].what) == {"source school", "target school", "CxVAE", "mixed model"}
    assert set(tables["soy_structure"].code) == {"u", "mean v"}
    assert len(tables["soy_instance_codes"]) == 2 * len(real_data.load_soybean())  # gvae and cxvae, one seed
    assert tables["students"].adjusted_cxvae.notna().all() and len(tables["rank_agreement"]) == 1
    config = json.loads((out / "config.json").read_text())
    assert config["settings"]["epochs"] == TINY and config["settings"]["n_boot"] == 3
    assert {"git_commit", "torch", "device"} <= set(config["provenance"]) and "run_real_data_study" in config["command"]


def test_tables_read_back_as_written(tiny_study):
    out, tables = tiny_study
    again = read_real_data_study(out)
    for name in FILES:
        pd.testing.assert_frame_equal(again[name[:-4]], tables[name[:-4]])
    # the chapter's derived quantities come straight from the tables
    students = again["students"].set_index("row")
    train, _ = real_data.split_within_groups(real_data.load_exam(), "school", **again["config"]["settings"]["split"])
    assert students.index.equals(train.index)
    parts = dict(tuple(again["translation"].groupby("what")))
    assert len(parts["CxVAE"]) == len(parts["mixed model"]) == len(parts["source school"])


def test_load_or_run_reads_the_committed_layout(tiny_study):
    out, _ = tiny_study
    root = out.parents[1]  # .../real_data/smoke -> the results root
    study = load_or_run_real_data(results_root=root, smoke=True, seeds="0")
    assert study["folder"] == str(out) and "run_real_data_study" in study["command"]
    with pytest.raises(FileNotFoundError, match="holds seeds 0, not 0-1"):
        load_or_run_real_data(results_root=root, smoke=True, seeds="0-1")
    with pytest.raises(FileNotFoundError, match=r"no real-data study .*python -m cxvae.real_data .*--full"):
        load_or_run_real_data(results_root=root, smoke=False)


def test_missing_study_or_table_says_how_to_make_it(tiny_study, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no real-data study at .*python -m cxvae.real_data --out"):
        read_real_data_study(tmp_path / "nowhere")
    partial = tmp_path / "partial"
    shutil.copytree(tiny_study[0], partial)
    (partial / "students.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks \['students.csv'\]"):
        read_real_data_study(partial)


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown analyses"):
        run_real_data_study(tmp_path, epochs=dict(scores=1, intaek=1), progress=False)
    with pytest.raises(ValueError, match="needs the 'cxvae' preset"):
        run_real_data_study(tmp_path, presets=["gvae"], progress=False)


def test_committed_studies_are_complete():
    """What chapter 9 reads by default (and with SMOKE = False) is committed and whole."""
    for scale in ("smoke", "full"):
        folder = ROOT / "results" / "real_data" / scale
        if scale == "full" and not folder.exists():
            continue
        study = read_real_data_study(folder)
        assert study["config"]["settings"]["scale"] == scale
        assert set(study["runs_intake"].preset) == set(real_data.PRESETS)
