"""Training throughput: how many groups and observations per second each preset trains on.

``cxvae bench`` prints one row per preset and stack size: groups/s and observations/s of the
training step (forward, backward, both optimisers; :func:`cxvae.train.stack_step`) at the scale's
batch size, measured after a warm-up, for one seed and for ``stack`` seeds trained at once, and the
estimated wall time of training ``seeds`` seeds at that scale (training only; scoring adds a fixed
cost per run that ``runs.csv``'s ``score_seconds`` records). ``cxvae bench --score`` also times
scoring (every metric, probes included) per run, one run alone and ``stack`` runs together
(:func:`cxvae.metrics.evaluate_many`).
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .config import ConfigError, make_run_config, require_int
from .data import GroupBatchLoader, generate_exam_scores
from .evaluation import ModelScorer
from .model import GroupVAE
from .runner import score_many
from .train import SeedStack, make_optimisers, make_splits, make_step, resolve_device

__all__ = ["training_throughput", "benchmark_table", "scoring_seconds", "scoring_table"]


def _check_stacks(stacks: Sequence[int]) -> list:
    """Stack sizes (seeds trained at once) as a list of ints, all checked before anything is timed:
    a stack of 0 seeds has nothing to time (it failed with an IndexError)."""
    stacks = list(stacks)
    if not stacks:
        raise ConfigError("name at least one stack size")
    return [require_int("a stack size", n, 1) for n in stacks]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_throughput(preset: str, scale: str = "paper", device: str = "auto", steps: int = 30,
                        warmup: int = 5, n_seeds: int = 1, cuda_graphs: bool = False, repeats: int = 1) -> dict:
    """Time ``steps`` training steps of ``n_seeds`` stacked seeds of ``preset`` (after ``warmup``),
    ``repeats`` times in a row (windows over the same batches, training on).

    Returns ``dict(groups_per_s, observations_per_s, seconds_per_step)`` of the median window and
    ``groups_per_s_min``, ``groups_per_s_max`` of the slowest and fastest, counting every seed's
    groups (a stack of S seeds trains S x batch_size groups per step). ``cuda_graphs``: the step
    replayed from CUDA graphs (:class:`cxvae.train.GraphedStep`, batches padded to multiples of 8
    positions); three untimed passes over the timed batches capture every shape first.
    """
    if repeats < 1 or steps < 1:
        raise ConfigError(f"the benchmark needs steps >= 1 and repeats >= 1; got steps={steps}, repeats={repeats}")
    _check_stacks([n_seeds])
    cfg = make_run_config(preset, scale=scale, device=device)
    dev = resolve_device(device)
    data = generate_exam_scores(cfg.train.batch_size * (steps + warmup), seed=0).to(dev)
    stack = SeedStack(cfg.model, range(n_seeds), dev)
    opt, critic_opt, _ = make_optimisers(stack, cfg.train, total_steps=10 * (steps + warmup), cuda_graphs=cuda_graphs)
    step_fn = make_step(stack, opt, critic_opt, cfg.train, cuda_graphs)
    batches = list(GroupBatchLoader(data, cfg.train.batch_size, seed=0, k_multiple=8 if cuda_graphs else 1))
    untimed = batches * 3 + batches[:warmup] if cuda_graphs else batches[:warmup]
    timed = batches if cuda_graphs else batches[warmup:]
    for i, batch in enumerate(untimed):
        step_fn(batch, i)
    windows, step = [], len(untimed)
    for _ in range(repeats):
        _sync(dev)
        start = time.perf_counter()
        for batch in timed:
            step_fn(batch, step)
            step += 1
        _sync(dev)
        windows.append(time.perf_counter() - start)
    seconds = float(np.median(windows))
    n_groups, n_obs = (n_seeds * sum(getattr(b, key) for b in timed) for key in ("n_groups", "n_observations"))
    return dict(groups_per_s=n_groups / seconds, observations_per_s=n_obs / seconds,
                seconds_per_step=seconds / len(timed), groups_per_s_min=n_groups / max(windows),
                groups_per_s_max=n_groups / min(windows))


def benchmark_table(presets: Sequence[str], scale: str = "paper", device: str = "auto", steps: int = 30,
                    seeds: int = 100, stacks: Sequence[int] = (1, 10), cuda_graphs: bool = False,
                    repeats: int = 1) -> pd.DataFrame:
    """One row per preset and stack size: throughput and the estimated training time of ``seeds``
    seeds (``cuda_graphs`` and ``repeats`` as in :func:`training_throughput`; with ``repeats > 1``
    the median window, and the slowest and fastest window's groups/s in two more columns)."""
    stacks = _check_stacks(stacks)
    seeds = require_int("seeds (of the cost estimate)", seeds, 1)
    rows = []
    for preset in presets:
        cfg = make_run_config(preset, scale=scale, device=device)
        for n_seeds in stacks:
            t = training_throughput(preset, scale=scale, device=device, steps=steps, n_seeds=n_seeds,
                                    cuda_graphs=cuda_graphs, repeats=repeats)
            run_seconds = cfg.train.epochs * cfg.data.n_train / t["groups_per_s"]  # per seed
            spread = dict(slowest=round(t["groups_per_s_min"]), fastest=round(t["groups_per_s_max"])) if repeats > 1 else {}
            rows.append(dict(preset=preset, stack=n_seeds, device=str(resolve_device(device)), cuda_graphs=cuda_graphs,
                             threads=torch.get_num_threads(), groups_per_s=round(t["groups_per_s"]), **spread,
                             observations_per_s=round(t["observations_per_s"]),
                             train_minutes_per_seed=round(run_seconds / 60, 2),
                             train_hours_for_seeds=round(seeds * run_seconds / 3600, 2)))
    return pd.DataFrame(rows)


def scoring_seconds(preset: str, scale: str = "paper", device: str = "auto", n_seeds: int = 1) -> float:
    """Wall seconds per run of scoring ``n_seeds`` (untrained, freshly initialised) models of
    ``preset`` on the scale's holdout groups, all at once (one model: the plain path)."""
    _check_stacks([n_seeds])
    cfg = make_run_config(preset, scale=scale, device=device)
    dev = resolve_device(device)
    splits = {k: v.to(dev) for k, v in make_splits(cfg.data).items()}
    scorers = []
    for seed in range(n_seeds):
        torch.manual_seed(seed)
        scorers.append(ModelScorer(GroupVAE(cfg.model).to(dev), n_samples=cfg.eval.iwae_samples, seed=seed))
    _sync(dev)
    start = time.perf_counter()
    score_many(scorers, cfg, splits)
    _sync(dev)
    return (time.perf_counter() - start) / n_seeds


def scoring_table(presets: Sequence[str], scale: str = "paper", device: str = "auto",
                  stacks: Sequence[int] = (1, 10)) -> pd.DataFrame:
    """One row per preset and stack size: scoring seconds per run."""
    stacks = _check_stacks(stacks)
    return pd.DataFrame([dict(preset=p, stack=n, device=str(resolve_device(device)), threads=torch.get_num_threads(),
                              score_seconds_per_run=round(scoring_seconds(p, scale, device, n), 2))
                         for p in presets for n in stacks])
