"""Training throughput: how many groups and observations per second each preset trains on.

``cxvae bench`` prints one row per preset: groups/s and observations/s of the training step
(forward, backward, both optimisers) at the scale's batch size, measured after a warm-up, and the
estimated wall time of training ``seeds`` seeds at that scale (training only; scoring adds a
fixed cost per run that ``runs.csv``'s ``score_seconds`` records).
"""
from __future__ import annotations

import time
from typing import Sequence

import pandas as pd
import torch

from .config import make_run_config
from .data import GroupBatchLoader, generate_exam_scores
from .model import GroupVAE
from .train import resolve_device, train_step

__all__ = ["training_throughput", "benchmark_table"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_throughput(preset: str, scale: str = "paper", device: str = "auto", steps: int = 30,
                        warmup: int = 5, seed: int = 0) -> dict:
    """Time ``steps`` training steps of ``preset`` (after ``warmup``) on batches of the scale's size.

    Returns ``dict(groups_per_s, observations_per_s, seconds_per_step)``.
    """
    cfg = make_run_config(preset, seed=seed, scale=scale, device=device)
    dev = resolve_device(device)
    torch.manual_seed(seed)
    n_groups = cfg.train.batch_size * (steps + warmup)
    data = generate_exam_scores(n_groups, seed=seed).to(dev)
    model = GroupVAE(cfg.model).to(dev)
    opt = torch.optim.Adam(model.vae_parameters(), lr=cfg.train.lr)
    critic = model.critic_parameters()
    critic_opt = torch.optim.Adam(critic, lr=cfg.train.critic_lr) if critic else None
    batches = list(GroupBatchLoader(data, cfg.train.batch_size, seed=seed))
    n_groups = n_obs = 0
    for i, batch in enumerate(batches):
        if i == warmup:
            _sync(dev)
            start = time.perf_counter()
        train_step(model, batch, opt, critic_opt, cfg.train)
        if i >= warmup:
            n_groups += batch.n_groups
            n_obs += batch.n_observations
    _sync(dev)
    seconds = time.perf_counter() - start
    return dict(groups_per_s=n_groups / seconds, observations_per_s=n_obs / seconds,
                seconds_per_step=seconds / max(len(batches) - warmup, 1))


def benchmark_table(presets: Sequence[str], scale: str = "paper", device: str = "auto", steps: int = 30,
                    seeds: int = 100) -> pd.DataFrame:
    """One row per preset: throughput and the estimated training time of ``seeds`` seeds."""
    rows = []
    for preset in presets:
        cfg = make_run_config(preset, scale=scale, device=device)
        t = training_throughput(preset, scale=scale, device=device, steps=steps)
        run_seconds = cfg.train.epochs * cfg.data.n_train / t["groups_per_s"]
        rows.append(dict(preset=preset, device=str(resolve_device(device)), threads=torch.get_num_threads(),
                         groups_per_s=round(t["groups_per_s"]), observations_per_s=round(t["observations_per_s"]),
                         train_minutes_per_run=round(run_seconds / 60, 2),
                         train_hours_for_seeds=round(seeds * run_seconds / 3600, 2)))
    return pd.DataFrame(rows)
