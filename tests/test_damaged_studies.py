"""A study folder that cannot be silently corrupted (issue 32): each way a folder was found damaged,
and that summary, a sweep and merge no longer trust it. These tests use only names older than
cxvae.store (runner, the CLI), so that each can be run against the code before it and fail there."""
import builtins
import errno
import os
from pathlib import Path

import pandas as pd
import pytest
import torch

from cxvae import runner
from cxvae.cli import main
from cxvae.config import ConfigError
from studies import run_row, write_study

TINY = dict(data=dict(n_train=256, n_valid=64, n_holdout=96), train=dict(epochs=1, batch_size=64),
            eval=dict(iwae_samples=4, probe_steps=20, probe_max_train=128))
SWEEP = dict(scale="smoke", device="cpu", progress=False, overrides=TINY)


def _one_line_error(capsys, *words):
    """The command printed one line to stderr holding ``words``, and no traceback."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert all(w in err for w in words), err


def _cut_last_row(folder: Path, keep: int) -> str:
    """Cut the last row of ``folder/runs.csv`` after ``keep`` characters, as a crash mid-write
    would (no line end); returns what is left of it."""
    text = (folder / "runs.csv").read_text()
    head, last = text[:-1].rsplit("\n", 1)
    (folder / "runs.csv").write_text(head + "\n" + last[:keep])
    return last[:keep]


def _refused_by_summary_and_merge(folder: Path, tmp_path: Path, capsys, *words):
    """``cxvae summary`` of ``folder`` and ``cxvae merge`` of it into a sound copy each exit 2 with
    one line holding ``words``, and the copy is left as it was."""
    assert main(["summary", "--out", str(folder)]) == 2
    _one_line_error(capsys, *words)
    dest = write_study(tmp_path / "dest", [("gvae", 0)], **TINY)
    before = (dest / "runs.csv").read_text()
    assert main(["merge", str(folder), "--into", str(dest)]) == 2
    _one_line_error(capsys, *words)
    assert (dest / "runs.csv").read_text() == before
    assert sorted(p.name for p in (dest / "histories").iterdir()) == ["gvae-0.csv"]


# ---------------------------------------------------------------- a row cut off by a crash

def test_a_row_cut_mid_number_is_refused_not_read_as_a_shorter_number(tmp_path, capsys):
    """The last row cut inside its recon_mse (1.02 -> '1.0') was read as recon_mse = 1.0 and every
    other metric NaN, counted by summary and copied on by merge."""
    folder = write_study(tmp_path / "study", [("gvae", 0), ("gvae", 1), ("gvae", 2)], **TINY)
    assert _cut_last_row(folder, len("gvae,2,smoke,1.0")) == "gvae,2,smoke,1.0"
    with pytest.raises(ConfigError, match="line 4 \\(gvae seed 2\\)") as err:
        runner.read_study(folder)
    assert "\n" not in str(err.value)
    _refused_by_summary_and_merge(folder, tmp_path, capsys, "runs.csv", "line 4 (gvae seed 2)", "cut off")


def test_a_row_cut_after_its_seed_is_not_a_finished_run_and_the_sweep_runs_it_again(tmp_path, capsys):
    """'gvae,1' and nothing else was an all-NaN *finished* run: summary counted it, the sweep never
    ran it again, merge copied it on. Now the sweep moves it aside (a warning), trains seed 1
    again and the folder reads whole."""
    folder = write_study(tmp_path / "study", [("gvae", 0), ("gvae", 1)], **TINY)
    _cut_last_row(folder, len("gvae,1"))
    _refused_by_summary_and_merge(folder, tmp_path, capsys, "line 3 (gvae seed 1)")
    trained = []
    real_train = runner.train_seeds
    runner_train = lambda cfg, seeds, *a, **k: trained.extend(seeds) or real_train(cfg, seeds, *a, **k)  # noqa: E731
    with pytest.MonkeyPatch.context() as patch, pytest.warns(UserWarning, match="damaged row"):
        patch.setattr(runner, "train_seeds", runner_train)
        table = runner.sweep(["gvae"], [0, 1], out=folder, **SWEEP)
    assert trained == [1]
    assert list(zip(table.preset, table.seed)) == [("gvae", 0), ("gvae", 1)] and table.holdout_nll.notna().all()
    assert list(runner.read_study(folder)["runs"].seed) == [0, 1]
    assert (folder / "runs.damaged.csv").read_text().splitlines()[1:] == ["gvae,1"]


# ---------------------------------------------------------------- the same run written twice

def test_duplicate_rows_are_refused_by_summary_and_merge(tmp_path, capsys):
    """Two sweeps into one folder wrote every run twice: summary counted 8 seeds for 4, merge
    copied the duplicates."""
    runs = [("gvae", s) for s in range(4)]
    folder = write_study(tmp_path / "study", runs + runs, **TINY)
    _refused_by_summary_and_merge(folder, tmp_path, capsys, "a second row of gvae seed 0 (the first is line 2)")


def test_a_run_another_sweep_saved_meanwhile_is_not_written_again(tmp_path):
    """While this sweep trains seed 0, another sweep sharing the folder saves it: this one finds
    the row there when it comes to save and writes nothing (row, curve nor model)."""
    out = tmp_path / "study"
    real_train = runner.train_seeds
    other = {}

    def racing(cfg, seeds, *args, **kwargs):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(runner, "train_seeds", real_train)  # the other sweep trains for real
            runner.sweep(["gvae"], [0], out=out, **SWEEP)
        other.update(text=(out / "runs.csv").read_text(), model=(out / "models" / "gvae-0.pt").stat().st_mtime_ns)
        return real_train(cfg, seeds, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "train_seeds", racing)
        table = runner.sweep(["gvae"], [0], out=out, **SWEEP)
    assert len(table) == 1 and len(pd.read_csv(out / "runs.csv")) == 1
    assert (out / "runs.csv").read_text() == other["text"]
    assert (out / "models" / "gvae-0.pt").stat().st_mtime_ns == other["model"]


# ---------------------------------------------------------------- another scale

def test_a_sweep_at_another_scale_than_the_folders_runs_is_refused(tmp_path, capsys):
    """Without config.json, a `--scale study` sweep was appended to a smoke folder; now it is
    refused (the scale of its rows) before anything is trained or recorded."""
    folder = write_study(tmp_path / "study", [("gvae", 0), ("gvae", 1)], config=False)
    before = (folder / "runs.csv").read_text()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "train_seeds", lambda *a, **k: pytest.fail("trained at another scale"))
        assert main(["sweep", "--presets", "cxvae", "--seeds", "0", "--scale", "study", "--device", "cpu",
                     "--quiet", "--out", str(folder)]) == 2
    _one_line_error(capsys, "smoke-scale runs", "study scale")
    assert not (folder / "config.json").exists() and (folder / "runs.csv").read_text() == before


def test_rows_of_another_scale_are_refused_by_summary_and_merge(tmp_path, capsys):
    """Summary mixed a folder's smoke rows with a study-scale row appended to them."""
    folder = write_study(tmp_path / "study", [("gvae", 0), ("gvae", 1), run_row("gvae", 2, scale="study")],
                         config=False)
    _refused_by_summary_and_merge(folder, tmp_path, capsys, "line 4 (gvae seed 2)", "scale 'study'",
                                  "the folder's is 'smoke'")


