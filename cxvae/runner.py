"""Experiments: train-and-score many (preset, seed) runs, the oracle row, and the summary table.

A sweep writes into a study folder (e.g. ``results/paper/``), whose files and their format
:mod:`cxvae.store` owns: ``runs.csv`` (one row per run: every metric of
:data:`cxvae.metrics.METRICS`, times, final losses and provenance), ``oracle.csv``,
``config.json``, ``histories/`` and ``models/``; :func:`posterior_gap_study` adds
``posterior_gap.csv`` (each model's group posterior against the exact one,
:func:`cxvae.bias.group_posterior_gap`).

Each run is saved whole and atomically, and only if no sound row of it is there yet
(:func:`cxvae.store.save_run`), so a killed sweep loses at most the run in progress, rerunning it
skips the finished rows, and several sweeps can share a folder. Every row is checked when read: a
damaged row does not count, so a sweep runs it again (:func:`cxvae.store.inspect_runs`). A sweep
trains in this process or, with ``engine='ray'``, as Ray tasks whose results this process writes
(:mod:`cxvae.engine`).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from . import __version__
from .config import ConfigError, RunConfig, check_seed, make_run_config
from .evaluation import ModelScorer
from .metrics import (METRICS, RECON_DRAWS, ProbeConfig, evaluate_many, sampled_masked_mse, u_probe_mse,
                      v_probe_mse)
from .oracle import ExamScoresOracle
from .summary import compare_to, summarise  # re-exported: the chapters call runner.summarise
from .store import (CONFIG_JSON, HISTORIES, LATER_METRICS, MODELS, ORACLE_CSV, RUNS_CSV, append_row, config_differences,
                    finished, fs_errors, history_path, inspect_runs, locked, make_folder, model_path, open_study,
                    read_config, read_study, read_table, replace_csv, replace_text, save_run, write_csv, write_json,
                    write_table)
from .train import make_splits, resolve_device, train_seeds

__all__ = ["parse_seeds", "format_seeds", "provenance", "code_commit", "append_row", "score", "sweep", "run_oracle", "summarise",
           "compare_to", "read_study", "plan_sweep", "sweep_configs", "SweepPlan", "study_command",
           "probe_config", "merge_study", "short_of_seeds", "made_on_cpu_only", "rescore", "LEGACY_PROBES", "RESCORABLE", "closed_form_probes", "with_rescored_probe", "run_history",
           "study_provenance", "made_by", "PAPER_SEEDS", "score_many", "scored", "score_and_save"]
PAPER_SEEDS = 100  # random initialisations per model in the paper's Figures 4 and 5


def parse_seeds(text: str) -> List[int]:
    """``'0-99'`` -> 0..99, ``'0,3,7'`` -> [0, 3, 7], ``'5'`` -> [5]; ranges and lists combine."""
    seeds: List[int] = []
    try:
        for part in str(text).split(","):
            part = part.strip()
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                if int(hi) < int(lo):
                    raise ValueError
                seeds.extend(range(int(lo), int(hi) + 1))
            elif part:
                seeds.append(int(part))
    except ValueError:
        raise ConfigError(f"cannot read seeds {text!r}; use e.g. '0-99', '0,1,2' or '7'") from None
    if not seeds:
        raise ConfigError("no seeds given")
    return sorted(set(seeds))


def format_seeds(seeds: Iterable[int]) -> str:
    """The inverse of :func:`parse_seeds`: ``[0, 1, 2, 5, 7, 8]`` -> ``'0-2, 5, 7-8'``."""
    out: List[str] = []
    for s in sorted(set(int(s) for s in seeds)):
        if out and out[-1][1] == s - 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in out)


def _git_commit() -> str:
    if os.environ.get("CXVAE_GIT_COMMIT"):  # a copy of the tree without its .git (e.g. on a lent GPU machine)
        given = os.environ["CXVAE_GIT_COMMIT"].strip()
        full_hash = len(given) > 12 and all(c in "0123456789abcdef" for c in given.lower())
        return given[:12] if full_hash else given  # the length git rev-parse --short=12 gives
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=10)
        # "dirty" means the library's code differs from the commit; results being written do not count
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":/cxvae", ":/pyproject.toml"],
                               capture_output=True, text=True, cwd=Path(__file__).resolve().parent,
                               timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@functools.lru_cache(maxsize=None)
def code_commit() -> str:
    """The commit of the code this process runs (``'<12 hex>'``, ``'<12 hex>-dirty'`` or
    ``'unknown'``), read once, on first use, and kept: a long sweep, which asks for it before its
    first run, must not record a commit made (or files edited) after it started. Reading it
    lazily, not at import, keeps ``import cxvae.cli`` (and ``cxvae --help``) free of git processes."""
    return _git_commit()


def provenance(device: torch.device) -> Dict[str, str]:
    """Library version, git commit (:func:`code_commit`: read on the process's first call),
    torch/python versions and the device's name."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.machine()})"
    return dict(version=__version__, git_commit=code_commit(), torch=torch.__version__,
                python=platform.python_version(), device=name)


def probe_config(cfg: RunConfig) -> ProbeConfig:
    """The probes' fixed budget of a run config (``cfg.eval``) as a :class:`ProbeConfig`."""
    return ProbeConfig(steps=cfg.eval.probe_steps, max_train=cfg.eval.probe_max_train, seed=cfg.eval.probe_seed)


def score(scorer, cfg: RunConfig, splits) -> Dict[str, float]:
    """Every metric of ``scorer`` on the holdout split of ``splits`` (probes trained on ``train``)."""
    return score_many([scorer], cfg, splits)[0]


def score_many(scorers: Sequence, cfg: RunConfig, splits) -> List[Dict[str, float]]:
    """:func:`score` for several scorers at once, their probes trained side by side
    (:func:`cxvae.metrics.evaluate_many`; equal to scoring each alone up to rounding). The probes
    train on the device that holds ``splits``."""
    return evaluate_many(scorers, splits["train"], splits["holdout"], translation_seed=cfg.eval.translation_seed,
                         probe=probe_config(cfg), probe_device=splits["holdout"].x.device)


def sweep(presets: Sequence[str], seeds: Iterable[int], scale: str = "smoke", device: str = "auto",
          out="results/sweep", progress: bool = True, command: Optional[str] = None,
          overrides: Optional[Dict] = None, stack: int = 1, score_together: bool = False,
          cuda_graphs: bool = False, engine: str = "local", address: Optional[str] = None,
          task_cpus: int = 1, task_gpus: Optional[float] = None) -> pd.DataFrame:
    """Train and score every (preset, seed) not yet in ``out/runs.csv``; returns the whole table.

    All presets share one data sample (the scale's ``DataConfig``), so their scores are paired.
    ``overrides`` may hold ``model``/``train``/``data``/``eval`` dicts applied to every preset.
    ``stack`` seeds of a preset are trained at once (:func:`~cxvae.train.train_seeds`), in blocks
    of the pending seeds taken in order; each run is scored and saved as soon as its block ends.
    ``score_together``: score a block's runs at once (:func:`score_many`), meant for a GPU, where
    one run's tiny probe steps leave it idle; on a CPU it is no faster (``cxvae bench --score``).
    ``cuda_graphs``: train with the step replayed from CUDA graphs (CUDA only; :func:`~cxvae.train.train_seeds`).

    ``engine``: ``'local'`` trains the blocks one after another in this process; ``'ray'`` runs
    each block as a Ray task (:mod:`cxvae.engine`) on the cluster at ``address`` (``'auto'`` or
    ``HOST:PORT``; none: a local Ray on this machine), each task holding ``task_cpus`` CPUs and
    ``task_gpus`` GPUs (default: 1 with a CUDA device, else 0), the rows written here as results come.
    """
    from . import engine as engines

    engines.check_engine(engine, address, task_cpus, task_gpus)
    # everything the user gave is checked before the folder and its config.json record the command
    seeds = list(seeds)
    configs = sweep_configs(presets, seeds, scale, device, overrides, stack)
    command = command or f"cxvae sweep --presets {','.join(presets)} --scale {scale}"
    if engine == "ray":  # the device is the workers': it need not exist on this machine
        with engines.ray_session(address):
            plan = plan_sweep(configs, seeds, out, command, stack, torch.device("cpu"))
            engines.run_on_ray([plan], cuda_graphs=cuda_graphs, together=score_together, task_cpus=task_cpus,
                               task_gpus=task_gpus, progress=progress)
        return _sound_runs(plan.runs_path)
    dev = resolve_device(device)
    if cuda_graphs and dev.type != "cuda":
        raise ConfigError(f"cuda_graphs needs a CUDA device; this sweep is on {dev} (drop --cuda-graphs)")
    plan = plan_sweep(configs, seeds, out, command, stack, dev)
    out, runs_path, splits = plan.out, plan.runs_path, plan.splits
    prov = provenance(dev)
    bar = tqdm(total=plan.n_runs, desc="sweep", disable=not progress or not plan.n_runs)
    for preset, block in plan.blocks:
        block = [s for s in block if (preset, s) not in finished(runs_path)]
        if not block:  # another sweep sharing the folder did them
            continue
        results = train_seeds(plan.config(preset, block[0]), block, splits, progress=False, cuda_graphs=cuda_graphs)
        score_and_save(results, splits, out, prov, together=score_together)
        bar.update(len(results))
    bar.close()
    return _sound_runs(runs_path)


def _sound_runs(runs_path: Path) -> pd.DataFrame:
    """The sound rows of ``runs_path`` (:func:`cxvae.store.inspect_runs`); empty without the file."""
    return inspect_runs(runs_path).runs if runs_path.exists() else pd.DataFrame()


@dataclass
class SweepPlan:
    """What a sweep has left to do in its folder ``out``: the ``blocks`` (a preset and the seeds
    trained at once) of the runs that ``runs_path`` lacks, in order; ``configs`` holds each
    preset's resolved configuration (seed 0), ``splits`` the shared data on the sweep's device
    (None when nothing is left)."""

    out: Path
    runs_path: Path
    configs: Dict[str, RunConfig]
    blocks: List[Tuple[str, List[int]]]
    splits: Optional[Dict]

    @property
    def n_runs(self) -> int:
        return sum(len(seeds) for _, seeds in self.blocks)

    def config(self, preset: str, seed: int) -> RunConfig:
        """The run config of ``preset`` with ``seed`` (the first seed of a block names its stack)."""
        return dataclasses.replace(self.configs[preset], seed=seed)


def sweep_configs(presets: Sequence[str], seeds: Sequence[int], scale: str, device: str,
                  overrides: Optional[Dict] = None, stack: int = 1) -> Dict[str, RunConfig]:
    """Each preset's resolved configuration (seed 0) for a sweep, after checking ``seeds`` and
    ``stack`` (a ConfigError before anything is written)."""
    if stack < 1:
        raise ConfigError(f"stack must be at least 1; got {stack}")
    for seed in seeds:
        check_seed(seed)
    return {p: make_run_config(p, seed=0, scale=scale, device=device, **(overrides or {})) for p in presets}


def plan_sweep(configs: Dict[str, RunConfig], seeds: Sequence[int], out, command: str, stack: int,
               device: torch.device) -> SweepPlan:
    """Make the folder ``out``, record ``command`` and the presets' ``configs`` in its config.json
    (refusing another scale than its runs' or another configuration of a preset already there),
    set its damaged rows aside (:func:`cxvae.store.open_study`) and plan the runs it lacks: per
    preset, its pending ``seeds`` in blocks of ``stack``. The data are made on ``device``."""
    out = Path(out)
    open_study(out, configs, command)
    runs_path = out / RUNS_CSV
    done = finished(runs_path)
    blocks = []
    for preset in configs:
        pending = [s for s in seeds if (preset, s) not in done]
        blocks += [(preset, pending[start:start + stack]) for start in range(0, len(pending), stack)]
    splits = {k: v.to(device) for k, v in make_splits(next(iter(configs.values())).data).items()} if blocks else None
    return SweepPlan(out, runs_path, configs, blocks, splits)


def scored(results, splits, together: bool = False):
    """Score trained runs on the holdout groups, yielding ``(result, metrics, score_seconds)`` for
    each as soon as it is scored. ``together``: all runs at once (:func:`score_many`), each run's
    ``score_seconds`` then being the shared time divided by the number of runs."""
    for part in [results] if together else [[r] for r in results]:
        start = time.perf_counter()
        scorers = [ModelScorer(r.model, n_samples=r.config.eval.iwae_samples, seed=r.config.seed) for r in part]
        metrics = score_many(scorers, part[0].config, splits)
        seconds = (time.perf_counter() - start) / len(part)
        for result, m in zip(part, metrics):
            yield result, m, seconds


def score_and_save(results, splits, out: Path, prov: Dict[str, str], together: bool = False) -> None:
    """Score trained runs (:func:`scored`) and save each run's row, curve and model as soon as it
    is scored (:func:`cxvae.store.save_run`: not if another sweep saved the run meanwhile)."""
    for result, m, seconds in scored(results, splits, together):
        save_run(out, result, m, seconds, prov)


def run_oracle(scale: str = "smoke", out="results/sweep", noise_std: Optional[float] = None,
               overrides: Optional[Dict] = None) -> Dict[str, float]:
    """Score the exact :class:`~cxvae.oracle.ExamScoresOracle` on the scale's data; write oracle.csv.

    The oracle's codes are exact posterior means (group: ``(E[mu|x], E[|sigma| |x])``, instance:
    ``E[v_k|x]``) and go through the same probes as learned codes; its likelihood is exact.
    """
    out = make_folder(out)
    cfg = make_run_config("cxvae", scale=scale, device="cpu", **(overrides or {}))
    splits = make_splits(cfg.data)
    t0 = time.perf_counter()
    oracle = ExamScoresOracle(noise_std=noise_std if noise_std is not None else cfg.data.noise_std,
                              group_strength=cfg.data.group_strength)
    metrics = score(oracle, cfg, splits)
    row = dict(preset="oracle", seed=-1, scale=scale, **metrics, score_seconds=round(time.perf_counter() - t0, 2),
               **provenance(torch.device("cpu")))
    write_csv(pd.DataFrame([row]), out / ORACLE_CSV)
    return metrics


def _sweep_pairs(command: str) -> Optional[set]:
    """The (preset, seed) pairs a recorded ``cxvae sweep`` command makes; None for other commands."""
    words = shlex.split(command)
    if words[:2] != ["cxvae", "sweep"] or "--presets" not in words or "--seeds" not in words:
        return None
    presets = words[words.index("--presets") + 1].split(",")
    return {(p, s) for p in presets for s in parse_seeds(words[words.index("--seeds") + 1])}


def _with_out(command: str, out: str) -> str:
    words = shlex.split(command)
    if "--out" in words:
        words[words.index("--out") + 1] = out
    return " ".join(shlex.quote(w) for w in words)


def merge_study(src, dest, replace: bool = False) -> pd.DataFrame:
    """Bring the finished runs of study folder ``src`` into ``dest`` and return the rows added.

    With ``replace``, ``src`` holds runs retrained on purpose (``scripts/paper_study_gpu.py
    --redo-unkept``: runs whose model ``dest`` did not keep) and its rows *replace* ``dest``'s rows
    of the same (preset, seed), with their curves and models; ``src`` may then lack the legacy
    columns of :data:`LEGACY_PROBES` (its runs were scored by the closed-form probes: those stay
    empty), and every other row of ``dest`` is kept as it was.

    ``src`` is a copy of ``dest`` that sweeps extended elsewhere (on a lent GPU, say, whose tables
    and curves come back packed). Rows of ``src/runs.csv`` whose (preset, seed) ``dest`` lacks are
    appended exactly as written there, and ``dest``'s own rows stay byte for byte; their curves
    (``histories/``) and models (``models/``, where ``src`` has them) are copied. Each recorded
    ``cxvae sweep`` command of ``src`` whose runs are now all in ``dest`` is added to
    ``dest/config.json`` with its ``--out`` naming ``dest``; a command cut off before its last
    block finished is left out. Refuses (:class:`ConfigError`) when either ``runs.csv`` is empty
    or has a damaged row (:func:`cxvae.store.inspect_runs`; ``cxvae check --set-aside`` moves them
    aside), the folders hold other scales, their tables have other columns or a preset is
    configured differently (its device aside), and when an added run has no curve.
    """
    src, dest = Path(src), Path(dest)
    for folder in (src, dest):
        if not (folder / RUNS_CSV).exists():
            raise FileNotFoundError(f"{folder / RUNS_CSV} does not exist")
    with locked(dest / RUNS_CSV):
        for folder in (src, dest):  # no header line to compare or to append below
            if not (folder / RUNS_CSV).read_text().strip():
                raise ConfigError(f"{folder / RUNS_CSV} is empty (not even a header line)")
        src_config, dest_config = read_config(src), read_config(dest)
        theirs, ours = inspect_runs(src, src_config), inspect_runs(dest, dest_config)
        for found in (theirs, ours):  # a damaged row is never merged, nor merged into
            if found.damaged:
                raise found.error()
        if theirs.scale is not None and ours.scale is not None and theirs.scale != ours.scale:
            raise ConfigError(f"{src} holds {theirs.scale}-scale runs and {dest} {ours.scale}-scale runs; "
                              "merge only a copy of the same study")
        src_columns, dest_columns = theirs.columns, ours.columns
        lacking = [c for c in dest_columns if c not in src_columns]
        legacy_only = set(src_columns) <= set(dest_columns) and set(lacking) <= set(LEGACY_PROBES.values())
        if src_columns != dest_columns and not (replace and legacy_only):
            raise ConfigError(f"{src / RUNS_CSV} and {dest / RUNS_CSV} have different columns")
        have, rows = ours.keys, theirs.runs
        if replace:
            new = list(range(len(rows)))
        else:
            new = [i for i, key in enumerate(zip(rows.preset, rows.seed)) if (key[0], int(key[1])) not in have]
        added = rows.iloc[new]
        for name in set(added.preset):
            theirs_config = src_config.get("presets", {}).get(name)
            ours_config = dest_config.get("presets", {}).get(name)
            lacking = [folder / CONFIG_JSON for folder, c in ((src, theirs_config), (dest, ours_config)) if c is None]
            differ = ([f"missing from {', '.join(map(str, lacking))}"] if lacking
                      else config_differences(ours_config, theirs_config, where=(f"in {dest}", f"in {src}")))
            if differ:
                raise ConfigError(f"{name!r} is configured differently in {src} and {dest} ({'; '.join(differ)}); "
                                  "merge only a copy of the same study")
        missing = [f"{p}-{s}" for p, s in zip(added.preset, added.seed) if not history_path(src, p, s).exists()]
        if missing:
            raise ConfigError(f"{src / HISTORIES} lacks the curves of {', '.join(missing[:5])}"
                              f"{' ...' if len(missing) > 5 else ''}")
        for sub in (HISTORIES, MODELS):
            make_folder(dest / sub)
        with fs_errors(dest):
            for p, s in zip(added.preset, added.seed):
                shutil.copy2(history_path(src, p, s), history_path(dest, p, s))
                if model_path(src, p, s).exists():
                    shutil.copy2(model_path(src, p, s), model_path(dest, p, s))
                elif replace:  # the replaced run's model, if dest had one, is not this run's
                    model_path(dest, p, s).unlink(missing_ok=True)
        if replace:
            replaced = {(p, int(s)) for p, s in zip(added.preset, added.seed)}
            table = ours.runs
            keep = [(p, int(s)) not in replaced for p, s in zip(table.preset, table.seed)]
            table = pd.concat([table[keep], added.reindex(columns=table.columns)], ignore_index=True)
            replace_csv(table, dest / RUNS_CSV)
        else:
            tail = "" if ours.text.endswith("\n") else "\n"
            replace_text(dest / RUNS_CSV, ours.text + tail + "".join(theirs.lines[i] + "\n" for i in new))
        done = have | {(p, int(s)) for p, s in zip(added.preset, added.seed)}
        commands = dest_config.setdefault("commands", [])
        for command in [c for c in src_config.get("commands", []) if c not in commands]:  # new ones only
            pairs = _sweep_pairs(command)
            if pairs and pairs <= done:
                command = _with_out(command, str(dest))
                if command not in commands:
                    commands.append(command)
        if dest_config:
            write_json(dest / CONFIG_JSON, dest_config, sort_keys=True)
    return added.reset_index(drop=True)


# each closed-form probe -> the column that keeps the trained probe's scores it replaced
LEGACY_PROBES = {"v_probe_mse": "v_probe_deepsets_mse", "u_probe_mse": "u_probe_mlp_mse"}


# every metric :func:`rescore` can compute again from a kept model: the closed-form probes and the
# metrics added later (:data:`cxvae.store.LATER_METRICS`), which earlier runs lack
RESCORABLE = (*LEGACY_PROBES, *LATER_METRICS)


def closed_form_probes(scorer, cfg: RunConfig, splits, metrics: Sequence[str]) -> Dict[str, float]:
    """The metrics ``metrics`` (of :data:`RESCORABLE`) of ``scorer``, on the same probe-train and
    holdout groups as :func:`score`: ``{metric: score}``."""
    probe = probe_config(cfg)
    train, holdout = splits["train"].subset(slice(0, probe.max_train)), splits["holdout"]
    codes = {}

    def coded(which: str):
        if which not in codes:
            codes[which] = scorer.codes(dict(train=train, holdout=holdout)[which])
        return codes[which]

    def sampled_recon() -> float:
        draws = scorer.sampled_reconstructions(holdout, RECON_DRAWS).cpu().double()
        return sampled_masked_mse(draws, holdout.x.cpu().double(), holdout.mask.cpu())

    found = dict(u_probe_mse=lambda: u_probe_mse(coded("train")[0], train.u, coded("holdout")[0], holdout.u, probe),
                 v_probe_mse=lambda: v_probe_mse(coded("train")[1], train.mask, train.u, coded("holdout")[1],
                                                 holdout.mask, holdout.u, probe),
                 recon_sampled_mse=sampled_recon)
    return {m: found[m]() for m in metrics}


def with_rescored_probe(table: pd.DataFrame, metric: str, values: List[float], keep: np.ndarray) -> pd.DataFrame:
    """``table`` with the trained probe's scores of ``metric`` moved to its legacy column (once) and
    ``metric`` set to ``values`` where they are known, kept where ``keep``, NaN elsewhere. A metric
    added later (no legacy column) is added as a column after the metric before it in
    :data:`cxvae.metrics.METRICS` the first time."""
    table = table.copy()
    if metric in LATER_METRICS:
        if metric not in table.columns:
            before = list(METRICS)[list(METRICS).index(metric) - 1]
            at = table.columns.get_loc(before) + 1 if before in table.columns else len(table.columns)
            table.insert(at, metric, np.nan)
        new = np.asarray(values, dtype=float)
        table[metric] = np.where(~np.isnan(new), new, np.where(keep, table[metric], np.nan))
        return table
    legacy = LEGACY_PROBES[metric]
    if legacy not in table.columns:  # first rescoring: every score so far is the trained probe's
        table.insert(table.columns.get_loc(metric) + 1, legacy, table[metric])
    new = np.asarray(values, dtype=float)
    table[metric] = np.where(~np.isnan(new), new, np.where(keep, table[metric], np.nan))
    return table


def _keep_unrescorable(table: pd.DataFrame, metric: str) -> np.ndarray:
    """Rows whose ``metric`` a closed-form probe already scored (added after the migration: no
    legacy score), which keep it when their model is missing."""
    if metric in LATER_METRICS:  # a score there was made by the current code: keep it
        return table[metric].notna().to_numpy() if metric in table.columns else np.zeros(len(table), dtype=bool)
    legacy = LEGACY_PROBES[metric]
    if legacy not in table.columns:
        return np.zeros(len(table), dtype=bool)
    return (table[legacy].isna() & table[metric].notna()).to_numpy()


def rescore(out, metrics: Sequence[str] = RESCORABLE, progress: bool = True) -> pd.DataFrame:
    """Rescore ``metrics`` (of :data:`RESCORABLE`: the closed-form probes ``u_probe_mse``,
    ``v_probe_mse`` and the later metric ``recon_sampled_mse``) of a study folder.

    Every run whose model is in ``out/models`` and the oracle get the current score. The scores a
    trained probe gave move, the first time, to the metric's legacy column (:data:`LEGACY_PROBES`:
    ``u_probe_mlp_mse``, ``v_probe_deepsets_mse``); a run scored by the trained probe whose model
    was not kept gets NaN (it cannot be rescored; retrain it, e.g. ``scripts/paper_study_gpu.py
    --redo-unkept``), and a run already scored by the current code keeps its score. A later metric
    is added as a column, NaN for the runs whose model was not kept. Rewrites ``runs.csv`` and
    ``oracle.csv`` atomically; running it again changes nothing. Returns the new ``runs.csv`` table.
    """
    from .model import load_model

    unknown = [m for m in metrics if m not in RESCORABLE]
    if unknown:
        raise ConfigError(f"cannot rescore {', '.join(unknown)}: only {', '.join(RESCORABLE)} can be computed again "
                          "from a kept model")
    out = Path(out)
    study = read_study(out)
    runs, splits_by_data = study["runs"], {}

    def splits_of(cfg: RunConfig):
        key = json.dumps(cfg.to_dict()["data"], sort_keys=True)
        if key not in splits_by_data:
            splits_by_data[key] = make_splits(cfg.data)
        return splits_by_data[key]

    values = {m: [] for m in metrics}
    for preset, seed in tqdm(list(zip(runs.preset, runs.seed.astype(int))), desc=f"rescore {out}",
                             disable=not progress):
        path = model_path(out, preset, seed)
        if not path.exists():
            for m in metrics:
                values[m].append(float("nan"))
            continue
        model, config = load_model(path, map_location="cpu")
        cfg = RunConfig.from_dict(config)
        for m, value in closed_form_probes(ModelScorer(model), cfg, splits_of(cfg), metrics).items():
            values[m].append(value)
    for m in metrics:
        runs = with_rescored_probe(runs, m, values[m], keep=_keep_unrescorable(runs, m))
    write_table(runs, out / RUNS_CSV)
    if study["oracle"] is not None and len(study["oracle"]):
        presets = study["config"].get("presets", {})
        if not presets:
            raise ConfigError(f"{out / CONFIG_JSON} names no preset, so the oracle's data are unknown")
        cfg = RunConfig.from_dict(next(iter(presets.values())))
        oracle_scorer = ExamScoresOracle(noise_std=cfg.data.noise_std, group_strength=cfg.data.group_strength)
        oracle = study["oracle"]
        for m, value in closed_form_probes(oracle_scorer, cfg, splits_of(cfg), metrics).items():
            oracle = with_rescored_probe(oracle, m, [value], keep=np.zeros(1, bool))
        write_table(oracle, out / ORACLE_CSV)
    return runs


def study_provenance(folder) -> pd.DataFrame:
    """Who made a study folder's runs: one row per preset with ``n_seeds``, ``seeds`` (as
    :func:`format_seeds` writes them), the ``devices`` and the library ``commits`` (12
    characters, each with how many of its runs), from ``runs.csv``."""
    runs = read_study(folder)["runs"]

    def counted(values: pd.Series) -> str:
        return ", ".join(f"{name} ({n})" for name, n in values.value_counts(sort=False).items())

    return runs.groupby("preset", sort=False).agg(
        n_seeds=("seed", "count"), seeds=("seed", format_seeds), devices=("device", counted),
        commits=("git_commit", counted))


def made_by(study: Dict[str, object]) -> str:
    """One line naming what made a study that :func:`cxvae.chapters.load_or_run` returned: the command itself
    when there is one, else how many commands made the folder and where they are listed."""
    commands = [c for c in str(study.get("command", "")).splitlines() if c.strip()]
    if len(commands) == 1:
        return commands[0]
    return (f"{study['folder']}: made by {len(commands)} cxvae commands (listed, with the machines and "
            "commits of every run, in the appendix 'How the committed results were made')")


def run_history(folder, preset: str, seed: int) -> pd.DataFrame:
    """The per-epoch training curve of one run of a study folder (``histories/<preset>-<seed>.csv``:
    ``epoch, step, train_neg_elbo, valid_neg_elbo, ...``)."""
    path = history_path(folder, preset, int(seed))
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: {folder} has no curve of {preset} seed {seed}")
    return read_table(path, columns=("epoch", "train_neg_elbo", "valid_neg_elbo"))


def short_of_seeds(runs: pd.DataFrame, presets: Optional[Sequence[str]] = None, target: int = PAPER_SEEDS) -> str:
    """The presets of ``runs`` with fewer than ``target`` seeds, as ``'name (n), ...'``; ``''``
    when none is short. ``presets`` restricts and orders them (default: every preset, by name)."""
    counts = runs.groupby("preset").seed.nunique()
    if presets is not None:
        counts = counts.reindex(list(presets), fill_value=0)
    return ", ".join(f"{preset} ({n})" for preset, n in counts[counts < target].items())


def made_on_cpu_only(runs: pd.DataFrame, presets: Optional[Sequence[str]] = None) -> List[str]:
    """The presets of ``runs`` whose every row was made on a CPU (``device`` starts with ``'cpu'``),
    in the order of ``presets`` (default: every preset, by name); a preset with no rows is left out."""
    on_cpu = runs.device.astype(str).str.startswith("cpu").groupby(runs.preset).all()
    return [p for p in (presets if presets is not None else on_cpu.index) if on_cpu.get(p, False)]


def posterior_gap_study(out, presets: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """Compare every saved model's ``q(u|x)`` in ``out/models`` with the exact posterior on the
    study's holdout groups; writes and returns ``out/posterior_gap.csv`` (one row per preset,
    seed and group-size bin, plus ``K = 'all'``; see :func:`cxvae.bias.summarise_posterior_gap`)."""
    from .bias import group_posterior_gap, summarise_posterior_gap
    from .model import load_model

    out = Path(out)
    paths = sorted((out / MODELS).glob("*.pt"))
    tables, splits = [], None
    for path in paths:
        model, config = load_model(path)
        cfg = RunConfig.from_dict(config)
        if presets is not None and cfg.preset not in presets:
            continue
        splits = splits or make_splits(cfg.data)
        table = summarise_posterior_gap(group_posterior_gap(model, splits["holdout"],
                                                            ExamScoresOracle(cfg.data.noise_std)))
        tables.append(table.assign(preset=cfg.preset, seed=cfg.seed))
    if not tables:
        raise FileNotFoundError(f"no saved models of {presets or 'any preset'} in {out / MODELS}")
    result = pd.concat(tables, ignore_index=True)
    result = result[["preset", "seed"] + [c for c in result.columns if c not in ("preset", "seed")]]
    result.to_csv(out / "posterior_gap.csv", index=False)
    return result


def main_sweep_summary(out) -> str:
    """A printable summary table (median [lo, hi]) of a study folder, oracle included."""
    study = read_study(out)
    path = Path(out) / RUNS_CSV
    if study["runs"].empty:
        raise ConfigError(f"{path} holds no runs yet (only its header); run `cxvae sweep --out {out}` first")
    missing = [m for m in METRICS if m not in study["runs"].columns and m not in LATER_METRICS]
    if missing:
        raise ConfigError(f"{path} lacks the metric column(s) {', '.join(missing)}")
    table = summarise(study["runs"], study["oracle"])
    table["cell"] = table.apply(lambda r: f"{r['median']:.3f}" if r.n_seeds < 2 else
                                f"{r['median']:.3f} [{r.lo:.3f}, {r.hi:.3f}]", axis=1)
    wide = table.pivot(index="preset", columns="metric", values="cell")[[m for m in METRICS if m in set(table.metric)]]
    order = [p for p in table.preset.unique()]
    seeds = table.groupby("preset").n_seeds.first()
    wide.insert(0, "seeds", seeds)
    return wide.loc[order].to_string()



def study_command(presets: Sequence[str], seeds: str, scale: str, out: str) -> str:
    """The exact shell command that (re)makes a study folder."""
    return f"cxvae sweep --presets {','.join(presets)} --seeds {seeds} --scale {scale} --out {out}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use the `cxvae` command")
