"""Extend results/paper towards 100 seeds on one GPU: many `cxvae sweep` processes at once.

One process keeps a GPU only partly busy (a step is hundreds of small kernels, launched from
Python), so this driver runs up to --workers sweeps side by side, each on its own block of seeds,
all writing into one study folder (the runner locks runs.csv and config.json). Blocks are queued
Figure 4's models first, then the first block of every ablation, then the rest.

    python3 scripts/paper_study_gpu.py run   --out results/paper --workers 12   # the job queue
    python3 scripts/paper_study_gpu.py watch --out results/paper --seconds 540 --pack DIR

`watch` packs the folder's tables and curves (not the models) into DIR/paper.tgz every 30 s and
when it stops, so a session cut off at any moment keeps what was finished.
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


def jobs(block: int = 30):
    """(preset, first seed, last seed) in the order they should run."""
    fig4 = [(p, a, min(a + block - 1, 99)) for a in range(10, 100, block) for p in FIGURE4]
    first = [(p, 5, 4 + block) for p in ABLATIONS]
    rest = [(p, a, min(a + block - 1, 99) if a + 2 * block <= 100 else 99)
            for a in range(5 + block, 100 - block + 1, block) for p in ABLATIONS]
    return fig4 + first + rest


def sweep_command(preset, lo, hi, out, scale="paper", device="cuda"):
    return ["--presets", preset, "--seeds", f"{lo}-{hi}", "--scale", scale, "--out", out,
            "--stack", str(hi - lo + 1), "--score-together", "--device", device, "--quiet"]


def run(args) -> None:
    logs = Path(args.out) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    queue, running = jobs(args.block)[: args.max_jobs], {}
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONPATH=os.getcwd())
    while queue or running:
        for key, proc in list(running.items()):
            if proc.poll() is not None:
                print(f"{time.strftime('%H:%M:%S')} done {key} rc={proc.returncode}", flush=True)
                del running[key]
        while queue and len(running) < args.workers:
            preset, lo, hi = queue.pop(0)
            cmd = sweep_command(preset, lo, hi, args.out, args.scale, args.device)
            line = "cxvae sweep " + " ".join(cmd)
            log = open(logs / f"{preset}-{lo}-{hi}.log", "w")
            running[(preset, lo, hi)] = subprocess.Popen(
                [sys.executable, "-c", "import sys; from cxvae.cli import main; sys.exit(main(sys.argv[1:]))",
                 "sweep", *cmd, "--command-line", line], stdout=log, stderr=subprocess.STDOUT, env=env)
            print(f"{time.strftime('%H:%M:%S')} start {preset} {lo}-{hi}", flush=True)
        time.sleep(2)
    print("all jobs finished", flush=True)


def pack(out: Path, dest: Path) -> None:
    tmp = Path("/tmp/paper.tgz")
    with tarfile.open(tmp, "w:gz") as tar:
        for name in ("runs.csv", "config.json", "histories", "logs", "driver.log"):
            if (out / name).exists():
                tar.add(out / name, arcname=name)
    shutil.move(str(tmp), dest / "paper.tgz")


def watch(args) -> None:
    out, dest = Path(args.out), Path(args.pack)
    start, last = time.time(), 0.0
    while time.time() - start < args.seconds:
        time.sleep(5)
        if time.time() - last >= 30:
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
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument("--block", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=540)
    parser.add_argument("--pack", default=".")
    parser.add_argument("--scale", default="paper", help="(smoke: to try the driver on a CPU)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--max-jobs", type=int, default=None)
    args = parser.parse_args()
    if args.mode == "jobs":
        for job in jobs(args.block):
            print(*job)
    else:
        {"run": run, "watch": watch}[args.mode](args)
