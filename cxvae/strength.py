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
import torch

from .config import DataConfig
from .engine import check_engine, ray_session, run_on_ray
from .oracle import single_observation_floor  # noqa: F401  (part of this module's API)
from .runner import compare_to, format_seeds, plan_sweep, run_oracle, summarise, sweep, sweep_configs
from .store import ORACLE_CSV, RUNS_CSV, read_oracle, read_runs

__all__ = ["STRENGTHS", "SMOKE_STRENGTHS", "MAIN_PRESETS", "BASELINES", "strength_folder", "strength_overrides",
           "strength_study",
           "read_strength_study", "summarise_strength", "strength_command",
           "single_observation_floor", "translation_checks", "first_strength_all_better"]

STRENGTHS = (0.0, 0.125, 0.25, 0.375, 0.5, 0.75, 1.0)  # 7 settings, unconfounded to the paper's data
SMOKE_STRENGTHS = (0.0, 0.5, 1.0)
MAIN_PRESETS = ("ml-vae", "gvae", "gvae-ad", "cxvae")
BASELINES = MAIN_PRESETS[:3]


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
                   command: Optional[str] = None, overrides: Optional[dict] = None, engine: str = "local",
                   address: Optional[str] = None, task_cpus: int = 1,
                   task_gpus: Optional[float] = None, score_together: bool = False,
                   cuda_graphs: bool = False) -> pd.DataFrame:
    """Sweep ``presets`` x ``seeds`` and score the oracle at every setting of ``strengths``.

    Settings run in the order given; each one's folder is a resumable sweep (a rerun trains only
    the missing runs). ``overrides`` apply to every setting (as in :func:`~cxvae.runner.sweep`).
    ``engine='ray'`` (``address``, ``task_cpus``, ``task_gpus`` as in :func:`~cxvae.runner.sweep`)
    submits the blocks of every setting at once, as Ray tasks (:mod:`cxvae.engine`).
    ``score_together`` and ``cuda_graphs`` go to every setting's sweep (the local engine; on a GPU).
    Returns :func:`read_strength_study` of ``out``.
    """
    check_engine(engine, address, task_cpus, task_gpus)
    strengths = list(strengths)
    for strength in strengths:  # all of them, before any setting's folder is made (a ConfigError)
        DataConfig(group_strength=strength)
    if engine == "ray":
        seeds = list(seeds)
        configs = [sweep_configs(presets, seeds, scale, device, strength_overrides(c, overrides), stack) for c in strengths]
        with ray_session(address):
            plans = [plan_sweep(conf, seeds, strength_folder(out, c), command or strength_command(
                strengths, presets, format_seeds(seeds).replace(" ", ""), scale, str(out), stack), stack, torch.device("cpu"))
                for c, conf in zip(strengths, configs)]
            run_on_ray(plans, task_cpus=task_cpus, task_gpus=task_gpus, progress=progress)
    for strength in strengths:
        folder = strength_folder(out, strength)
        overrides_here = strength_overrides(strength, overrides)
        if engine == "local":
            sweep(presets, seeds, scale=scale, device=device, out=folder, progress=progress, overrides=overrides_here,
                  stack=stack, command=command, score_together=score_together, cuda_graphs=cuda_graphs)
        if not (folder / ORACLE_CSV).exists():
            run_oracle(scale=scale, out=folder, overrides=overrides_here)
    return read_strength_study(out)


def read_strength_study(out) -> pd.DataFrame:
    """Every run and oracle row under ``out``, with a ``group_strength`` column (oracle: ``seed == -1``)."""
    tables = []
    for folder in sorted(Path(out).glob("c=*")):
        strength = float(folder.name[2:])
        if (folder / RUNS_CSV).exists():  # every row checked (cxvae.store.inspect_runs)
            tables.append(read_runs(folder).assign(group_strength=strength))
        oracle = read_oracle(folder)
        if oracle is not None:
            tables.append(oracle.assign(group_strength=strength))
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


def strength_command(strengths: Sequence[float], presets: Sequence[str], seeds: str, scale: str, out: str,
                     stack: int) -> str:
    """The exact shell command that (re)makes a strength study folder."""
    return (f"cxvae strength --strengths {','.join(map(str, strengths))} --presets {','.join(presets)} "
            f"--seeds {seeds} --scale {scale} --stack {stack} --out {out}")


