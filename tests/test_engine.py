"""The Ray engine (cxvae/engine.py): a sweep's blocks as Ray tasks, written by the driver.

First on one local Ray shared by a class (``ray.init(num_cpus=2)``): the same scores as the
in-process sweep, and a killed worker's task retried. Then on a two-process "cluster" made with
the README's commands (``ray start --head`` and one ``ray start --address``), driven from other
processes with ``--address``: a killed driver, run again, trains only the missing runs, and the
paper-study driver runs its blocks there. Everything Ray started is stopped after its tests.
"""
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from cxvae import runner
from cxvae.cli import main
from cxvae.metrics import METRICS

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(data=dict(n_train=256, n_valid=64, n_holdout=96), train=dict(epochs=1, batch_size=64),
            eval=dict(iwae_samples=4, probe_steps=20, probe_max_train=128))
SLOWER = dict(TINY, train=dict(epochs=3, batch_size=32))  # a few seconds a task: time to find and kill it
KEY = ["preset", "seed"]


def _sorted(table):
    return table.sort_values(KEY).reset_index(drop=True)


def _assert_same_scores(a, b):
    a, b = _sorted(a), _sorted(b)
    assert list(zip(a.preset, a.seed)) == list(zip(b.preset, b.seed))
    pd.testing.assert_frame_equal(a[list(METRICS)], b[list(METRICS)], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="class")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="class")
def in_process(tmp_path_factory):
    """The in-process sweep the Ray runs are compared with: two presets, seeds 0-1 in one block."""
    out = tmp_path_factory.mktemp("in_process")
    return out, runner.sweep(["ml-vae", "cxvae"], [0, 1], device="cpu", out=out, progress=False, overrides=TINY,
                             stack=2)


