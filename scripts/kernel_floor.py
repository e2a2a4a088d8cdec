"""How fast could one seed's training step be? Time its matrix products and ReLUs alone.

Records, for 40 paper-scale training steps of one seed, every matrix product (``mm``, ``addmm``)
and ReLU (forward and backward) that the step dispatches, with copies of their inputs, then
replays only those operations and times them. Whatever else a step does (indexing, the noise,
the losses, Adam, Python) comes on top, so ``batch / replay time`` bounds the groups per second
that eager PyTorch can reach without changing the arithmetic. Prints that bound beside the
whole step's throughput on the same batches.

Usage: ``.venv/bin/python scripts/kernel_floor.py [preset] [threads]`` (default cxvae, 2).
"""
import collections
import sys
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from cxvae.config import make_run_config
from cxvae.data import GroupBatchLoader, generate_exam_scores
from cxvae.train import SeedStack, make_optimisers, make_step

KERNELS = {"aten.mm.default", "aten.addmm.default", "aten.relu.default", "aten.threshold_backward.default"}


class Recorder(TorchDispatchMode):
    """Runs every operation and keeps the kernels of ``KERNELS`` with copies of their inputs."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if str(func) in KERNELS:
            self.calls.append((func, [a.detach().clone() if torch.is_tensor(a) else a for a in args]))
        return out


def main(preset: str = "cxvae", threads: int = 2, n_steps: int = 40, warmup: int = 3) -> None:
    torch.set_num_threads(threads)
    cfg = make_run_config(preset, scale="paper", device="cpu")
    batch_size = cfg.train.batch_size
    data = generate_exam_scores(batch_size * (n_steps + warmup), seed=0)
    stack = SeedStack(cfg.model, [0], torch.device("cpu"))
    opt, critic_opt, _ = make_optimisers(stack, cfg.train, total_steps=10 * n_steps)
    step = make_step(stack, opt, critic_opt, cfg.train)
    batches = list(GroupBatchLoader(data, batch_size, seed=0))
    for i, batch in enumerate(batches[:warmup]):
        step(batch, i)
    recorded = []
    for i, batch in enumerate(batches[warmup:warmup + n_steps], start=warmup):
        with Recorder() as recorder:
            step(batch, i)
        recorded.append(recorder.calls)
    for func, args in recorded[0]:  # warm the kernels once
        func(*args)
    start = time.perf_counter()
    for calls in recorded:
        for func, args in calls:
            func(*args)
    kernels = (time.perf_counter() - start) / n_steps
    start = time.perf_counter()  # the whole step on the same batches, training on
    for i, batch in enumerate(batches[warmup:warmup + n_steps], start=warmup + n_steps):
        step(batch, i)
    whole = (time.perf_counter() - start) / n_steps
    counts = collections.Counter(str(func).split(".")[1] for func, _ in recorded[0])
    print(f"{preset}, one seed, {threads} threads, paper-scale batches of {batch_size} groups")
    print(f"kernels of one step: {dict(counts)}")
    print(f"those kernels alone: {kernels * 1e3:.2f} ms a step -> at most {batch_size / kernels:,.0f} groups/s")
    print(f"the whole step:      {whole * 1e3:.2f} ms a step -> {batch_size / whole:,.0f} groups/s")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "cxvae", int(sys.argv[2]) if len(sys.argv) > 2 else 2)
