"""Extend results/paper towards 100 seeds: the blocks of pending seeds as tasks of the engine.

Blocks (at most --block consecutive pending seeds of a preset, read from the folder's runs.csv)
are queued Figure 4's models first, then the ablations, and run through the engine of
`cxvae sweep` (cxvae/engine.py): with --engine ray (the default) one Ray task per block on the
cluster at --address (none: a local Ray), each holding --task-cpus CPUs and --task-gpus GPUs, the
driver writing every run into the one study folder as its task's result comes; with --engine local
one block after another in this process (where Ray is not installed, e.g. a bare GPU machine).
Each block's `cxvae sweep` command is recorded in config.json, as if it had been run alone.

    python3 scripts/paper_study_gpu.py jobs  --out results/paper                      # what would run
    python3 scripts/paper_study_gpu.py run   --out results/paper --address auto        # on a cluster
    python3 scripts/paper_study_gpu.py watch --out results/paper --seconds 540 --pack DIR

`watch` packs the folder's tables and curves (not the models) into DIR/paper.tgz every 30 s (--every) and
when it stops, so a session cut off at any moment keeps what was finished.

The whole evaluation in one command (a fresh folder; issue #31): `run` scores the folder's oracle
once its blocks are done, and `--strength DIR` then runs chapter 10's group-strength study into DIR
(`cxvae.strength.strength_study`: 7 settings x 4 models x --strength-seeds at --strength-scale,
one setting after another, each preset's seeds in one stack), in the same process, resumably:

    python3 scripts/paper_study_gpu.py run --out runs/paper --engine local --cuda-graphs --strength runs/strength

Measured on an H200 (results/BENCHMARKS.md): 12 workers with blocks of 30 kept the GPU 100 %
busy but finished only the three cheaper baselines in 12 minutes; one process with a stack of
100 trains 100 CxVAE seeds in about 5.4 minutes. Hence the defaults: blocks of 100, each task a whole
GPU (--task-gpus 0.5 runs two blocks side by side on one).
With --cuda-graphs, the blocks whose graphed tasks fail are queued again without graphs.
--presets runs the given presets in the given order (each block index before the next).
On a CPU (--device cpu) every task gets --task-cpus threads; on 2 cores, two one-thread sweeps of 10
seeds side by side made 1.3 to 1.5 times as many runs an hour as one two-thread sweep
(results/BENCHMARKS.md), which is what --block 10 with one-CPU tasks on a local Ray runs.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's cxvae, without installing it
from cxvae.config import ConfigError  # noqa: E402
from cxvae.engine import TaskFailed, check_engine, ray_session, run_on_ray  # noqa: E402
from cxvae.runner import parse_seeds, run_oracle, sweep  # noqa: E402
from cxvae.store import CONFIG_JSON, HISTORIES, ORACLE_CSV, RUNS_CSV, model_path  # noqa: E402
from cxvae.strength import MAIN_PRESETS, STRENGTHS, strength_study  # noqa: E402

FIGURE4 = ["cxvae", "ml-vae", "gvae", "gvae-ad"]
ABLATIONS = ["cxvae-unconditional", "cxvae-average", "cxvae-product", "cxvae-none", "cxvae-nemeth",
             "ml-vae-corrected", "cxvae-product-corrected"]


# wall seconds per seed of a block on one H200 with CUDA graphs, training and scoring (results/BENCHMARKS.md,
# 2026-12-04); presets not measured there are taken as CxVAE-like. Set-up between blocks: about 7 s.
H200_SECONDS_PER_SEED = {"cxvae": 1.38, "ml-vae": 0.51, "gvae": 0.52, "gvae-ad": 0.89, "cxvae-average": 1.13,
                         "cxvae-none": 0.59, "cxvae-nemeth": 0.93, "ml-vae-corrected": 0.56}
H200_BLOCK_SETUP_S = 7.0


def estimated_minutes(queue, device: str = "cuda") -> float | None:
    """Minutes the blocks of ``queue`` should take on one H200 (None off a GPU: not measured)."""
    if device != "cuda":
        return None
    seconds = sum(H200_BLOCK_SETUP_S + (hi - lo + 1) * H200_SECONDS_PER_SEED.get(p, H200_SECONDS_PER_SEED["cxvae"])
                  for p, lo, hi in queue)
    return seconds / 60


def unkept(folder):
    """The (preset, seed) runs of study ``folder`` whose model it did not keep (``models/``)."""
    import pandas as pd

    runs = pd.read_csv(Path(folder) / "runs.csv")
    return {(p, int(s)) for p, s in zip(runs.preset, runs.seed) if not model_path(folder, p, s).exists()}


def jobs(out, block: int = 100, n_seeds: int = 100, presets=None, redo_unkept=None):
    """(preset, first seed, last seed) of the seeds 0..n_seeds-1 not yet in ``out/runs.csv``, in
    blocks of at most ``block`` consecutive seeds: Figure 4's models first, then the ablations,
    each block index across all presets before the next. With ``redo_unkept`` (a study folder),
    only the runs of that folder whose model was not kept are pending: retrained into ``out``,
    they can replace that folder's rows (``cxvae merge --replace``) with every metric rescorable."""
    from cxvae.store import finished

    done = finished(out)  # a damaged row does not count: its run is pending
    if redo_unkept is not None:
        wanted = unkept(redo_unkept)
        done |= {(p, s) for p in presets or FIGURE4 + ABLATIONS for s in range(n_seeds) if (p, s) not in wanted}
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