def test_a_row_whose_scale_is_not_config_jsons_is_refused(tmp_path):
    """With config.json, the scale of every row is checked against it."""
    folder = write_study(tmp_path / "study", [("gvae", 0), run_row("gvae", 1, scale="paper")], **TINY)
    with pytest.raises(ConfigError, match="line 3 \\(gvae seed 1\\): scale 'paper', where the folder's is 'smoke'"):
        runner.read_study(folder)


# ---------------------------------------------------------------- what is not a number

@pytest.mark.parametrize("value", ["abc", "inf"])
def test_a_metric_that_is_not_a_finite_number_is_refused(tmp_path, capsys, value):
    """A non-numeric metric gave a pandas traceback in summary and was copied on by merge."""
    folder = write_study(tmp_path / "study", [("gvae", 0), run_row("gvae", 1, translation_mse=value)], **TINY)
    _refused_by_summary_and_merge(folder, tmp_path, capsys, "line 3 (gvae seed 1)",
                                  f"translation_mse is '{value}', not a finite number")


def test_an_empty_metric_is_a_run_it_could_not_score_not_damage(tmp_path, capsys):
    """NaN (written empty) is legitimate: e.g. a probe that could not be rescored; it does not count
    for that metric alone."""
    folder = write_study(tmp_path / "study", [("gvae", 0), run_row("gvae", 1, v_probe_mse=float("nan")),
                                              ("gvae", 2)], **TINY)
    assert main(["summary", "--out", str(folder)]) == 0
    counts = runner.summarise(runner.read_study(folder)["runs"]).set_index("metric").n_seeds
    assert counts["v_probe_mse"] == 2 and counts["holdout_nll"] == 3


