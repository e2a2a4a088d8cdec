"""Medians over seeds with bootstrap intervals, and the verdicts they give (the paper's tables).

:func:`summarise` turns a study's runs into one row per preset and metric (median over seeds and
a 95% bootstrap interval of it); :func:`compare_to` calls a model ``better`` or ``worse`` than
another only where the two intervals do not overlap. The book's chapters and
:mod:`cxvae.report` read both (through :mod:`cxvae.runner`, which re-exports them).
"""
from __future__ import annotations

import zlib
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from .metrics import METRICS

__all__ = ["summarise", "compare_to", "mean_interval"]


def mean_interval(values, level: float = 0.95) -> tuple:
    """``(mean, lo, hi)`` of ``values (n,)`` with the ``level`` Student-t interval of the mean,
    ``mean ± t_{(1 + level) / 2, n - 1} sd / sqrt(n)`` (NaN ends for fewer than 2 values): how the
    book reports a difference paired over splits."""
    from scipy import stats

    d = np.asarray(values, dtype=float)
    n = len(d)
    half = stats.t.ppf((1 + level) / 2, n - 1) * d.std(ddof=1) / np.sqrt(n) if n > 1 else np.nan
    return float(d.mean()) if n else np.nan, float(d.mean() - half) if n else np.nan, float(d.mean() + half) if n else np.nan


def _bootstrap_median_interval(values: np.ndarray, n_boot: int, rng: np.random.Generator, level: float = 0.95):
    if len(values) < 2:
        return float("nan"), float("nan")
    medians = np.median(rng.choice(values, size=(n_boot, len(values)), replace=True), axis=1)
    return tuple(np.quantile(medians, [(1 - level) / 2, (1 + level) / 2]))


def summarise(runs: pd.DataFrame, oracle: Optional[pd.DataFrame] = None, metrics: Sequence[str] = tuple(METRICS),
              n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """The paper's table: per preset and metric, the median over seeds and a 95% bootstrap interval
    of the median (percentile method, ``n_boot`` resamples, seeded). Each (preset, metric) draws
    its resamples from its own stream, seeded by ``seed`` and its names, so an interval depends on
    that preset's runs alone: adding another preset's seeds does not move it.

    Returns a long DataFrame with columns ``preset, metric, better, n_seeds, median, lo, hi``; the
    oracle (if given) is a row with ``n_seeds = 0`` and ``lo = hi = median``. A run with NaN for a
    metric (``v_probe_mse`` of a committed run whose model was not kept, see
    :func:`cxvae.runner.rescore`) does not count for that metric: ``n_seeds`` is per metric.
    """
    rows = []
    metrics = [m for m in metrics if m in runs.columns]  # a folder older than a metric lacks its column
    for preset, group in runs.groupby("preset", sort=False):
        for metric in metrics:
            values = group[metric].dropna().to_numpy(dtype=float)  # NaN: a run this metric could not score
            if not len(values):
                continue
            rng = np.random.default_rng([seed, zlib.crc32(f"{preset}/{metric}".encode())])
            lo, hi = _bootstrap_median_interval(values, n_boot, rng)
            rows.append(dict(preset=preset, metric=metric, better=METRICS[metric], n_seeds=len(values),
                             median=float(np.median(values)), lo=lo, hi=hi))
    if oracle is not None and len(oracle):
        for metric in [m for m in metrics if m in oracle.columns]:
            value = float(oracle[metric].iloc[0])
            rows.append(dict(preset="oracle", metric=metric, better=METRICS[metric], n_seeds=0,
                             median=value, lo=value, hi=value))
    return pd.DataFrame(rows)


def compare_to(summary: pd.DataFrame, model: str = "cxvae", baselines: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """Does ``model`` beat each baseline on each metric? One row per (baseline, metric) with both
    medians and ``verdict``: ``'better'`` / ``'worse'`` when the 95% intervals of the medians do not
    overlap (in the metric's good direction), ``'overlap'`` otherwise."""
    s = summary.set_index(["preset", "metric"])
    if baselines is None:
        baselines = [p for p in summary.preset.unique() if p not in (model, "oracle")]
    rows = []
    for base in baselines:
        for metric, better in METRICS.items():
            if (model, metric) not in s.index or (base, metric) not in s.index:
                continue
            a, b = s.loc[(model, metric)], s.loc[(base, metric)]
            below, above = a.hi < b.lo, a.lo > b.hi  # the model's interval lies wholly below/above
            if not (below or above):
                verdict = "overlap"
            else:
                verdict = "better" if below == (better == "lower") else "worse"
            rows.append(dict(model=model, baseline=base, metric=metric, better=better,
                             model_median=a["median"], baseline_median=b["median"], verdict=verdict))
    return pd.DataFrame(rows)
