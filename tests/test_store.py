"""cxvae.store: the committed study folders read whole through it, `cxvae check` and setting
damaged rows aside, atomic writes."""
import errno
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from cxvae import store
from cxvae.cli import main
from cxvae.config import ConfigError, make_run_config
from cxvae.metrics import METRICS
from studies import run_row, write_study

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = [ROOT / "results" / "paper", *sorted((ROOT / "results" / "strength").glob("c=*")),
             ROOT / "results" / "gap" / "mirror-long", *sorted((ROOT / "results" / "gap" / "budget").glob("epochs=*"))]


@pytest.mark.parametrize("folder", COMMITTED, ids=lambda f: str(f.relative_to(ROOT)))
def test_every_committed_study_folder_reads_whole_and_unchanged(folder):
    """No damaged row (the legacy columns' empty cells are runs their trained probe scored), the
    oracle sound, and the table exactly what pandas reads from the file: no number moves."""
    found = store.inspect_runs(folder)
    assert found.damaged == [] and len(found.runs) > 0, [str(d) for d in found.damaged[:3]]
    pd.testing.assert_frame_equal(found.runs, pd.read_csv(folder / "runs.csv"))
    study = store.read_study(folder)
    pd.testing.assert_frame_equal(study["oracle"], pd.read_csv(folder / "oracle.csv"))
    assert found.scale == {"paper": "paper", "strength": "study", "gap": "paper"}[folder.relative_to(ROOT).parts[1]]
    health = store.check(folder)
    assert health.healthy and health.no_curve == [], health.problems


def test_the_committed_folders_are_all_there():
    assert len(COMMITTED) == 11 and all((f / "runs.csv").exists() for f in COMMITTED)


def _damaged_folder(tmp_path) -> Path:
    """ML-VAE seeds 0-3, with three damaged rows: seed 1 again, seed 4 at another scale, and a
    last row (seed 5) cut off mid-number."""
    folder = write_study(tmp_path / "study", [("ml-vae", 0), ("ml-vae", 1), ("ml-vae", 2), ("ml-vae", 1),
                                              run_row("ml-vae", 4, scale="study"), ("ml-vae", 3), ("ml-vae", 5)])
    text = (folder / "runs.csv").read_text()
    (folder / "runs.csv").write_text(text[:text.rindex("\n", 0, -1) + len("\nml-vae,5,smoke,1.0")])
    return folder