def sweep_line(preset, lo, hi, out, scale="paper", device="cuda", cuda_graphs=False) -> str:
    """The `cxvae sweep` command of one block, as recorded in the folder's config.json."""
    return "cxvae sweep " + " ".join(sweep_command(preset, lo, hi, out, scale, device, cuda_graphs))


def plans(out, queue, scale="paper", device="cuda", cuda_graphs=False):
    """One sweep plan (cxvae.runner.plan_sweep) per job of ``queue``, each recording its own
    `cxvae sweep` command in the folder's config.json; a job that is now done plans nothing."""
    from cxvae.runner import plan_sweep, sweep_configs

    found = []
    for preset, lo, hi in queue:
        seeds = list(range(lo, hi + 1))
        command = sweep_line(preset, lo, hi, out, scale, device, cuda_graphs)
        found.append(plan_sweep(sweep_configs([preset], seeds, scale, device, stack=len(seeds)), seeds, out,
                                command, len(seeds), torch.device("cpu")))
    return found


def run(args) -> None:
    from cxvae.store import finished

    check_engine(args.engine, args.address, args.task_cpus, args.task_gpus)
    queue = jobs(args.out, args.block, presets=args.presets, redo_unkept=args.redo_unkept)[: args.max_jobs]
    if not queue:
        print("nothing to run", flush=True)
    else:
        minutes = estimated_minutes(queue, args.device)
        print("plan: " + ", ".join(f"{p} {lo}-{hi}" for p, lo, hi in queue)
              + (f" (about {minutes:.0f} minutes on one H200)" if minutes is not None else ""), flush=True)
    session = ray_session(args.address) if args.engine == "ray" else contextlib.nullcontext()
    with session:
        for graphs in ([True, False] if args.cuda_graphs else [False]):
            print(f"{time.strftime('%H:%M:%S')} {len(queue)} blocks{' (CUDA graphs)' if graphs else ''}", flush=True)
            try:
                if args.engine == "ray":
                    run_on_ray(plans(args.out, queue, args.scale, args.device, graphs), cuda_graphs=graphs,
                               together=True, task_cpus=args.task_cpus, task_gpus=args.task_gpus,
                               progress=not args.quiet)
                else:
                    for preset, lo, hi in queue:
                        print(f"{time.strftime('%H:%M:%S')} block {preset} {lo}-{hi}", flush=True)
                        sweep([preset], range(lo, hi + 1), scale=args.scale, device=args.device, out=args.out,
                              progress=not args.quiet, stack=hi - lo + 1, score_together=True, cuda_graphs=graphs,
                              command=sweep_line(preset, lo, hi, args.out, args.scale, args.device, graphs))
                break
            except (TaskFailed, ConfigError) as err:
                print(f"{time.strftime('%H:%M:%S')} {err}", flush=True)
                if not graphs:
                    raise
            done = finished(args.out)  # what is left goes again, without graphs
            queue = [(p, lo, hi) for p, lo, hi in queue if any((p, s) not in done for s in range(lo, hi + 1))]
            for job in queue:
                print(f"{time.strftime('%H:%M:%S')} requeue {job} without CUDA graphs", flush=True)
    if not (Path(args.out) / "oracle.csv").exists() and (Path(args.out) / "runs.csv").exists():
        run_oracle(scale=args.scale, out=args.out)
        print(f"{time.strftime('%H:%M:%S')} oracle scored", flush=True)
    if args.strength:
        run_strength(args)
    print("all jobs finished", flush=True)


