"""The study folder: its files, their format, and every read and write of them.

A study folder (e.g. ``results/paper/``) holds

* ``runs.csv`` — one row per (preset, seed): the columns of :data:`RUN_COLUMNS` (every metric of
  :data:`cxvae.metrics.METRICS`, the final training losses, training and scoring time, and the
  provenance: library version, git commit, torch and python versions, device), possibly more
  numeric columns (e.g. a retired probe's scores kept beside the one that replaced it);
* ``oracle.csv`` — the same metrics for the exact Bayes-optimal reference;
* ``config.json`` — the resolved configuration of every preset in the study and the commands;
* ``histories/<preset>-<seed>.csv`` — the per-epoch training curve of each run
  (:func:`history_path`);
* ``models/<preset>-<seed>.pt`` — each trained model (``cxvae.model.load_model``), where kept
  (:func:`model_path`; :func:`kept_seeds`);
* ``runs.damaged.csv`` — rows set aside by ``cxvae check --set-aside`` or a sweep (see below).

Every row of ``runs.csv`` is checked when it is read (:func:`inspect_runs`): it must have every
field of the header (a row cut off by a crash has fewer, or no line end), a known preset, a whole
seed, the folder's scale (config.json's, or the first row's without one), each number finite or
empty (empty: a metric the folder records as not scored, e.g. a probe that could not be rescored
because the run's model was not kept), its provenance, and a (preset, seed) no earlier row has.
A row that fails is *damaged*: :func:`read_study` refuses the folder in one line naming it, it
is never counted as finished (:func:`finished`, so a sweep runs it again) and never merged.
:func:`set_aside` moves damaged rows to ``runs.damaged.csv``; a sweep does so before it plans.

Every write is atomic (a temporary file, then a rename) and a file system's refusal (a file where
a folder should be, no permission, a full disk) is a one-line :class:`~cxvae.config.ConfigError`.
``runs.csv`` rows are appended under a lock (:func:`locked`), so several sweeps can share a
folder: a run is saved only if no row of it is there yet (:func:`save_run`), and the rows already
written stay byte for byte.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import io
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

import pandas as pd

from .config import PRESETS, SCALES, ConfigError, RunConfig
from .metrics import METRICS

__all__ = ["RUNS_CSV", "ORACLE_CSV", "CONFIG_JSON", "DAMAGED_CSV", "RUN_COLUMNS", "LATER_METRICS", "PROVENANCE", "DamagedRow",
           "RunsFile", "Health", "DamagedRowsSetAside", "inspect_runs", "read_runs", "finished", "read_oracle",
           "read_config", "read_study", "read_table", "set_aside", "check", "save_run", "append_row", "append_rows_once", "write_csv",
           "replace_csv", "write_table", "write_json", "replace_text", "make_folder", "locked", "fs_errors",
           "open_study", "record_config", "config_differences", "MODELS", "HISTORIES", "model_path", "history_path",
           "kept_seeds"]

RUNS_CSV, ORACLE_CSV, CONFIG_JSON, DAMAGED_CSV = "runs.csv", "oracle.csv", "config.json", "runs.damaged.csv"
MODELS, HISTORIES = "models", "histories"  # the subfolders of the kept models and of the training curves
PROVENANCE = ("version", "git_commit", "torch", "python", "device")
RUN_COLUMNS = ("preset", "seed", "scale", *METRICS, "final_train_neg_elbo", "final_valid_neg_elbo",
               "train_seconds", "score_seconds", *PROVENANCE)
ORACLE_COLUMNS = ("preset", "seed", "scale", *METRICS)
# metrics added after studies were committed: a folder written before one lacks its column (read
# as not scored); a sweep appending to it adds the column, empty for the rows already there
LATER_METRICS = ("recon_sampled_mse",)
_REQUIRED_RUN_COLUMNS = tuple(c for c in RUN_COLUMNS if c not in LATER_METRICS)
_REQUIRED_ORACLE_COLUMNS = tuple(c for c in ORACLE_COLUMNS if c not in LATER_METRICS)
TEXT_COLUMNS = ("preset", "scale", *PROVENANCE)  # every other column of runs.csv holds numbers
Key = Tuple[str, int]


# ---------------------------------------------------------------- where a run's files lie

def model_path(folder, preset: str, seed) -> Path:
    """The kept model of run ``(preset, seed)`` of the study folder ``folder``:
    ``folder/models/<preset>-<seed>.pt``."""
    return Path(folder) / MODELS / f"{preset}-{seed}.pt"


def history_path(folder, preset: str, seed) -> Path:
    """The training curve of run ``(preset, seed)`` of the study folder ``folder``:
    ``folder/histories/<preset>-<seed>.csv``."""
    return Path(folder) / HISTORIES / f"{preset}-{seed}.csv"


def kept_seeds(folder, preset: str) -> List[int]:
    """The seeds of ``preset`` whose model the study folder ``folder`` kept (:func:`model_path`), sorted."""
    return sorted(int(p.stem.rsplit("-", 1)[1]) for p in (Path(folder) / MODELS).glob(f"{preset}-*.pt")
                  if p.stem.rsplit("-", 1)[0] == preset)


# ---------------------------------------------------------------- writing, atomically and in one line

@contextlib.contextmanager
def fs_errors(path, doing: str = "write"):
    """Turn the file system's refusal (``OSError``: no such folder, a file in the way, no
    permission, a full disk) into a one-line ConfigError naming ``path``."""
    try:
        yield
    except OSError as err:
        reason = err.strerror or str(err) or type(err).__name__
        if err.errno == errno.ENOSPC:
            reason += " (free some space, or give another --out)"
        raise ConfigError(f"cannot {doing} {path}: {reason}") from None


def make_folder(folder) -> Path:
    """Make ``folder`` (and its parents) if it is not there; a file in the way or a folder that
    cannot be made is a one-line ConfigError."""
    folder = Path(folder)
    for above in [folder, *folder.parents]:
        if above.exists():
            if not above.is_dir():
                where = "is a file" if above == folder else f"is under {above}, a file"
                raise ConfigError(f"{folder} {where}, not a folder; give another --out")
            break
    with fs_errors(folder, "make the folder"):
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def _replace_with(path: Path, write) -> None:
    """Write ``path`` atomically: ``write(tmp)`` fills a temporary file beside it, which is then
    renamed over ``path`` (a reader never sees half a file); no temporary file is left on failure."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with fs_errors(path):
            write(tmp)
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def replace_text(path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (no lock: the caller holds one where writers share it)."""
    _replace_with(Path(path), lambda tmp: tmp.write_text(text))


def write_json(path, doc, sort_keys: bool = False) -> None:
    """Write ``doc`` as indented JSON (and a line end) to ``path`` atomically."""
    replace_text(path, json.dumps(doc, indent=2, sort_keys=sort_keys) + "\n")


def replace_csv(table: pd.DataFrame, path) -> None:
    """Write ``table`` to the CSV at ``path`` atomically (the caller holds the lock)."""
    _replace_with(Path(path), lambda tmp: table.to_csv(tmp, index=False))


@contextlib.contextmanager
def locked(path):
    """An exclusive lock on ``path.lock``, so several processes can share one study folder. Not
    re-entrant: a process holding it must not take it again."""
    path = Path(path)
    with fs_errors(path.parent):
        handle = open(path.with_name(path.name + ".lock"), "w")
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_csv(table: pd.DataFrame, path) -> None:
    """Write ``table`` to the CSV at ``path`` atomically and under its lock."""
    with locked(path):
        replace_csv(table, path)


def append_row(path, row: Dict) -> pd.DataFrame:
    """Append ``row`` to the CSV at ``path`` (any table; a study's runs go through
    :func:`save_run`) atomically and under a lock; returns the whole table."""
    path = Path(path)
    with locked(path):
        table = pd.read_csv(path) if path.exists() else pd.DataFrame()
        table = pd.concat([table, pd.DataFrame([row])], ignore_index=True)
        replace_csv(table, path)
    return table


def append_rows_once(path, rows: Sequence[Dict], key: Sequence[str]) -> bool:
    """Append ``rows`` (which share their values of the columns ``key``, e.g. one seed's steps)
    to the CSV at ``path`` atomically and under a lock, unless the table already holds a row with
    those values: another process sharing the folder wrote them first. Returns whether it wrote.
    (A caller that checked for done rows before its long computation can then not write twice.)"""
    path = Path(path)
    values = {k: rows[0][k] for k in key}
    if any(row[k] != v for row in rows for k, v in values.items()):
        raise ValueError(f"append_rows_once: the rows must share their values of {list(key)}")
    with locked(path):
        table = pd.read_csv(path) if path.exists() else pd.DataFrame()
        if len(table) and set(key) <= set(table.columns):
            if (table[list(key)] == pd.Series(values)).all(axis=1).any():
                return False
        replace_csv(pd.concat([table, pd.DataFrame(list(rows))], ignore_index=True), path)
    return True


def read_table(path, columns: Sequence[str] = ("preset", "seed")) -> pd.DataFrame:
    """A CSV with ``columns``; an empty, unreadable or foreign file is a one-line ConfigError
    naming it, not a pandas traceback (a header-only table is an empty DataFrame)."""
    try:
        with fs_errors(path, "read"):
            table = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise ConfigError(f"{path} is empty (not even a header line)") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read {path}: {str(err).strip().splitlines()[0]}") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ConfigError(f"{path} has no {', '.join(map(repr, missing))} column; is it a table that cxvae wrote?")
    return table


def write_table(table: pd.DataFrame, path) -> None:
    """Rewrite a study table under its lock, refusing if its (preset, seed) rows changed since
    ``table`` was read from it (a sweep appending meanwhile would otherwise lose its rows)."""
    path = Path(path)
    with locked(path):
        now = read_table(path)
        if list(zip(now.preset, now.seed.astype(int))) != list(zip(table.preset, table.seed.astype(int))):
            raise ConfigError(f"{path} changed while it was being rescored (a sweep wrote to it?); run the "
                              "command again when nothing else writes to the folder")
        replace_csv(table, path)


# ---------------------------------------------------------------- config.json

def read_config(folder) -> Dict:
    """A study folder's config.json ({} without one); a file that is not JSON is a ConfigError."""
    path = Path(folder) / CONFIG_JSON
    if not path.exists():
        return {}
    try:
        with fs_errors(path, "read"):
            doc = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read {path}: not JSON ({err})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"cannot read {path}: not a JSON object")
    return doc


def _configured(config: Dict) -> Dict[str, Dict]:
    presets = config.get("presets", {})
    return {k: v for k, v in presets.items() if isinstance(v, dict)} if isinstance(presets, dict) else {}


def config_differences(before: Dict, now: Dict, where=("there", "now")) -> List[str]:
    """How a preset's resolved configuration ``now`` differs from ``before`` (its data, training,
    model and evaluation settings; the device may differ): ``['train.lr: 0.001 there, 0.002 now']``,
    ``where`` naming the two sides (e.g. ``('in study', 'in copy')``)."""
    return [f"{section}.{key}: {before.get(section, {}).get(key, 'missing')!r} {where[0]}, {value!r} {where[1]}"
            for section in ("data", "train", "model", "eval") for key, value in now[section].items()
            if before.get(section, {}).get(key, "missing") != value]


def record_config(out, configs: Dict[str, RunConfig], command: str) -> None:
    """Record the presets' resolved ``configs`` and ``command`` in ``out/config.json`` (atomically,
    under its lock); refuse (ConfigError) another configuration of a preset already there."""
    out = Path(out)
    resolved = {name: {k: v for k, v in c.to_dict().items() if k != "seed"} for name, c in configs.items()}
    path = out / CONFIG_JSON
    with locked(path):
        doc = read_config(out)
        if doc:
            for name, c in resolved.items():
                before = _configured(doc).get(name)
                differ = config_differences(before, c) if before is not None else []
                if differ:
                    raise ConfigError(f"{out} already holds {name!r} runs with a different configuration "
                                      f"({'; '.join(differ)}); use another --out folder")
            doc.setdefault("presets", {}).update(resolved)
            doc.setdefault("commands", [])
            if command not in doc["commands"]:
                doc["commands"].append(command)
        else:
            doc = dict(presets=resolved, commands=[command])
        write_json(path, doc, sort_keys=True)


# ---------------------------------------------------------------- runs.csv, checked row by row

@dataclass
class DamagedRow:
    """A row of ``runs.csv`` that cannot count: its ``line`` number (the header is line 1), its
    text as written, why, and its (preset, seed) where those could be read."""

    line: int
    text: str
    reason: str
    key: Optional[Key] = None

    def __str__(self) -> str:
        what = f" ({self.key[0]} seed {self.key[1]})" if self.key else ""
        return f"line {self.line}{what}: {self.reason}"


@dataclass
class RunsFile:
    """``runs.csv`` as read by :func:`inspect_runs`: its ``columns``; ``runs``, the sound rows in
    order (as :func:`pandas.read_csv` reads them) and ``lines``, their text as written; the
    ``damaged`` rows; the folder's ``scale`` (None before any row); the file's whole ``text``."""

    path: Path
    columns: List[str]
    runs: pd.DataFrame
    lines: List[str]
    damaged: List[DamagedRow]
    scale: Optional[str]
    text: str

    @property
    def keys(self) -> Set[Key]:
        return set(zip(self.runs.preset, self.runs.seed.astype(int))) if len(self.runs) else set()

    def error(self) -> ConfigError:
        """The one-line ConfigError naming the damaged rows."""
        first, more = self.damaged[0], len(self.damaged) - 1
        folder = self.path.parent
        return ConfigError(f"{self.path} has {len(self.damaged)} damaged row(s), which do not count: {first}"
                           f"{f' (and {more} more)' if more else ''}; `cxvae check {folder}` lists them, and "
                           f"`cxvae check {folder} --set-aside` moves them to {DAMAGED_CSV} so that a sweep "
                           "runs them again")


def _runs_path(where) -> Path:
    where = Path(where)
    return where if where.name == RUNS_CSV else where / RUNS_CSV


def _text(path: Path) -> str:
    try:
        with fs_errors(path, "read"):
            return path.read_text()
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read {path}: not a text table") from None


def _number_problem(column: str, value: str) -> Optional[str]:
    if value == "":
        return None  # a number the folder records as not scored
    try:
        if math.isfinite(float(value)):
            return None
    except ValueError:
        pass
    return f"{column} is {value!r}, not a finite number"


def _split_lines(path: Path, text: str) -> Tuple[List[str], List[Tuple[int, str]], bool]:
    """The header fields, the non-blank data lines with their line numbers, and whether the last
    line lacks its line end (cut off: cxvae ends every row it writes with one)."""
    if not text.strip():
        raise ConfigError(f"{path} is empty (not even a header line)")
    lines = text.split("\n")
    cut = lines[-1] != ""
    if not cut:
        lines.pop()
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    header = next(csv.reader([lines[0]]))
    return header, [(i + 1, line) for i, line in enumerate(lines) if i and line.strip()], cut


def inspect_runs(where, config: Optional[Dict] = None) -> RunsFile:
    """Read and check every row of ``runs.csv`` (``where``: the file or its folder); ``config``:
    the folder's config.json (read when not given). Damaged rows are returned, not raised
    (:meth:`RunsFile.error` raises them); a file that is empty, unreadable or foreign as a whole
    (no preset or seed column, or rows without the columns of :data:`RUN_COLUMNS`) is a
    ConfigError, a missing one a FileNotFoundError."""
    path = _runs_path(where)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; run `cxvae sweep --out {path.parent}` first")
    text = _text(path)
    header, data, cut = _split_lines(path, text)
    missing = [c for c in ("preset", "seed") if c not in header]
    if missing:
        raise ConfigError(f"{path} has no {', '.join(map(repr, missing))} column; is it a table that cxvae wrote?")
    missing = [c for c in _REQUIRED_RUN_COLUMNS if c not in header]
    if data and missing:
        raise ConfigError(f"{path} lacks the column(s) {', '.join(missing)}; is it a study's runs.csv that cxvae "
                          "wrote?")
    configured = _configured(read_config(path.parent) if config is None else config)
    config_scales = {name: c.get("scale") for name, c in configured.items()}
    folder_scale = next(iter(set(config_scales.values()))) if len(set(config_scales.values())) == 1 else None

    checked = []  # (line number, text, fields, problems, key)
    for (number, line), fields in zip(data, csv.reader([line for _, line in data])):
        problems, key = [], None
        if len(fields) != len(header):
            problems.append(f"{len(fields)} fields where the header has {len(header)} (cut off, or not a run)")
        elif cut and number == data[-1][0]:
            problems.append("the file ends inside this row (cut off before its line end)")
        if len(fields) == len(header):
            row = dict(zip(header, fields))
            preset, seed = row["preset"], row["seed"]
            if preset not in PRESETS:
                problems.append(f"unknown preset {preset!r}")
            elif configured and preset not in configured:
                problems.append(f"preset {preset!r} is not in {CONFIG_JSON}")
            if not seed.isdigit():
                problems.append(f"seed {seed!r} is not a whole number >= 0")
            else:
                key = (preset, int(seed))
            if row["scale"] not in SCALES:
                problems.append(f"unknown scale {row['scale']!r}")
            problems += [p for c in header if c not in TEXT_COLUMNS and c != "seed"
                         for p in [_number_problem(c, row[c])] if p]
            problems += [f"{c} is empty" for c in PROVENANCE if not row[c].strip()]
        else:
            row = dict(zip(header, fields))
            if row.get("seed", "").isdigit():
                key = (row.get("preset", ""), int(row["seed"]))
        checked.append((number, line, row, problems, key))

    if folder_scale is None and not configured:  # no config.json: the first sound row's scale
        folder_scale = next((row["scale"] for _, _, row, problems, _ in checked if not problems), None)
    seen: Dict[Key, int] = {}
    sound, damaged = [], []
    for number, line, row, problems, key in checked:
        if not problems:
            expected = config_scales.get(row["preset"], folder_scale)
            if expected is not None and row["scale"] != expected:
                problems.append(f"scale {row['scale']!r}, where the folder's is {expected!r} "
                                f"({'config.json' if configured else 'its first row'})")
        if not problems and key in seen:
            problems.append(f"a second row of {key[0]} seed {key[1]} (the first is line {seen[key]})")
        if problems:
            damaged.append(DamagedRow(number, line, "; ".join(problems), key))
        else:
            seen[key] = number
            sound.append(line)
    if not damaged:
        runs = pd.read_csv(io.StringIO(text))
    else:
        runs = pd.read_csv(io.StringIO("\n".join([text.split("\n", 1)[0].rstrip("\r"), *sound]) + "\n"))
    return RunsFile(path, header, runs, sound, damaged, folder_scale, text)


def read_runs(where) -> pd.DataFrame:
    """The rows of ``runs.csv`` (``where``: the file or its folder); a damaged row is a one-line
    ConfigError naming it (see :func:`inspect_runs`)."""
    found = inspect_runs(where)
    if found.damaged:
        raise found.error()
    return found.runs


def finished(where) -> Set[Key]:
    """The (preset, seed) runs that ``runs.csv`` (``where``: the file or its folder) holds sound
    rows of; a damaged row does not count. Empty when there is no ``runs.csv``."""
    return inspect_runs(where).keys if _runs_path(where).exists() else set()


def read_oracle(folder, scale: Optional[str] = None) -> Optional[pd.DataFrame]:
    """``oracle.csv`` of a study folder (None without one), checked: one row of preset 'oracle'
    with every metric a finite number or empty, at the folder's ``scale`` (when given)."""
    path = Path(folder) / ORACLE_CSV
    if not path.exists():
        return None
    table = read_table(path)
    problems = [f"no {c!r} column" for c in _REQUIRED_ORACLE_COLUMNS if c not in table.columns]
    header, data, cut = _split_lines(path, _text(path))
    if not problems:
        if cut:
            problems.append("it ends inside its row (cut off before its line end)")
        for number, fields in zip([n for n, _ in data], csv.reader([line for _, line in data])):
            row = dict(zip(header, fields))
            if len(fields) != len(header):
                problems.append(f"line {number} has {len(fields)} fields where the header has {len(header)}")
                continue
            if row["preset"] != "oracle":
                problems.append(f"line {number} is of preset {row['preset']!r}, not 'oracle'")
            if scale is not None and row["scale"] != scale:
                problems.append(f"line {number} is at scale {row['scale']!r}, where the folder's is {scale!r}")
            problems += [f"line {number}: {p}" for c in METRICS if c in row for p in [_number_problem(c, row[c])] if p]
    if problems:
        raise ConfigError(f"{path} is damaged: {'; '.join(problems)}; score the oracle again (`cxvae oracle`)")
    return table


def read_study(folder) -> Dict[str, object]:
    """Load ``runs.csv`` (every row checked: :func:`inspect_runs`), ``oracle.csv`` (if any) and
    ``config.json`` of a study folder; damage is a one-line ConfigError naming it."""
    folder = Path(folder)
    config = read_config(folder)
    found = inspect_runs(folder, config)
    if found.damaged:
        raise found.error()
    return dict(runs=found.runs, oracle=read_oracle(folder, found.scale), config=config)


# ---------------------------------------------------------------- writing runs

class DamagedRowsSetAside(UserWarning):
    """A sweep moved damaged rows of its folder's ``runs.csv`` to ``runs.damaged.csv`` (to run them again)."""


def set_aside(folder) -> List[DamagedRow]:
    """Move the damaged rows of ``folder/runs.csv`` to ``runs.damaged.csv`` (appended, under the
    header of ``runs.csv``), keeping every sound row byte for byte, so that the next sweep runs
    them again; returns the rows moved."""
    path = _runs_path(folder)
    if not path.exists():
        return []
    with locked(path):
        found = inspect_runs(path)
        if found.damaged:
            aside = path.with_name(DAMAGED_CSV)
            header = found.text.split("\n", 1)[0].rstrip("\r")
            before = _text(aside) if aside.exists() else ""
            head = "" if before.startswith(header + "\n") else header + "\n"  # one header, unless the columns changed
            tail = "" if not before or before.endswith("\n") else "\n"
            replace_text(aside, before + tail + head + "".join(d.text + "\n" for d in found.damaged))
            replace_text(path, "".join(line + "\n" for line in [header, *found.lines]))
    return found.damaged


def _add_empty_columns(path: Path, text: str, columns: Sequence[str]) -> None:
    """Add ``columns`` (of :data:`LATER_METRICS`) at the end of ``runs.csv``, empty in every row;
    the fields already there stay byte for byte (the caller holds the lock)."""
    lines = text.split("\n")
    header, rows = lines[0], lines[1:]
    widen = lambda line, extra: (line[:-1] + extra + "\r" if line.endswith("\r") else line + extra)  # noqa: E731
    out = [widen(header, "".join("," + c for c in columns))]
    out += [widen(line, "," * len(columns)) if line.strip() else line for line in rows]
    replace_text(path, "\n".join(out))


def _append_run(path: Path, row: Dict) -> None:
    """Append ``row`` to ``runs.csv`` (the caller holds its lock), the rows already there kept as written."""
    if not path.exists():
        replace_csv(pd.DataFrame([row]), path)
        return
    found = inspect_runs(path)
    columns = list(found.columns)
    new = [c for c in row if c not in columns]
    later = [c for c in new if c in LATER_METRICS]
    if later and len(found.runs) + len(found.damaged):  # the rows already there were not scored on them
        _add_empty_columns(path, found.text, later)
        found = inspect_runs(path)
        columns, new = list(found.columns), [c for c in new if c not in later]
    if new and len(found.runs) + len(found.damaged):
        raise ConfigError(f"{path} has no {', '.join(new)} column(s), which this version of cxvae writes; "
                          "give the sweep another --out folder")
    if new:  # only a header so far: it takes the row's columns
        replace_csv(pd.DataFrame([row]).reindex(columns=columns + new), path)
        return
    line = pd.DataFrame([row]).reindex(columns=columns).to_csv(index=False, header=False, lineterminator="\n")
    text = found.text
    replace_text(path, text + ("" if text.endswith("\n") else "\n") + line)


def save_run(out, result, metrics: Dict[str, float], score_seconds: float, prov: Dict[str, str]) -> bool:
    """Save a trained and scored run (a :class:`~cxvae.train.TrainResult`) into the study folder
    ``out``: its curve, its model and its row of ``runs.csv``, all under the lock of ``runs.csv``
    and only if no sound row of it is there yet (another sweep sharing the folder may have saved
    it meanwhile). Returns whether it was saved."""
    from .train import save_checkpoint

    out = Path(out)
    cfg, preset, seed = result.config, result.config.preset, result.config.seed
    last = result.history.iloc[-1]
    row = dict(preset=preset, seed=seed, scale=cfg.scale, **metrics,
               final_train_neg_elbo=float(last.train_neg_elbo), final_valid_neg_elbo=float(last.valid_neg_elbo),
               train_seconds=round(result.seconds, 2), score_seconds=round(score_seconds, 2), **prov)
    runs_path = out / RUNS_CSV
    with locked(runs_path):
        if runs_path.exists() and (preset, seed) in inspect_runs(runs_path).keys:
            return False
        for sub in (HISTORIES, MODELS):
            make_folder(out / sub)
        replace_csv(result.history.assign(preset=preset, seed=seed), history_path(out, preset, seed))
        path = model_path(out, preset, seed)
        try:
            with fs_errors(path):
                save_checkpoint(path, result.model, cfg)  # for later analyses
        except RuntimeError as err:  # torch's writer fails with its own error (e.g. on a full disk)
            with contextlib.suppress(OSError):
                path.with_suffix(".pt.tmp").unlink()
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(f"cannot write {path}: {first} (is the disk full?)") from None
        _append_run(runs_path, row)
    return True


def open_study(out, configs: Dict[str, RunConfig], command: str) -> List[DamagedRow]:
    """Ready the folder ``out`` for a sweep of ``configs``: make it, refuse another scale than its
    runs' (config.json's, or without one its rows') and another configuration of a preset there,
    record ``command`` and the configurations in config.json, and set aside damaged rows (a
    :class:`DamagedRowsSetAside` warning names them) so that the sweep runs them again. Returns
    the rows set aside."""
    out = make_folder(out)
    scales = {c.scale for c in configs.values()}
    config = read_config(out)
    found = inspect_runs(out, config) if (out / RUNS_CSV).exists() else None  # a foreign table: refused here
    have = {c.get("scale") for c in _configured(config).values()}
    where = CONFIG_JSON if have else RUNS_CSV
    if not have and found is not None and found.scale is not None:
        have = {found.scale}
    if have and have != scales:
        raise ConfigError(f"{out} holds {', '.join(sorted(map(str, have)))}-scale runs ({where}); this sweep is at "
                          f"{', '.join(sorted(scales))} scale: give it another --out folder")
    record_config(out, configs, command)
    aside = set_aside(out)
    if aside:
        warnings.warn(f"{out / RUNS_CSV}: {len(aside)} damaged row(s) moved to {DAMAGED_CSV}, to be run again: "
                      + "; ".join(map(str, aside[:3])) + (" ..." if len(aside) > 3 else ""), DamagedRowsSetAside,
                      stacklevel=3)
    return aside


# ---------------------------------------------------------------- a folder's health

@dataclass
class Health:
    """What :func:`check` found in a study folder. ``problems`` (a foreign or unreadable table, a
    damaged oracle or config.json) and ``damaged`` rows make it unhealthy; runs without a curve
    or a model are reported only (models need not be kept)."""

    folder: Path
    runs: Optional[pd.DataFrame] = None
    scale: Optional[str] = None
    damaged: List[DamagedRow] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)
    oracle: str = "none"
    no_curve: List[str] = field(default_factory=list)
    no_model: List[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.damaged and not self.problems


def check(folder) -> Health:
    """The health of a study folder: its sound runs by preset and seeds, its damaged rows (with
    why), the runs without a curve or a model, and whether its oracle and config.json read."""
    folder = Path(folder)
    health = Health(folder)
    try:
        config = read_config(folder)
    except ConfigError as err:
        health.problems.append(str(err))
        config = {}
    try:
        found = inspect_runs(folder, config)
    except ConfigError as err:
        health.problems.append(str(err))
        return health
    health.runs, health.scale, health.damaged = found.runs, found.scale, found.damaged
    scales = {c.get("scale") for c in _configured(config).values()}
    if len(scales) > 1:
        health.problems.append(f"{folder / CONFIG_JSON} mixes scales: {', '.join(sorted(map(str, scales)))}")
    try:
        oracle = read_oracle(folder, found.scale)
        health.oracle = "none (`cxvae oracle` scores it)" if oracle is None else "present"
    except ConfigError as err:
        health.problems.append(str(err))
        health.oracle = "damaged"
    keys = [(p, int(s)) for p, s in zip(found.runs.preset, found.runs.seed)]
    health.no_curve = [f"{p}-{s}" for p, s in keys if not history_path(folder, p, s).exists()]
    health.no_model = [f"{p}-{s}" for p, s in keys if not model_path(folder, p, s).exists()]
    return health