def test_check_reports_a_healthy_folder_and_exits_0(tmp_path, capsys):
    folder = write_study(tmp_path / "study", [("ml-vae", 0), ("ml-vae", 1), ("gvae", 3)])
    (folder / "histories" / "gvae-3.csv").unlink()
    assert main(["check", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "3 sound run(s) at smoke scale" in out and "ml-vae: 2 seed(s) (0-1)" in out and "gvae: 1 seed(s) (3)" in out
    assert "1 run(s) without a curve (histories/): gvae-3" in out and "3 run(s) without a model" in out
    assert "oracle: none" in out and out.strip().endswith("healthy")


def test_check_names_each_damaged_row_exits_1_and_sets_them_aside(tmp_path, capsys):
    """Each damaged row with why; --set-aside moves them to runs.damaged.csv (appending, one header)
    and keeps every sound row byte for byte; the folder is then healthy and its runs unfinished."""
    folder = _damaged_folder(tmp_path)
    lines = (folder / "runs.csv").read_text().split("\n")
    assert main(["check", str(folder)]) == 1
    out = capsys.readouterr().out
    assert "4 sound run(s) at smoke scale" in out and "ml-vae: 4 seed(s) (0-3)" in out
    assert "3 damaged row(s)" in out and out.strip().endswith("damaged")
    assert "line 5 (ml-vae seed 1): a second row of ml-vae seed 1 (the first is line 3)" in out
    assert "line 6 (ml-vae seed 4): scale 'study', where the folder's is 'smoke' (config.json)" in out
    assert "line 8 (ml-vae seed 5): " in out and "cut off" in out
    assert store.finished(folder) == {("ml-vae", s) for s in range(4)}

    assert main(["check", str(folder), "--set-aside"]) == 0
    assert "moved 3 damaged row(s)" in capsys.readouterr().out
    assert (folder / "runs.csv").read_text().split("\n") == [lines[i] for i in (0, 1, 2, 3, 6)] + [""]
    aside = (folder / "runs.damaged.csv").read_text().splitlines()
    assert aside == [lines[0], lines[4], lines[5], lines[7]]
    assert main(["check", str(folder)]) == 0
    capsys.readouterr()

    with open(folder / "runs.csv", "a") as handle:  # damaged again: appended under the one header
        handle.write(lines[1] + "\n")
    assert [str(d) for d in store.set_aside(folder)] == [
        "line 6 (ml-vae seed 0): a second row of ml-vae seed 0 (the first is line 2)"]
    assert (folder / "runs.damaged.csv").read_text().splitlines() == aside + [lines[1]]


def test_check_of_a_foreign_table_or_a_damaged_oracle_exits_1(tmp_path, capsys):
    folder = tmp_path / "foreign"
    folder.mkdir()
    (folder / "runs.csv").write_text("preset,seed,holdout_nll\nml-vae,0,1.0\n")
    assert main(["check", str(folder)]) == 1
    assert "lacks the column(s) scale" in capsys.readouterr().out
    folder = write_study(tmp_path / "study", [("ml-vae", 0)])
    (folder / "oracle.csv").write_text("preset,seed,scale," + ",".join(METRICS) + "\noracle,-1,smoke,x"
                                       + ",1" * (len(METRICS) - 1) + "\n")
    assert main(["check", str(folder)]) == 1
    assert "recon_mse is 'x', not a finite number" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="oracle.csv is damaged"):
        store.read_study(folder)
    assert main(["check", str(tmp_path / "nowhere")]) == 2


def test_damaged_rows_are_named_not_counted_and_set_aside(tmp_path):
    """Each damaged row with why; set_aside moves them to runs.damaged.csv (appending, one header)
    and keeps every sound row byte for byte; the folder then reads whole, those runs unfinished."""
    folder = _damaged_folder(tmp_path)
    lines = (folder / "runs.csv").read_text().split("\n")
    found = store.inspect_runs(folder)
    assert [str(d) for d in found.damaged] == [
        "line 5 (ml-vae seed 1): a second row of ml-vae seed 1 (the first is line 3)",
        "line 6 (ml-vae seed 4): scale 'study', where the folder's is 'smoke' (config.json)",
        f"line 8 (ml-vae seed 5): {len(lines[7].split(','))} fields where the header has {len(lines[0].split(','))} (cut off, or not a run)"]
    assert found.lines == [lines[i] for i in (1, 2, 3, 6)] and store.finished(folder) == {("ml-vae", s) for s in range(4)}
    with pytest.raises(ConfigError, match="has 3 damaged row"):
        store.read_study(folder)
    assert len(store.set_aside(folder)) == 3
    assert (folder / "runs.csv").read_text().split("\n") == [lines[i] for i in (0, 1, 2, 3, 6)] + [""]
    aside = (folder / "runs.damaged.csv").read_text().splitlines()
    assert aside == [lines[0], lines[4], lines[5], lines[7]]
    assert list(store.read_study(folder)["runs"].seed) == [0, 1, 2, 3] and store.set_aside(folder) == []


def test_a_run_is_saved_once_with_the_rows_before_it_kept_as_written(tmp_path):
    """save_run leaves earlier rows byte for byte (floats written with other digits elsewhere stay
    so), gives the row the folder's columns (an absent legacy one empty), and saves a run that is
    there already not again."""
    folder = write_study(tmp_path / "study", [run_row("ml-vae", 0, u_probe_mlp_mse=0.5)])
    pd.read_csv(folder / "runs.csv").to_csv(folder / "runs.csv", index=False, float_format="%.10g")
    before = (folder / "runs.csv").read_text()
    result = SimpleNamespace(config=make_run_config("ml-vae", seed=1), model=torch.nn.Linear(2, 1), seconds=3.0,
                             history=pd.DataFrame(dict(epoch=[1], train_neg_elbo=[2.0], valid_neg_elbo=[2.1])))
    metrics = {m: 0.25 for m in METRICS}
    prov = dict(version="0.1.0", git_commit="abc", torch="2.0", python="3.11", device="cpu (x86_64)")
    assert store.save_run(folder, result, metrics, 0.5, prov)
    after = (folder / "runs.csv").read_text()
    assert after.startswith(before) and (folder / "models" / "ml-vae-1.pt").exists()
    runs = store.read_runs(folder)
    assert list(runs.seed) == [0, 1] and runs.u_probe_mlp_mse.isna().tolist() == [False, True]
    assert runs.holdout_nll.tolist()[1] == 0.25 and runs.train_seconds.tolist()[1] == 3.0
    assert not store.save_run(folder, result, metrics, 0.5, prov)
    assert (folder / "runs.csv").read_text() == after


def test_config_json_is_written_atomically(tmp_path, monkeypatch):
    """A write that fails (here the rename) leaves config.json as it was and no temporary file."""
    path = tmp_path / "config.json"
    store.write_json(path, dict(a=1))
    assert json.loads(path.read_text()) == dict(a=1)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(ConfigError, match="cannot write .*config.json: No space left on device"):
        store.write_json(path, dict(a=2))
    assert json.loads(path.read_text()) == dict(a=1) and sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_a_config_json_that_is_not_json_is_one_line(tmp_path):
    folder = write_study(tmp_path / "study", [("ml-vae", 0)])
    (folder / "config.json").write_text("{ cut off")
    with pytest.raises(ConfigError, match="config.json: not JSON") as err:
        store.read_study(folder)
    assert "\n" not in str(err.value)


def test_a_runs_files_lie_where_the_layout_says(tmp_path):
    """models/<preset>-<seed>.pt and histories/<preset>-<seed>.csv, written once in cxvae.store;
    kept_seeds reads the seeds of one preset back (a longer preset name with the same prefix is
    another preset), sorted as numbers."""
    assert store.model_path(tmp_path, "cxvae", 3) == tmp_path / "models" / "cxvae-3.pt"
    assert store.history_path(str(tmp_path), "ml-vae", 0) == tmp_path / "histories" / "ml-vae-0.csv"
    (tmp_path / "models").mkdir()
    for preset, seed in [("cxvae", 10), ("cxvae", 2), ("cxvae-average", 1), ("gvae", 0)]:
        store.model_path(tmp_path, preset, seed).touch()
    assert store.kept_seeds(tmp_path, "cxvae") == [2, 10]
    assert store.kept_seeds(tmp_path, "ml-vae") == []


def test_rows_written_meanwhile_by_another_process_are_not_written_again(tmp_path):
    """append_rows_once: one seed's rows go in together; the same (preset, seed) a second time
    (another process that found the seed not done when it started) writes nothing; rows that do
    not share the key are refused."""
    path = tmp_path / "decomposition.csv"
    rows = [dict(preset="cxvae", seed=3, step=step, nll=1.0) for step in ("model", "oracle")]
    assert store.append_rows_once(path, rows, ("preset", "seed"))
    assert not store.append_rows_once(path, [dict(r, nll=9.0) for r in rows], ("preset", "seed"))
    assert store.append_rows_once(path, [dict(rows[0], seed=4)], ("preset", "seed"))
    table = pd.read_csv(path)
    assert table.seed.tolist() == [3, 3, 4] and table.nll.tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="share"):
        store.append_rows_once(path, [rows[0], dict(rows[0], seed=5)], ("preset", "seed"))


def test_a_table_splits_row_written_meanwhile_is_not_written_twice(tmp_path, monkeypatch):
    """Two table-splits runs into one folder: a row that the other run appended while this one
    was fitting stays once (before, both appended it)."""
    from cxvae import table_bench

    out, real_fit = tmp_path / "splits", table_bench._fit_model

    def fit_while_another_process_finishes_first(name, train, spec, covariates, seed):
        model = real_fit(name, train, spec, covariates, seed)
        store.append_rows_once(out / "runs.csv", [dict(table="orthodont", split="within", split_seed=seed,
                                                       model=name, nll=-1.0)], table_bench.ROW_KEY)
        return model

    monkeypatch.setattr(table_bench, "_fit_model", fit_while_another_process_finishes_first)
    runs = table_bench.run_repeated(out, ["orthodont"], ["MixedLM"], [0], ["within"], progress=False)
    assert len(runs) == 1 and runs.nll.tolist() == [-1.0]