@pytest.mark.usefixtures("local_ray")
class TestOnALocalRay:
    def test_a_ray_sweep_scores_as_the_in_process_sweep_and_resumes(self, tmp_path, monkeypatch, in_process):
        """Two presets, two seeds in blocks of two: every run's scores equal the in-process
        sweep's; the folder has the same layout (rows, curves, models, the command); a rerun
        submits nothing."""
        folder, here = in_process
        there = runner.sweep(["ml-vae", "cxvae"], [0, 1], device="cpu", out=tmp_path / "ray", progress=False,
                             overrides=TINY, stack=2, engine="ray", command="cxvae sweep --engine ray")
        _assert_same_scores(here, there)
        assert set(here.columns) == set(there.columns) and not there.duplicated(KEY).any()
        for sub in ("histories", "models"):
            assert sorted(p.name for p in (folder / sub).iterdir()) == sorted(
                p.name for p in (tmp_path / "ray" / sub).iterdir())
        assert "cxvae sweep --engine ray" in (tmp_path / "ray" / "config.json").read_text()
        monkeypatch.setattr(ray, "remote", lambda *a, **k: pytest.fail("a task was submitted"))
        again = runner.sweep(["ml-vae", "cxvae"], [0, 1], device="cpu", out=tmp_path / "ray", progress=False,
                             overrides=TINY, stack=2, engine="ray")
        assert _sorted(again).equals(_sorted(there))

    def test_a_killed_workers_task_is_retried(self, tmp_path):
        """The worker running a block is killed (SIGKILL) mid-training; Ray runs the task again
        and the sweep ends with every run once, scored as in process."""
        killed, errors = [], []

        def sweep():
            try:
                runner.sweep(["ml-vae"], [0, 1], device="cpu", out=tmp_path / "ray", progress=False,
                             overrides=SLOWER, stack=2, engine="ray")
            except Exception as err:  # noqa: BLE001 (reported below)
                errors.append(err)

        thread = threading.Thread(target=sweep)
        thread.start()
        deadline = time.time() + 60
        while not killed and thread.is_alive() and time.time() < deadline:
            for proc in psutil.Process().children(recursive=True):  # this test's Ray only, not another one
                with contextlib.suppress(psutil.Error):
                    if (proc.cmdline() or [""])[0].startswith("ray::run_block"):  # a worker's title while it runs the task
                        proc.send_signal(signal.SIGKILL)
                        killed.append(proc.pid)
                        break
            time.sleep(0.05)
        thread.join(timeout=120)
        assert killed and not errors and not thread.is_alive()
        rows = pd.read_csv(tmp_path / "ray" / "runs.csv")
        assert sorted(rows.seed) == [0, 1]
        here = runner.sweep(["ml-vae"], [0, 1], device="cpu", out=tmp_path / "here", progress=False,
                            overrides=SLOWER, stack=2)
        _assert_same_scores(here, rows)

    def test_a_strength_study_on_ray_submits_every_setting_and_scores_as_in_process(self, tmp_path, in_process):
        """`strength_study(engine='ray')`: each setting's folder gets its runs and its oracle row;
        at c = 1 (the default data) the scores are the in-process sweep's."""
        from cxvae.strength import strength_study

        table = strength_study([0.0, 1.0], ["ml-vae"], [0], scale="smoke", out=tmp_path, device="cpu", progress=False,
                               overrides=TINY, engine="ray")
        assert sorted(zip(table.group_strength, table.preset, table.seed)) == [
            (0.0, "ml-vae", 0), (0.0, "oracle", -1), (1.0, "ml-vae", 0), (1.0, "oracle", -1)]
        _, here = in_process
        _assert_same_scores(here[(here.preset == "ml-vae") & (here.seed == 0)],
                            table[(table.group_strength == 1.0) & (table.preset == "ml-vae")])

    def test_a_failing_task_is_named_with_its_preset_seeds_and_error(self, tmp_path, capsys):
        """CUDA graphs on a CPU fail in the task: the CLI exits 2 with one line naming the block."""
        code = main(["sweep", "--presets", "ml-vae", "--seeds", "3-4", "--stack", "2", "--device", "cpu",
                     "--out", str(tmp_path), "--cuda-graphs", "--engine", "ray", "--quiet"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1
        assert "ml-vae seeds 3-4: ConfigError: cuda_graphs needs a CUDA device" in err
        assert not (tmp_path / "runs.csv").exists() and not (tmp_path / "models").exists()

    def test_a_task_no_node_can_hold_is_refused_not_left_waiting(self, tmp_path, capsys):
        """A GPU asked of a Ray without one, or more CPUs than a node has: one line, exit 2."""
        for flags, words in ((["--task-gpus", "1"], "no node of the Ray cluster has 1 CPUs and 1 GPUs"),
                             (["--task-cpus", "3"], "no node of the Ray cluster has 3 CPUs and 0 GPUs")):
            code = main(["sweep", "--presets", "ml-vae", "--seeds", "0", "--device", "cpu", "--out", str(tmp_path),
                         "--engine", "ray", "--quiet", *flags])
            err = capsys.readouterr().err.strip()
            assert code == 2 and words in err and len(err.splitlines()) == 1
        assert not (tmp_path / "runs.csv").exists()


@pytest.mark.parametrize("flags, words", [
    (["--engine", "spark"], "unknown engine 'spark'"),
    (["--address", "auto"], "--address need(s) --engine ray"),
    (["--engine", "ray", "--address", "no port"], "cannot read --address 'no port'"),
    (["--engine", "ray", "--address", "127.0.0.1:1"], "no Ray cluster answers at 127.0.0.1:1"),
    (["--engine", "ray", "--task-cpus", "0"], "--task-cpus must be"),
])
def test_bad_engine_options_exit_2_in_one_line_recording_nothing(tmp_path, capsys, flags, words):
    """An unknown engine, Ray options without Ray, an unreadable or unreachable address: one line,
    exit 2, no study folder."""
    code = main(["sweep", "--presets", "ml-vae", "--seeds", "0", "--device", "cpu", "--out", str(tmp_path / "s"),
                 *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2 and words in err and len(err.splitlines()) == 1
    assert not (tmp_path / "s").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_cli(*args, **kwargs):
    return subprocess.run([str(Path(sys.executable).with_name("ray")), *args], capture_output=True, text=True,
                          timeout=120, **kwargs)


# the test cluster's processes and its drivers: no address from the environment, and no token
# authentication (Ray 2.60's default; a token another Ray on this machine wrote would not match)
CLUSTER_ENV = dict(os.environ, RAY_ADDRESS="", RAY_AUTH_MODE="disabled")


def _processes_under(temp: str) -> list:
    """The live processes whose command line names ``temp`` (the test cluster's daemons and workers)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["status"] != psutil.STATUS_ZOMBIE and any(temp in a for a in proc.info["cmdline"] or []):
            found.append(proc)
    return found


def _stop_ray_under(temp: str, timeout: float = 60.0) -> list[int]:
    """`ray stop` for the cluster whose files are under ``temp`` only: its daemons (their command
    lines name ``temp``) and their children (workers, agents), not another Ray on this machine.

    Repeated until none is left: while one daemon stops, another may still start a worker (a
    raylet replacing a worker that died), which one pass over a snapshot would miss. Returns the
    pids still alive after ``timeout`` seconds (none, normally)."""
    deadline = time.time() + timeout
    while (roots := _processes_under(temp)) and time.time() < deadline:
        procs = set(roots)
        for root in roots:
            with contextlib.suppress(psutil.Error):
                procs.update(root.children(recursive=True))
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        _, alive = psutil.wait_procs(list(procs), timeout=5)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(alive, timeout=5)
    return [p.pid for p in _processes_under(temp)]


@pytest.fixture(scope="module")
def cluster():
    """The README's cluster on this machine: a head and one more node, one CPU each, stopped after."""
    assert not ray.is_initialized()
    temp = tempfile.mkdtemp(prefix="cxray", dir="/tmp")  # short: Ray's socket paths must stay short
    address = f"127.0.0.1:{_free_port()}"
    env = CLUSTER_ENV
    try:
        head = _ray_cli("start", "--head", "--node-ip-address", "127.0.0.1", "--port", address.split(":")[1],
                        "--num-cpus", "1", "--include-dashboard", "false", "--temp-dir", temp, env=env)
        assert head.returncode == 0, head.stderr
        node = _ray_cli("start", "--address", address, "--num-cpus", "1", env=env)  # the head's temp dir
        assert node.returncode == 0, node.stderr
        yield address
    finally:
        left = _stop_ray_under(temp)
        shutil.rmtree(temp, ignore_errors=True)
    assert not left, f"Ray processes left running: {left}"


def test_a_killed_driver_run_again_trains_only_the_missing_runs(tmp_path, cluster):
    """A sweep driven with `address=HOST:PORT` (`cxvae sweep --engine ray --address`) on the
    two-node cluster is killed once a row is written; the rows it wrote stay, and the same sweep
    run again makes only the others: six runs, none twice, the first ones' rows and models not
    rewritten."""
    out = tmp_path / "study"
    command = [sys.executable, "-c", "import json, sys; from cxvae import runner; runner.sweep(['ml-vae'], range(6), "
               "device='cpu', out=sys.argv[1], overrides=json.loads(sys.argv[3]), progress=False, engine='ray', "
               "address=sys.argv[2])", str(out), cluster, json.dumps(SLOWER)]
    driver = subprocess.Popen(command, cwd=ROOT, env=CLUSTER_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and driver.poll() is None:
        if (out / "runs.csv").exists() and len(pd.read_csv(out / "runs.csv")) >= 1:
            break
        time.sleep(0.1)
    driver.kill()
    driver.wait()
    before = pd.read_csv(out / "runs.csv")
    assert 1 <= len(before) < 6
    stamps = {s: (out / "models" / f"ml-vae-{s}.pt").stat().st_mtime_ns for s in before.seed}
    lines = (out / "runs.csv").read_text().splitlines()
    rerun = subprocess.run(command, cwd=ROOT, env=CLUSTER_ENV, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    after = pd.read_csv(out / "runs.csv")
    assert sorted(after.seed) == list(range(6)) and not after.duplicated(KEY).any()
    assert (out / "runs.csv").read_text().splitlines()[:len(lines)] == lines
    assert all((out / "models" / f"ml-vae-{s}.pt").stat().st_mtime_ns == t for s, t in stamps.items())


def test_the_paper_study_driver_runs_its_blocks_on_the_cluster(tmp_path, cluster):
    """scripts/paper_study_gpu.py run --address: its blocks' runs land in one folder, each
    block's command recorded; a block whose CUDA-graph task fails (on a CPU) is redone eagerly."""
    out = tmp_path / "paper"
    log = subprocess.run([sys.executable, "scripts/paper_study_gpu.py", "run", "--out", str(out), "--scale", "smoke",
                          "--device", "cpu", "--presets", "ml-vae", "--block", "1", "--max-jobs", "1", "--cuda-graphs",
                          "--address", cluster, "--quiet"], cwd=ROOT, env=CLUSTER_ENV, capture_output=True, text=True, timeout=300)
    assert log.returncode == 0, log.stderr
    assert "requeue ('ml-vae', 0, 0) without CUDA graphs" in log.stdout and "all jobs finished" in log.stdout
    assert "cuda_graphs needs a CUDA device" in log.stdout
    rows = pd.read_csv(out / "runs.csv")
    assert list(rows.seed) == [0] and list(rows.preset) == ["ml-vae"]
    config = (out / "config.json").read_text()  # the graphed try and the eager block, as `cxvae sweep` commands
    assert "--seeds 0-0 --scale smoke" in config and "--cuda-graphs" in config
