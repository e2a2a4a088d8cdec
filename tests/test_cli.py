"""Tests of the ``cxvae`` command line at its smallest scale: a training run that writes its
files, readable errors with exit status 2, and the module run as a real process."""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from cxvae.cli import build_parser, main
from cxvae.config import PRESETS

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ["--scale", "smoke", "--epochs", "1", "--device", "cpu", "--quiet"]


def _assert_run_written(out: Path, epochs: int = 1, preset: str = "cxvae"):
    """config.json, model.pt and history.csv exist and describe the run that was asked for."""
    for name in ("config.json", "model.pt", "history.csv"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["preset"] == preset and config["scale"] == "smoke" and config["train"]["epochs"] == epochs
    assert len(pd.read_csv(out / "history.csv")) == epochs
    assert set(torch.load(out / "model.pt", weights_only=True)) == {"config_json", "state_dict"}


def test_train_command_writes_a_run(tmp_path, capsys):
    """`cxvae train` at smoke scale returns 0, writes the three files and prints a summary."""
    status = main(["train", "--preset", "cxvae", *SMOKE, "--out", str(tmp_path)])
    assert status == 0
    _assert_run_written(tmp_path)
    assert str(tmp_path) in capsys.readouterr().out


def test_train_command_applies_overrides(tmp_path):
    """Component and optimisation flags end up in the saved config."""
    status = main(["train", "--preset", "gvae", *SMOKE, "--decoder", "mlp", "--lr", "0.001",
                   "--batch-size", "128", "--seed", "3", "--out", str(tmp_path)])
    assert status == 0
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model"]["decoder"] == "mlp" and config["model"]["group_encoder"] == "average"
    assert config["train"]["lr"] == 0.001 and config["train"]["batch_size"] == 128 and config["seed"] == 3


def test_unknown_preset_exits_2_listing_the_presets(tmp_path, capsys):
    """An unknown preset returns 2 and prints one line naming every valid preset, no traceback."""
    status = main(["train", "--preset", "vae-of-doom", *SMOKE, "--out", str(tmp_path)])
    assert status == 2
    err = capsys.readouterr().err
    assert "vae-of-doom" in err and "Traceback" not in err
    for name in PRESETS:
        assert name in err
    assert not (tmp_path / "model.pt").exists()


@pytest.mark.parametrize("flags, words", [
    (["--group-encoder", "sum"], "deepsets"),
    (["--scale", "huge"], "smoke"),
])
def test_bad_names_exit_2_with_a_message(tmp_path, capsys, flags, words):
    """Unknown component or scale names return 2 with a message listing the valid names."""
    argv = ["train", *SMOKE, "--out", str(tmp_path)]
    argv[argv.index("--scale"):argv.index("--scale") + 2] = []  # drop the default scale
    assert main(argv + flags) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_exits_2(tmp_path, capsys):
    """--device cuda on a machine without CUDA returns 2 and suggests --device cpu."""
    argv = ["train", "--epochs", "1", "--quiet", "--device", "cuda", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "--device cpu" in capsys.readouterr().err


def test_help_exits_0(capsys):
    """`cxvae train --help` exits 0 and documents the presets."""
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    assert "cxvae-nemeth" in capsys.readouterr().out


def _subcommands() -> list[str]:
    """The sub-commands, read from the parser: a new one is checked without editing these tests."""
    found = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(found) == 1, "cxvae has one set of sub-commands"
    return list(found[0].choices)


def test_top_level_help_exits_0_listing_every_subcommand(capsys):
    """`cxvae --help` formats every sub-command's help (a bare % in one crashed it: argparse needs %%)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: cxvae")
    missing = [c for c in _subcommands() if f"\n    {c} " not in out]
    assert not missing, f"sub-commands not listed by cxvae --help: {missing}\n{out}"
    assert "[95% interval]" in out, "the summary's help, with its % printed once"


@pytest.mark.parametrize("command", _subcommands())
def test_every_subcommand_help_exits_0(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: cxvae {command}") and "--help" in out, out


def test_help_in_a_fresh_process(tmp_path):
    """`python -m cxvae.cli --help`, as a user runs it: exit 0, the help on stdout, no traceback."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "cxvae.cli", "--help"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout.startswith("usage: cxvae") and "summary" in proc.stdout


# Run in a fresh interpreter: records every process started (subprocess, os.system, fork, spawn,
# exec) while ``cxvae.cli`` is imported, then prints them as JSON.
_SPY_ON_PROCESSES = """
import json, os, subprocess
started = []
real_init = subprocess.Popen.__init__
def spy(self, args, *a, **k):
    started.append(repr(args))
    return real_init(self, args, *a, **k)
subprocess.Popen.__init__ = spy
for name in ("system", "fork", "forkpty", "posix_spawn", "posix_spawnp", "execv", "execve", "spawnv", "spawnve"):
    if hasattr(os, name):
        def wrap(*a, _real=getattr(os, name), _name=name, **k):
            started.append(_name)
            return _real(*a, **k)
        setattr(os, name, wrap)
import cxvae.cli
print(json.dumps(started))
"""


def test_importing_the_cli_starts_no_process(tmp_path):
    """`import cxvae.cli` (so `cxvae --help`) starts no process: the git commit that provenance
    records is read on first use (cxvae.runner.code_commit), not at import."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    env.pop("CXVAE_GIT_COMMIT", None)  # would skip git anyway and hide a regression
    proc = subprocess.run([sys.executable, "-c", _SPY_ON_PROCESSES], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_module_runs_as_a_script(tmp_path):
    """`python -m cxvae.cli train ...` runs in a fresh process, exits 0 and writes the run."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "cxvae.cli", "train", "--preset", "cxvae", *SMOKE,
                           "--out", str(tmp_path / "run")], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    _assert_run_written(tmp_path / "run")


def _one_line_error(capsys, *words):
    """The command printed one line to stderr holding ``words``, and no traceback."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert all(w in err for w in words), err


@pytest.mark.parametrize("flags, words", [
    (["--epochs", "0"], "epochs must be at least 1"),
    (["--batch-size", "0"], "batch_size must be at least 1"),
    (["--lr", "-1"], "lr must be a finite number > 0"),
    (["--reg-weight", "-0.5"], "reg_weight must be"),
    (["--seed", "-1"], "seed must be at least 0"),
])
def test_bad_training_settings_exit_2_before_writing(tmp_path, capsys, flags, words):
    """Settings that cannot train are refused before model.pt is written (0 epochs used to write
    an untrained model, then crash)."""
    assert main(["train", *SMOKE, *flags, "--out", str(tmp_path / "run")]) == 2
    _one_line_error(capsys, words)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("stacks, words", [("0", "stack size"), ("a", "--stacks 'a'"), ("1,-", "--stacks")])
def test_bench_bad_stacks_exit_2_naming_the_option(capsys, stacks, words):
    assert main(["bench", "--stacks", stacks, "--presets", "ml-vae", "--scale", "smoke", "--steps", "1",
                 "--device", "cpu"]) == 2
    _one_line_error(capsys, words)


@pytest.mark.parametrize("strengths", ["nan", "-1", "0,inf"])
def test_strength_bad_strengths_exit_2_before_any_folder(tmp_path, capsys, strengths):
    assert main(["strength", "--strengths", strengths, "--presets", "ml-vae", "--seeds", "0", "--scale", "smoke",
                 "--device", "cpu", "--quiet", "--out", str(tmp_path / "s")]) == 2
    _one_line_error(capsys, "group_strength must be a finite number >= 0")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("flags", [
    pytest.param(["--device", "cuda"], marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is here")),
    ["--device", "cpu", "--cuda-graphs"],
])
def test_sweep_that_cannot_run_records_nothing(tmp_path, capsys, flags):
    """A sweep refused for its device leaves no config.json claiming it ran."""
    assert main(["sweep", "--presets", "ml-vae", "--seeds", "0", "--quiet", *flags, "--out", str(tmp_path / "d")]) == 2
    _one_line_error(capsys, "cuda")
    assert not (tmp_path / "d" / "config.json").exists()


@pytest.mark.parametrize("text, words", [("", "is empty"), ("preset,seed\n", "holds no runs"),
                                         ("name,seed\na,0\n", "no 'preset' column")])
def test_summary_and_merge_of_unreadable_runs_exit_2(tmp_path, capsys, text, words):
    """An empty, header-only or foreign runs.csv is one line naming the file, for summary and merge."""
    study = tmp_path / "study"
    study.mkdir()
    (study / "runs.csv").write_text(text)
    assert main(["summary", "--out", str(study)]) == 2
    _one_line_error(capsys, str(study / "runs.csv"), words)
    if text == "":
        other = tmp_path / "other"
        other.mkdir()
        (other / "runs.csv").write_text("preset,seed\nml-vae,0\n")
        for src, dest in ((study, other), (other, study)):
            assert main(["merge", str(src), "--into", str(dest)]) == 2
            _one_line_error(capsys, str(study / "runs.csv"), "is empty")


def test_bugs_are_not_hidden_as_user_errors(monkeypatch):
    """Only the library's user-error types become one-line messages; anything else keeps its traceback."""
    import cxvae.runner

    monkeypatch.setattr(cxvae.runner, "main_sweep_summary", lambda out: {}["bug"])
    with pytest.raises(KeyError):
        main(["summary", "--out", "anywhere"])


def test_sweep_epochs_replaces_the_scales_budget(tmp_path):
    """`cxvae sweep --epochs N` trains every run for N epochs (a budget study) and records it."""
    import json

    import pandas as pd

    out = tmp_path / "budget"
    assert main(["sweep", "--presets", "ml-vae", "--seeds", "0", "--scale", "smoke", "--epochs", "2",
                 "--out", str(out), "--quiet"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["presets"]["ml-vae"]["train"]["epochs"] == 2
    assert pd.read_csv(out / "histories" / "ml-vae-0.csv").epoch.max() in (1, 2)
    assert main(["sweep", "--presets", "ml-vae", "--seeds", "0", "--scale", "smoke", "--epochs", "0",
                 "--out", str(tmp_path / "none"), "--quiet"]) != 0
