"""The relative strength of the group and instance components (paper section 6.3).

The paper's section 6.3 has only its heading in the text we have, so we define the study here.
A family of exam-scores data sets scales the group component by ``c`` (``group_strength``)::

    x_k = c * 2 mu + (c * sigma^2 + 1) v_k + eps_k        (c = 1: the paper's data, section 3.1)

At ``c = 0`` the group factor has no effect and one observation reveals its instance factor
(``x_k = v_k + eps_k``): nothing is confounded. As ``c`` grows the group shifts and scales every
observation of the group, so one observation can no longer tell ``v_k`` from ``(mu, sigma)``.
Every setting has its own exact oracle (:class:`~cxvae.oracle.ExamScoresOracle` with the same
``group_strength``), so each model is measured against the best possible answer at that setting.

``cxvae strength`` runs the presets at every setting (one :func:`~cxvae.runner.sweep` folder per
setting, resumable) and :func:`read_strength_study` / :func:`summarise_strength` gather them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional, Sequence

import pandas as pd

from .runner import ORACLE_CSV, RUNS_CSV, run_oracle, summarise, sweep

__all__ = ["STRENGTHS", "strength_folder", "strength_overrides", "strength_study", "read_strength_study",
           "summarise_strength"]

STRENGTHS = (0.0, 0.125, 0.25, 0.375, 0.5, 0.75, 1.0)  # 7 settings, unconfounded to the paper's data


def strength_folder(out, strength: float) -> Path:
    """The sweep folder of one setting: ``out/c=0.333``."""
    return Path(out) / f"c={strength:.3f}"


def strength_overrides(strength: float, overrides: Optional[dict] = None) -> dict:
    """Config overrides for one setting: ``overrides`` (per section, e.g. ``{'train': {...}}``)
    with the data's and the true decoder's ``group_strength`` set to ``strength``."""
    merged = {section: dict(values) for section, values in (overrides or {}).items()}
    for section in ("data", "model"):
        merged.setdefault(section, {})["group_strength"] = float(strength)
    return merged


def strength_study(strengths: Iterable[float], presets: Sequence[str], seeds: Sequence[int], scale: str = "study",
                   out="results/strength", device: str = "auto", stack: int = 1, progress: bool = True,
                   command: Optional[str] = None, overrides: Optional[dict] = None) -> pd.DataFrame:
    """Sweep ``presets`` x ``seeds`` and score the oracle at every setting of ``strengths``.

    Settings run in the order given; each one's folder is a resumable sweep (a rerun trains only
    the missing runs). ``overrides`` apply to every setting (as in :func:`~cxvae.runner.sweep`).
    Returns :func:`read_strength_study` of ``out``.
    """
    for strength in strengths:
        folder = strength_folder(out, strength)
        overrides_here = strength_overrides(strength, overrides)
        sweep(presets, seeds, scale=scale, device=device, out=folder, progress=progress, overrides=overrides_here,
              stack=stack, command=command)
        if not (folder / ORACLE_CSV).exists():
            run_oracle(scale=scale, out=folder, overrides=overrides_here)
    return read_strength_study(out)


def read_strength_study(out) -> pd.DataFrame:
    """Every run and oracle row under ``out``, with a ``group_strength`` column (oracle: ``seed == -1``)."""
    tables = []
    for folder in sorted(Path(out).glob("c=*")):
        strength = float(folder.name[2:])
        for name in (RUNS_CSV, ORACLE_CSV):
            if (folder / name).exists():
                tables.append(pd.read_csv(folder / name).assign(group_strength=strength))
    if not tables:
        raise FileNotFoundError(f"{out} holds no strength settings; run `cxvae strength --out {out}` first")
    return pd.concat(tables, ignore_index=True)


def summarise_strength(table: pd.DataFrame, metrics: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """:func:`~cxvae.runner.summarise` at every setting: columns ``group_strength, preset, metric,
    better, n_seeds, median, lo, hi`` (the oracle has ``n_seeds == 0``)."""
    parts = []
    for strength, rows in table.groupby("group_strength"):
        runs, oracle = rows[rows.preset != "oracle"], rows[rows.preset == "oracle"]
        kwargs = {} if metrics is None else dict(metrics=metrics)
        parts.append(summarise(runs, oracle if len(oracle) else None, **kwargs).assign(group_strength=strength))
    out = pd.concat(parts, ignore_index=True)
    return out[["group_strength"] + [c for c in out.columns if c != "group_strength"]]