def run_strength(args) -> None:
    """Chapter 10's study into ``args.strength``, after the paper's blocks: every setting in turn,
    each preset's seeds as one stack; with --cuda-graphs a failure is redone eagerly (resumable)."""
    settings = [float(c) for c in args.strength_settings.split(",")] if args.strength_settings else list(STRENGTHS)
    presets, seeds = args.strength_presets or list(MAIN_PRESETS), parse_seeds(args.strength_seeds)
    print(f"{time.strftime('%H:%M:%S')} strength: {len(settings)} settings x {len(presets)} models x {len(seeds)} "
          f"seeds at the {args.strength_scale} scale", flush=True)
    for graphs in ([True, False] if args.cuda_graphs else [False]):
        try:
            strength_study(settings, presets, seeds, scale=args.strength_scale, out=args.strength, device=args.device,
                           stack=len(seeds), progress=not args.quiet, score_together=True, cuda_graphs=graphs)
            break
        except ConfigError as err:
            print(f"{time.strftime('%H:%M:%S')} {err}", flush=True)
            if not graphs:
                raise
            print(f"{time.strftime('%H:%M:%S')} strength: again without CUDA graphs", flush=True)
    print(f"{time.strftime('%H:%M:%S')} strength finished", flush=True)


def pack(out: Path, dest: Path, strength: Path | None = None) -> None:
    """The study's tables, curves and log (not its models) into dest/paper.tgz; the strength study's
    under strength/ in it."""
    tmp = dest / "paper.tgz.part"
    with tarfile.open(tmp, "w:gz") as tar:
        for name in (RUNS_CSV, ORACLE_CSV, CONFIG_JSON, HISTORIES, "logs", "driver.log"):
            if (out / name).exists():
                tar.add(out / name, arcname=name)
        for folder in sorted(strength.glob("c=*")) if strength is not None and strength.exists() else []:
            for name in (RUNS_CSV, ORACLE_CSV, CONFIG_JSON, HISTORIES):
                if (folder / name).exists():
                    tar.add(folder / name, arcname=f"strength/{folder.name}/{name}")
    os.replace(tmp, dest / "paper.tgz")


def watch(args) -> None:
    out, dest = Path(args.out), Path(args.pack)
    strength = Path(args.strength) if args.strength else None
    start, last = time.time(), 0.0
    while time.time() - start < args.seconds:
        time.sleep(5)
        if time.time() - last >= args.every:
            pack(out, dest, strength)
            last = time.time()
            n = sum(1 for _ in open(out / "runs.csv")) - 1 if (out / "runs.csv").exists() else 0
            print(f"{time.strftime('%H:%M:%S')} +{time.time() - start:.0f}s runs.csv rows: {n}", flush=True)
            if shutil.which("nvidia-smi"):
                smi = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader"],
                                     capture_output=True, text=True).stdout.strip()
                print(f"   gpu: {smi}", flush=True)
        if (out / "driver.log").exists() and "all jobs finished" in (out / "driver.log").read_text():
            break
    pack(out, dest, strength)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["run", "watch", "jobs"])
    parser.add_argument("--out", default="results/paper")
    parser.add_argument("--engine", default="ray", help="ray (default) or local (one block after another, here)")
    parser.add_argument("--address", default=None, help="the Ray cluster: auto or HOST:PORT (default: a local Ray)")
    parser.add_argument("--task-cpus", type=int, default=1, help="CPUs (torch threads) per task (default 1)")
    parser.add_argument("--task-gpus", type=float, default=None,
                        help="GPUs per task, e.g. 0.5 for two blocks on one GPU (default 1 on CUDA, else 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
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
    parser.add_argument("--redo-unkept", default=None, metavar="FOLDER",
                        help="only the runs of study FOLDER whose model it did not keep (e.g. results/paper)")
    parser.add_argument("--strength", default=None, metavar="DIR",
                        help="after the paper's blocks, run chapter 10's group-strength study into DIR")
    parser.add_argument("--strength-seeds", default="0-19", help="seeds per model and setting (default 0-19)")
    parser.add_argument("--strength-scale", default="study", help="the strength study's scale (default study)")
    parser.add_argument("--strength-settings", default="", help="comma-separated group strengths (default: all 7)")
    parser.add_argument("--strength-presets", type=lambda text: text.split(","), default=None,
                        help="the strength study's models (default ml-vae,gvae,gvae-ad,cxvae)")
    args = parser.parse_args()
    if args.mode == "jobs":
        for job in jobs(args.out, args.block, presets=args.presets, redo_unkept=args.redo_unkept):
            print(*job)
    elif args.mode == "watch":
        watch(args)
    else:
        try:
            run(args)
        except (ConfigError, TaskFailed) as err:  # a bad option or address, or blocks that failed: one line
            sys.exit(f"paper_study_gpu.py: error: {err}")
