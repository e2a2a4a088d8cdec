"""The Ray engine's cost per task (results/BENCHMARKS.md): time from submitting a block to its
start in a worker, and from its end to its result (runs and models) in the driver.

    .venv/bin/python scripts/engine_overhead.py --tasks 8 --cpus 2

Runs --tasks one-seed ml-vae blocks at the smoke scale through :func:`cxvae.engine.run_block`
on a local Ray of --cpus CPUs (one-CPU tasks), in waves of --cpus; the first wave starts the
workers (cold), the later ones reuse them (warm).
"""
import argparse
import time

import ray
import torch

from cxvae.config import make_run_config
from cxvae.engine import run_block
from cxvae.train import make_splits


def timed_block(*args):
    start = time.time()
    result = run_block(*args)
    return start, time.time(), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="WARNING")
    print(f"ray.init (a local Ray): {time.time() - t0:.2f} s")
    cfg = make_run_config("ml-vae", scale="smoke", device="cpu")
    splits = ray.put(make_splits(cfg.data))
    task = ray.remote(timed_block).options(num_cpus=1, num_gpus=0)
    for wave in range(0, args.tasks, args.cpus):
        submitted = time.time()
        refs = [task.remote(make_run_config("ml-vae", seed=s, scale="smoke", device="cpu"), [s], splits, False, False, 1)
                for s in range(wave, min(wave + args.cpus, args.tasks))]
        while refs:
            (ref,), refs = ray.wait(refs, num_returns=1)
            start, end, _ = ray.get(ref)
            got = time.time()
            print(f"wave {wave // args.cpus} ({'cold' if wave == 0 else 'warm'}): submit->start {start - submitted:.3f} s, "
                  f"run {end - start:.2f} s, end->result {got - end:.3f} s")
    ray.shutdown()


if __name__ == "__main__":
    main()