def _verdicts_at(summary: pd.DataFrame, strength: float, model: str, baselines: Sequence[str]) -> pd.Series:
    """:func:`~cxvae.runner.compare_to` verdicts of ``model`` against each baseline at one strength."""
    at = summary[summary.group_strength == strength].drop(columns="group_strength")
    return compare_to(at, model, list(baselines)).set_index("baseline").verdict


def translation_checks(summary: pd.DataFrame, model: str = "cxvae",
                       baselines: Sequence[str] = BASELINES) -> pd.DataFrame:
    """The checks of claim C6 on translation error, one row per baseline (written down before the
    study ran; chapter 10 states them):

    * ``CxVAE not better at c = 0``: at the smallest strength (c = 0), ``model`` is not ``better``
      than the baseline (their intervals overlap, or the baseline wins: a baseline that *beats*
      ``model`` there passes too);
    * ``CxVAE better at c = 1``: at c = 1, ``model`` is ``better`` than the baseline;
    * ``baseline excess grows``: the baseline's median excess over the oracle is larger at c = 1
      than at c = 0.

    C6 is our hypothesis (the paper's section 6.3 is only a heading in our copy), and these checks
    are ours; the column names say what each one tests.

    ``summary`` is :func:`summarise_strength` output holding ``translation_mse``, the oracle, and
    the strengths 0 and 1.
    """
    s = summary[summary.metric == "translation_mse"]
    lo, hi = s.group_strength.min(), s.group_strength.max()
    if lo != 0.0 or hi != 1.0:
        raise ValueError(f"the checks need the strengths 0 and 1; the summary spans {lo}-{hi}")
    verdict = {c: _verdicts_at(s, c, model, baselines) for c in (lo, hi)}
    med = s.pivot(index="preset", columns="group_strength", values="median")
    excess = med.loc[list(baselines)].sub(med.loc["oracle"], axis=1)
    return pd.DataFrame({"CxVAE not better at c = 0": verdict[lo].ne("better"),
                         "CxVAE better at c = 1": verdict[hi].eq("better"),
                         "baseline excess grows": excess[hi] > excess[lo]}).loc[list(baselines)]


def budget_verdicts(summary: pd.DataFrame, paper_summary: pd.DataFrame, metrics: Sequence[str],
                    model: str = "cxvae", baselines: Sequence[str] = BASELINES) -> pd.DataFrame:
    """How ``model``'s verdicts against the baselines depend on the scale (the study scale: 1/16 of
    the paper scale's training steps, smaller probes and fewer importance samples): per metric,
    the :func:`~cxvae.runner.compare_to` verdicts against each baseline at the study scale
    (``summary``, :func:`summarise_strength` output) at c = 0 and c = 1, and at the paper scale
    (``paper_summary``, :func:`~cxvae.runner.summarise` of the paper-scale study, c = 1), written
    as ``'better 3/3'``, ``'worse 2/3, overlap 1/3'`` and so on, with ``model``'s median beside them.
    Returns one row per metric."""
    def counted(verdicts: pd.Series) -> str:
        order = [v for v in ("better", "overlap", "worse") if (verdicts == v).any()]
        return ", ".join(f"{v} {int((verdicts == v).sum())}/{len(verdicts)}" for v in order)

    rows = {}
    for metric in metrics:
        row = {}
        for label, table in (("study scale, c = 0", summary[summary.group_strength == 0.0]),
                             ("study scale, c = 1", summary[summary.group_strength == 1.0]),
                             ("paper scale, c = 1", paper_summary)):
            table = table[table.metric == metric].drop(columns="group_strength", errors="ignore")
            verdicts = compare_to(table, model, list(baselines)).set_index("baseline").verdict
            row[label] = counted(verdicts.loc[list(baselines)])
            row[f"{label}: {model}"] = float(table.set_index("preset").loc[model, "median"])
        rows[metric] = row
    return pd.DataFrame(rows).T


def first_strength_all_better(summary: pd.DataFrame, metric: str = "translation_mse", model: str = "cxvae",
                              baselines: Sequence[str] = BASELINES) -> Optional[float]:
    """The smallest strength from which on ``model`` is ``better`` than every baseline on ``metric``
    at every larger strength too (None if never)."""
    s = summary[summary.metric == metric]
    strengths = sorted(s.group_strength.unique())
    wins = [bool(_verdicts_at(s, c, model, baselines).eq("better").all()) for c in strengths]
    first = None
    for c, win in zip(strengths, wins):
        first = (first if first is not None else c) if win else None
    return first
