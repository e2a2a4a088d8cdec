"""Extend results/paper towards 100 seeds on one GPU: `cxvae sweep` on blocks of pending seeds.

Blocks (at most --block consecutive pending seeds of a preset, read from the folder's runs.csv)
are queued Figure 4's models first, then the ablations; --workers sweeps run side by side, all
writing into one study folder (the runner locks runs.csv and config.json).

    python3 scripts/paper_study_gpu.py jobs  --out results/paper            # what would run
    python3 scripts/paper_study_gpu.py run   --out results/paper             # the job queue
    python3 scripts/paper_study_gpu.py watch --out results/paper --seconds 540 --pack DIR

`watch` packs the folder's tables and curves (not the models) into DIR/paper.tgz every 30 s (--every) and
when it stops, so a session cut off at any moment keeps what was finished.

Measured on an H200 (results/BENCHMARKS.md): 12 workers with blocks of 30 kept the GPU 100 %
busy but finished only the three cheaper baselines in 12 minutes; one process with a stack of
100 trains 100 CxVAE seeds in about 5.4 minutes. Hence the defaults: one worker, blocks of 100.
With --cuda-graphs, a block whose graphed sweep fails is queued again, first, without graphs.
--presets runs the given presets in the given order (each block index before the next).
On a CPU (--device cpu) every worker gets one thread; on 2 cores, two one-thread sweeps of 10
seeds side by side made 1.3 to 1.5 times as many runs an hour as one two-thread sweep
(results/BENCHMARKS.md), which is what --block 10 --workers 2 runs.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

FIGURE4 = ["cxvae", "ml-vae", "gvae", "gvae-ad"]
ABLATIONS = ["cxvae-unconditional", "cxvae-average", "cxvae-product", "cxvae-none", "cxvae-nemeth",
             "ml-vae-corrected", "cxvae-product-corrected"]


def jobs(out, block: int = 100, n_seeds: int = 100, presets=None):
    """(preset, first seed, last seed) of the seeds 0..n_seeds-1 not yet in ``out/runs.csv``, in
    blocks of at most ``block`` consecutive seeds: Figure 4's models first, then the ablations,
    each block index across all presets before the next."""
    import pandas as pd

    runs = Path(out) / "runs.csv"
    done = set(zip(*pd.read_csv(runs)[["preset", "seed"]].values.T)) if runs.exists() else set()
    found = []
    for order, preset in enumerate(presets or FIGURE4 + ABLATIONS):  # --presets: in the order given
        pending = [s for s in range(n_seeds) if (preset, s) not in done]
        runs_of = []  # consecutive runs of pending seeds, cut into blocks
        for s in pending:
            if runs_of and s == runs_of[-1][-1] + 1 and len(runs_of[-1]) < block:
                runs_of[-1].append(s)
            else:
                runs_of.append([s])
        found += [(index, order, preset, r[0], r[-1]) for index, r in enumerate(runs_of)]
    tier = lambda job: (not presets and job[2] in ABLATIONS, job[0], job[1])  # noqa: E731
    return [(preset, lo, hi) for _, _, preset, lo, hi in sorted(found, key=tier)]


def sweep_command(preset, lo, hi, out, scale="paper", device="cuda", cuda_graphs=False):
    return ["--presets", preset, "--seeds", f"{lo}-{hi}", "--scale", scale, "--out", out,
            "--stack", str(hi - lo + 1), "--score-together", "--device", device, "--quiet",
            *(["--cuda-graphs"] if cuda_graphs else [])]


def run(args) -> None:
    logs = Path(args.out) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    queue = [(*job, args.cuda_graphs) for job in jobs(args.out, args.block, presets=args.presets)[: args.max_jobs]]
    running = {}
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONPATH=os.getcwd())
    while queue or running:
        for key, proc in list(running.items()):
            if proc.poll() is not None:
                print(f"{time.strftime('%H:%M:%S')} done {key} rc={proc.returncode}", flush=True)
                del running[key]
                if proc.returncode != 0 and key[3]:  # the graphed step failed: redo the block eagerly
                    print(f"{time.strftime('%H:%M:%S')} requeue {key[:3]} without CUDA graphs", flush=True)
                    queue.insert(0, (*key[:3], False))
        while queue and len(running) < args.workers:
            preset, lo, hi, graphs = key = queue.pop(0)
            cmd = sweep_command(preset, lo, hi, args.out, args.scale, args.device, graphs)
            line = "cxvae sweep " + " ".join(cmd)
            log = open(logs / f"{preset}-{lo}-{hi}{'-graphs' if graphs else ''}.log", "w")
            running[key] = subprocess.Popen(
                [sys.executable, "-c", "import sys; from cxvae.cli import main; sys.exit(main(sys.argv[1:]))",
                 "sweep", *cmd, "--command-line", line], stdout=log, stderr=subprocess.STDOUT, env=env)
            print(f"{time.strftime('%H:%M:%S')} start {preset} {lo}-{hi}{' (CUDA graphs)' if graphs else ''}", flush=True)
        time.sleep(2)
    print("all jobs finished", flush=True)


def pack(out: Path, dest: Path) -> None:
    tmp = dest / "paper.tgz.part"
    with tarfile.open(tmp, "w:gz") as tar:
        for name in ("runs.csv", "config.json", "histories", "logs", "driver.log"):
            if (out / name).exists():
                tar.add(out / name, arcname=name)
    os.replace(tmp, dest / "paper.tgz")


def watch(args) -> None:
    out, dest = Path(args.out), Path(args.pack)
    start, last = time.time(), 0.0
    while time.time() - start < args.seconds:
        time.sleep(5)
        if time.time() - last >= args.every:
            pack(out, dest)
            last = time.time()
            n = sum(1 for _ in open(out / "runs.csv")) - 1 if (out / "runs.csv").exists() else 0
            print(f"{time.strftime('%H:%M:%S')} +{time.time() - start:.0f}s runs.csv rows: {n}", flush=True)
            if shutil.which("nvidia-smi"):
                smi = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader"],
                                     capture_output=True, text=True).stdout.strip()
                print(f"   gpu: {smi}", flush=True)
        if (out / "driver.log").exists() and "all jobs finished" in (out / "driver.log").read_text():
            break
    pack(out, dest)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["run", "watch", "jobs"])
    parser.add_argument("--out", default="results/paper")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--block", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=540)
    parser.add_argument("--pack", default=".")
    parser.add_argument("--every", type=float, default=30, help="watch: seconds between packs")
    parser.add_argument("--scale", default="paper", help="(smoke: to try the driver on a CPU)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--max-jobs", type=int, default=None)
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="train with the step replayed from CUDA graphs (check it first: scripts/gpu_check.sh)")
    parser.add_argument("--presets", type=lambda text: text.split(","), default=None,
                        help="only these presets (comma-separated), e.g. the ones a 15-minute lease can finish")
    args = parser.parse_args()
    if args.mode == "jobs":
        for job in jobs(args.out, args.block, presets=args.presets):
            print(*job)
    else:
        {"run": run, "watch": watch}[args.mode](args)
