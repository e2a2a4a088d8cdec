"""scripts/paper_study_gpu.py, the driver that extends the paper study on a lent GPU: which blocks
it queues, and that a block whose CUDA-graph sweep fails is redone with eager steps."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from studies import run_row

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "paper_study_gpu.py"
spec = importlib.util.spec_from_file_location("paper_study_gpu", SCRIPT)
driver = importlib.util.module_from_spec(spec)
spec.loader.exec_module(driver)


def _runs(tmp_path, done):
    pd.DataFrame([run_row(p, s) for p, s in done]).to_csv(tmp_path / "runs.csv", index=False)
    return tmp_path


def test_jobs_are_the_pending_seeds_in_blocks_figure_4_first(tmp_path):
    """Pending seeds are cut into consecutive blocks of at most --block; by default Figure 4's
    models come before the ablations, each block index before the next."""
    out = _runs(tmp_path, [("cxvae", s) for s in range(0, 40)] + [("cxvae", 45)] + [("ml-vae", s) for s in range(100)]
                + [("gvae", s) for s in range(100)] + [("gvae-ad", s) for s in range(100)])
    jobs = driver.jobs(out, block=30, n_seeds=100)
    assert jobs[:4] == [("cxvae", 40, 44), ("cxvae", 46, 75), ("cxvae", 76, 99), ("cxvae-unconditional", 0, 29)]
    assert ("cxvae-unconditional", 30, 59) in jobs and jobs.index(("cxvae-unconditional", 30, 59)) > jobs.index(
        ("cxvae-product-corrected", 0, 29))


def test_jobs_follow_the_order_of_presets_given(tmp_path):
    """--presets runs only those presets, in the order given (the cheapest first, say)."""
    out = _runs(tmp_path, [("cxvae", s) for s in range(100)])
    assert driver.jobs(out, presets=["cxvae-none", "cxvae", "ml-vae-corrected"]) == [
        ("cxvae-none", 0, 99), ("ml-vae-corrected", 0, 99)]


def test_a_failed_cuda_graph_block_is_redone_eagerly(tmp_path):
    """On a CPU a CUDA-graph sweep stops with an error; the driver queues the block again without
    graphs, and its runs are made (the local engine here; tests/test_engine.py runs it on Ray)."""
    out = tmp_path / "study"
    log = subprocess.run([sys.executable, str(SCRIPT), "run", "--out", str(out), "--scale", "smoke", "--device", "cpu",
                          "--presets", "ml-vae", "--block", "1", "--max-jobs", "1", "--cuda-graphs", "--engine", "local",
                          "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=600).stdout
    assert "requeue ('ml-vae', 0, 0) without CUDA graphs" in log and "all jobs finished" in log
    assert "cuda_graphs needs a CUDA device" in log
    assert list(pd.read_csv(out / "runs.csv").seed) == [0]


def test_bad_engine_options_stop_the_driver_in_one_line(tmp_path):
    """--address with the local engine is refused before anything is written."""
    done = subprocess.run([sys.executable, str(SCRIPT), "run", "--out", str(tmp_path / "s"), "--engine", "local",
                           "--address", "auto"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [
        "paper_study_gpu.py: error: --address need(s) --engine ray (the local engine trains in this process)"]
    assert not (tmp_path / "s").exists()


def test_redo_unkept_queues_only_the_runs_whose_model_the_folder_did_not_keep(tmp_path):
    """--redo-unkept FOLDER: the pending runs are FOLDER's runs without a model in FOLDER/models,
    in consecutive blocks, whatever the (fresh) output folder holds."""
    study = _runs(tmp_path / "study" if (tmp_path / "study").mkdir() is None else None,
                  [("cxvae", s) for s in range(6)] + [("ml-vae", s) for s in range(3)])
    (study / "models").mkdir()
    for name in ["cxvae-0", "cxvae-1", "cxvae-4", "ml-vae-0", "ml-vae-1", "ml-vae-2"]:
        (study / "models" / f"{name}.pt").write_bytes(b"")
    jobs = driver.jobs(tmp_path / "fresh", block=100, n_seeds=6, redo_unkept=study)
    assert jobs == [("cxvae", 2, 3), ("cxvae", 5, 5)]


def test_the_plan_estimates_minutes_from_the_measured_blocks():
    """Known answer: 60 CxVAE seeds and 90 ML-VAE seeds are two blocks of the measured seconds per
    seed plus their set-up; an unmeasured preset counts as CxVAE; no estimate off a GPU."""
    minutes = driver.estimated_minutes([("cxvae", 40, 99), ("ml-vae", 10, 99)])
    assert minutes == pytest.approx((2 * 7.0 + 60 * 1.38 + 90 * 0.51) / 60)
    assert driver.estimated_minutes([("cxvae-product", 0, 9)]) == pytest.approx((7.0 + 10 * 1.38) / 60)
    assert driver.estimated_minutes([("cxvae", 0, 9)], device="cpu") is None


def test_one_command_makes_the_study_its_oracle_and_the_strength_study(tmp_path):
    """run --strength DIR (issue #31's one command, here at smoke scale on the CPU): the paper
    blocks, then the folder's oracle, then the group-strength study setting by setting, each with
    its runs and oracle; a second run trains no strength run again; pack() carries both studies'
    tables."""
    import tarfile

    out, strength = tmp_path / "paper", tmp_path / "strength"
    command = [sys.executable, str(SCRIPT), "run", "--out", str(out), "--scale", "smoke", "--device", "cpu",
               "--presets", "ml-vae", "--block", "1", "--max-jobs", "1", "--engine", "local", "--quiet",
               "--strength", str(strength), "--strength-scale", "smoke", "--strength-settings", "0,1",
               "--strength-presets", "ml-vae", "--strength-seeds", "0-0"]
    log = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900).stdout
    assert "oracle scored" in log and "strength: 2 settings x 1 models x 1 seeds" in log and "all jobs finished" in log
    assert (out / "oracle.csv").exists() and list(pd.read_csv(out / "runs.csv").seed) == [0]
    for c in ("c=0.000", "c=1.000"):
        assert len(pd.read_csv(strength / c / "runs.csv")) == 1 and (strength / c / "oracle.csv").exists()
    before = {p: p.read_text() for p in [strength / c / n for c in ("c=0.000", "c=1.000") for n in ("runs.csv", "oracle.csv")]}
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900).stdout  # the next paper seed
    assert "strength finished" in again and {p: p.read_text() for p in before} == before  # the strength study: done
    driver.pack(out, tmp_path, strength)
    with tarfile.open(tmp_path / "paper.tgz") as tar:
        names = set(tar.getnames())
    assert {"runs.csv", "oracle.csv", "strength/c=0.000/runs.csv", "strength/c=1.000/oracle.csv"} <= names
