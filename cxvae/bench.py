"""Training throughput: how many groups and observations per second each preset trains on.

``cxvae bench`` prints one row per preset and stack size: groups/s and observations/s of the
training step (forward, backward, both optimisers; :func:`cxvae.train.stack_step`) at the scale's
batch size, measured after a warm-up, for one seed and for ``stack`` seeds trained at once, and the
estimated wall time of training ``seeds`` seeds at that scale (training only; scoring adds a fixed
cost per run that ``runs.csv``'s ``score_seconds`` records).
"""
from __future__ import annotations

import time
from typing import Sequence

import pandas as pd
import torch

from .config import make_run_config
from .data import GroupBatchLoader, generate_exam_scores
from .train import SeedStack, _stack, resolve_device, stack_step

__all__ = ["training_throughput", "benchmark_table"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_throughput(preset: str, scale: str = "paper", device: str = "auto", steps: int = 30,
                        warmup: int = 5, n_seeds: int = 1) -> dict:
    """Time ``steps`` training steps of ``n_seeds`` stacked seeds of ``preset`` (after ``warmup``).

    Returns ``dict(groups_per_s, observations_per_s, seconds_per_step)``, counting every seed's
    groups (a stack of S seeds trains S x batch_size groups per step).
    """
    cfg = make_run_config(preset, scale=scale, device=device)
    dev = resolve_device(device)
    data = generate_exam_scores(cfg.train.batch_size * (steps + warmup), seed=0).to(dev)
    stack = SeedStack(cfg.model, range(n_seeds), dev)
    opt = torch.optim.Adam(stack.vae_params, lr=cfg.train.lr)
    critic_opt = torch.optim.Adam(stack.critic_params, lr=cfg.train.critic_lr) if stack.critic_params else None
    batches = list(GroupBatchLoader(data, cfg.train.batch_size, seed=0))
    n_groups = n_obs = 0
    for i, batch in enumerate(batches):
        if i == warmup:
            _sync(dev)
            start = time.perf_counter()
        stack_step(stack, *_stack(batch, n_seeds), opt, critic_opt, cfg.train)
        if i >= warmup:
            n_groups += n_seeds * batch.n_groups
            n_obs += n_seeds * batch.n_observations
    _sync(dev)
    seconds = time.perf_counter() - start
    return dict(groups_per_s=n_groups / seconds, observations_per_s=n_obs / seconds,
                seconds_per_step=seconds / max(len(batches) - warmup, 1))


def benchmark_table(presets: Sequence[str], scale: str = "paper", device: str = "auto", steps: int = 30,
                    seeds: int = 100, stacks: Sequence[int] = (1, 10)) -> pd.DataFrame:
    """One row per preset and stack size: throughput and the estimated training time of ``seeds`` seeds."""
    rows = []
    for preset in presets:
        cfg = make_run_config(preset, scale=scale, device=device)
        for n_seeds in stacks:
            t = training_throughput(preset, scale=scale, device=device, steps=steps, n_seeds=n_seeds)
            run_seconds = cfg.train.epochs * cfg.data.n_train / t["groups_per_s"]  # per seed
            rows.append(dict(preset=preset, stack=n_seeds, device=str(resolve_device(device)),
                             threads=torch.get_num_threads(), groups_per_s=round(t["groups_per_s"]),
                             observations_per_s=round(t["observations_per_s"]),
                             train_minutes_per_seed=round(run_seconds / 60, 2),
                             train_hours_for_seeds=round(seeds * run_seconds / 3600, 2)))
    return pd.DataFrame(rows)