# ---------------------------------------------------------------- --out that cannot be written

SWEEP_ARGS = ["sweep", "--presets", "gvae", "--seeds", "0", "--scale", "smoke", "--device", "cpu", "--quiet"]


def test_out_naming_a_file_or_a_path_under_a_file_is_one_line(tmp_path, capsys):
    """--out a file, or a path under one: no FileExistsError / NotADirectoryError traceback."""
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder\n")
    assert main([*SWEEP_ARGS, "--out", str(a_file)]) == 2
    _one_line_error(capsys, str(a_file), "is a file")
    assert main([*SWEEP_ARGS, "--out", str(a_file / "study")]) == 2
    _one_line_error(capsys, str(a_file / "study"), "a file")
    assert main(["oracle", "--out", str(a_file)]) == 2
    _one_line_error(capsys, "is a file")
    assert a_file.read_text() == "not a folder\n"


def test_out_naming_a_read_only_folder_is_one_line(tmp_path, capsys, monkeypatch):
    """A folder this user cannot write to: no PermissionError traceback. As root (who writes
    anyway) the file system's refusal is imitated: opening a file there for writing fails."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:
        real_open = builtins.open

        def refusing_open(file, mode="r", *args, **kwargs):
            if any(c in mode for c in "wax+") and Path(os.fspath(file)).resolve().parent == folder.resolve():
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(file))
            return real_open(file, mode, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", refusing_open)
    try:
        assert main([*SWEEP_ARGS, "--out", str(folder)]) == 2
    finally:
        monkeypatch.undo()
        folder.chmod(0o755)
    _one_line_error(capsys, str(folder), "Permission denied")


def test_a_full_disk_when_config_json_is_written_is_one_line(tmp_path, capsys, monkeypatch):
    """ENOSPC when config.json is renamed into place: one line, no half-written file left."""
    out = tmp_path / "study"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full)
    assert main([*SWEEP_ARGS, "--out", str(out)]) == 2
    _one_line_error(capsys, "config.json", "No space left on device")
    assert not [p.name for p in out.iterdir() if not p.name.endswith(".lock")]


def test_a_full_disk_when_the_model_is_written_is_one_line(tmp_path, capsys, monkeypatch):
    """torch's own error when the model cannot be written (its inline_container.cc traceback):
    one line, and no row of the run without its model."""
    out = tmp_path / "study"

    def torch_full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 5120 vs 5014")

    monkeypatch.setattr(torch, "save", torch_full)
    assert main([*SWEEP_ARGS, "--out", str(out), "--epochs", "1"]) == 2
    _one_line_error(capsys, "gvae-0.pt", "inline_container.cc")
    assert not (out / "runs.csv").exists() and not list((out / "models").iterdir())
