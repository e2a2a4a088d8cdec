"""What the book's chapters call to get their numbers: read the committed results, or recompute.

Every helper here reads a committed study folder under :data:`RESULTS` (the repository's
``results/`` seen from ``book/``, where the chapters run) or, with ``recompute``, runs the same
study (at smoke scale when ``smoke``) into the scratch folder (:func:`scratch_folder`:
``scratch_root``, else ``$CXVAE_SCRATCH``, else :data:`SCRATCH`) and reads that:

* :func:`load_or_run`: a sweep of the exam-scores presets (chapters 2-8, 11);
* :func:`load_or_run_strength`: the group-strength study (chapters 8, 10);
* :func:`load_or_run_real_data`, :func:`load_or_run_table_bench` and :func:`load_repeated`: the
  real tables (chapter 9);
* :func:`load_or_decompose`, :func:`load_or_amortise`, :func:`load_or_run_budget`,
  :func:`load_or_run_preset` and :func:`load_or_run_table_long`: the optimality gap (chapter 11).

The studies themselves are :mod:`cxvae.runner`'s, :mod:`cxvae.strength`'s, :mod:`cxvae.real_data`'s,
:mod:`cxvae.table_bench`'s and :mod:`cxvae.gap`'s; this module only finds or makes their folders.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Sequence

import pandas as pd

from .strength import MAIN_PRESETS

__all__ = ["RESULTS", "SCRATCH", "scratch_folder", "load_or_run", "load_or_run_strength", "load_or_run_real_data",
           "load_or_run_table_bench", "load_repeated", "load_held_back", "load_or_decompose", "load_or_run_budget", "load_or_run_preset",
           "load_or_run_table_long", "load_or_amortise"]

RESULTS = "../results"  # the committed results, seen from book/
SCRATCH = "../runs"  # where a recompute writes when neither scratch_root nor $CXVAE_SCRATCH says


def scratch_folder(scratch_root=None) -> Path:
    """The scratch folder of a recompute: ``scratch_root``, else ``$CXVAE_SCRATCH``, else :data:`SCRATCH`."""
    return Path(scratch_root or os.environ.get("CXVAE_SCRATCH", SCRATCH))


# ---------------------------------------------------------------------------------------------
# The exam-scores sweeps and the strength study
# ---------------------------------------------------------------------------------------------
def load_or_run(study: str, presets: Sequence[str], *, recompute: bool = False, smoke: bool = True,
                seeds: str = "0-2", device: str = "cpu", results_root=RESULTS,
                scratch_root=None) -> Dict[str, object]:
    """What a chapter calls to get its numbers.

    Without ``recompute`` it reads the committed study ``results_root/study`` (made at paper scale
    by :func:`cxvae.runner.study_command`), keeping the rows of ``presets``. With ``recompute`` it
    runs the same sweep (at ``smoke`` scale when ``smoke``) into ``scratch_root/study-<scale>``
    plus the oracle row, and reads that (``scratch_root`` defaults to ``$CXVAE_SCRATCH`` or
    ``../runs``). Returns :func:`cxvae.runner.read_study`'s dict plus ``command`` and ``folder``.
    """
    from .runner import parse_seeds, read_study, run_oracle, study_command, sweep
    from .store import ORACLE_CSV

    presets = list(presets)
    if recompute:
        scale = "smoke" if smoke else "paper"
        folder = scratch_folder(scratch_root) / f"{study}-{scale}"
        sweep(presets, parse_seeds(seeds), scale=scale, device=device, out=folder, progress=False,
              command=study_command(presets, seeds, scale, str(folder)))
        if not (folder / ORACLE_CSV).exists():
            run_oracle(scale=scale, out=folder)
        command = study_command(presets, seeds, scale, str(folder))
    else:
        folder = Path(results_root) / study
        commands = read_study(folder)["config"].get("commands", [])
        command = "\n".join(commands)
    result = read_study(folder)
    runs = result["runs"]
    missing = [p for p in presets if p not in set(runs.preset)]
    if missing:
        raise FileNotFoundError(f"{folder} has no runs of {missing}; run: {study_command(missing, seeds, 'paper', str(folder))}")
    result["runs"] = runs[runs.preset.isin(presets)].reset_index(drop=True)
    result.update(command=command, folder=str(folder))
    return result


def load_or_run_strength(*, recompute: bool = False, smoke: bool = True, seeds: str = "0-19", device: str = "cpu",
                         presets: Sequence[str] = MAIN_PRESETS, results_root=RESULTS,
                         scratch_root=None, stack: int = 20) -> dict:
    """What the strength chapter calls to get its numbers.

    Without ``recompute`` it reads the committed study ``results_root/strength``. With
    ``recompute`` it runs the study into ``scratch_root/strength-<scale>`` (``$CXVAE_SCRATCH`` or
    ``../runs``): at ``smoke`` scale over :data:`cxvae.strength.SMOKE_STRENGTHS`, else at the
    ``study`` scale over :data:`cxvae.strength.STRENGTHS`. Returns ``dict(table, folder, commands)``.
    """
    from .runner import parse_seeds
    from .strength import SMOKE_STRENGTHS, STRENGTHS, read_strength_study, strength_command, strength_study

    if recompute:
        scale, strengths = ("smoke", SMOKE_STRENGTHS) if smoke else ("study", STRENGTHS)
        folder = scratch_folder(scratch_root) / f"strength-{scale}"
        command = strength_command(strengths, presets, seeds, scale, str(folder), stack)
        strength_study(strengths, presets, parse_seeds(seeds), scale=scale, out=folder, device=device, stack=stack,
                       progress=False, command=command)
        commands = [command]
    else:
        folder = Path(results_root) / "strength"
        commands = sorted({c for f in folder.glob("c=*/config.json") for c in json.loads(f.read_text())["commands"]})
    table = read_strength_study(folder)
    return dict(table=table[table.preset.isin(list(presets) + ["oracle"])].reset_index(drop=True),
                folder=str(folder), commands=commands)


# ---------------------------------------------------------------------------------------------
# The real tables (chapter 9)
# ---------------------------------------------------------------------------------------------
def load_or_run_real_data(*, recompute: bool = False, smoke: bool = True, seeds: str = "0", device: str = "cpu",
                          results_root=RESULTS, scratch_root=None) -> Dict[str, object]:
    """What chapter 9 calls to get its tables.

    Without ``recompute`` it reads the committed study ``results_root/real_data/<scale>``
    (``smoke`` or ``full``). With ``recompute`` it runs :func:`cxvae.real_data.run_real_data_study`
    into ``scratch_root/real_data-<scale>`` (``scratch_root`` defaults to ``$CXVAE_SCRATCH`` or
    ``../runs``) and reads that. Returns :func:`cxvae.real_data.read_real_data_study`'s dict plus
    ``command``.
    """
    from .real_data import read_real_data_study, real_data_command, run_real_data_study
    from .runner import format_seeds, parse_seeds

    scale = "smoke" if smoke else "full"
    if recompute:
        folder = scratch_folder(scratch_root) / f"real_data-{scale}"
        command = real_data_command(folder, smoke, seeds)
        study = run_real_data_study(folder, smoke=smoke, seeds=parse_seeds(seeds), device=device, progress=False,
                                    command=command)
    else:
        study = read_real_data_study(Path(results_root) / "real_data" / scale)
        command = study["config"]["command"]
        made = format_seeds(study["config"]["settings"]["seeds"])
        if made != format_seeds(parse_seeds(seeds)):
            raise FileNotFoundError(f"{study['folder']} holds seeds {made}, not {seeds}; run with RECOMPUTE = True "
                                    f"or make them with: {real_data_command(study['folder'], smoke, seeds)}")
    return study | dict(command=command)


def load_or_run_table_bench(recompute: bool = False, smoke: bool = True, seeds: Sequence[int] = (0,),
                            results_root=RESULTS, scratch_root=None) -> dict:
    """What chapter 9 calls: the committed benchmark (``results_root/tabular_benchmark``, made by
    the ``command`` in its ``config.json``) or, with ``recompute``, a fresh one in the scratch
    folder (``$CXVAE_SCRATCH`` or ``../runs``): at smoke scale two small tables, two presets and
    5 epochs; otherwise every table and the default presets at 100 epochs. Returns ``runs``,
    ``summary`` (:func:`cxvae.table_bench.summarise`) and ``config``."""
    from .config import PRESETS
    from .table_bench import DATASETS, run_into, summarise

    if recompute:
        folder = scratch_folder(scratch_root) / f"tabular_benchmark-{'smoke' if smoke else 'full'}"
        tables = ["orthodont", "sleepstudy"] if smoke else list(DATASETS)
        presets = ["gvae", "cxvae"] if smoke else ["ml-vae", "ml-vae-corrected", "gvae", "gvae-ad", "cxvae"]
        run_into(folder, tables, presets, list(seeds), epochs=5 if smoke else 100, log=lambda s: None,
                 command=f"cxvae.table_bench.run_into({str(folder)!r}, {tables}, {presets}, {list(seeds)})")
    else:
        folder = Path(results_root) / "tabular_benchmark"
    runs = pd.read_csv(folder / "runs.csv")
    config = json.loads((folder / "config.json").read_text())
    order = {m: i for i, m in enumerate(["MixedLM", *PRESETS])}  # the presets in the library's order
    tables = {t: i for i, t in enumerate(config["tables"])}
    runs = runs.sort_values(["table", "model"], key=lambda c: c.map(tables if c.name == "table" else order),
                            kind="stable").reset_index(drop=True)
    return dict(runs=runs, summary=summarise(runs), config=config, folder=str(folder))


def load_repeated(recompute: bool = False, smoke: bool = True, results_root=RESULTS, scratch_root=None) -> dict:
    """What chapter 9 calls for the repeated splits: the committed folder
    (``results_root/table_splits``, made by the commands in its ``config.json``) or, with
    ``recompute``, a fresh one in the scratch folder (``$CXVAE_SCRATCH`` or ``../runs``): at
    smoke scale Orthodont, 2 splits, the two linear mixed models and the CxVAE preset; otherwise
    every table, 10 splits, the three classical models and the CxVAE preset. Returns ``runs``, ``config`` and ``folder``."""
    from .table_bench import CLASSICAL, DATASETS, run_repeated

    if recompute:
        folder = scratch_folder(scratch_root) / f"table_splits-{'smoke' if smoke else 'full'}"
        tables, models = (["orthodont"], ["MixedLM", "GPBoost-LMM", "cxvae"]) if smoke else \
            (list(DATASETS), [*CLASSICAL, "cxvae"])
        seeds = [0, 1] if smoke else list(range(10))
        run_repeated(folder, tables, models, seeds, progress=False,
                     command=f"cxvae.table_bench.run_repeated({str(folder)!r}, {tables}, {models}, {seeds})")
    else:
        folder = Path(results_root) / "table_splits"
    runs = pd.read_csv(folder / "runs.csv")
    config = json.loads((folder / "config.json").read_text())
    return dict(runs=runs, config=config, folder=str(folder))


def load_held_back(recompute: bool = False, smoke: bool = True, results_root=RESULTS, scratch_root=None) -> dict:
    """What chapter 9 calls for the cost of the groups ``fit`` holds back
    (:func:`cxvae.table_bench.run_held_back`): the committed folder ``results_root/held_back``
    (made by the command in its ``config.json``) or, with ``recompute``, a fresh one in the scratch
    folder: at smoke scale Sleepstudy's new-group split, the gvae preset and 2 splits; otherwise
    the committed command's pairs, both presets and 10 splits. Returns ``runs``, ``config`` and ``folder``."""
    from .table_bench import run_held_back

    if recompute:
        folder = scratch_folder(scratch_root) / f"held_back-{'smoke' if smoke else 'full'}"
        pairs, presets = (["sleepstudy:new"], ["gvae"]) if smoke else (["sleepstudy:new", "orthodont:within"], ["cxvae", "gvae"])
        seeds = [0, 1] if smoke else list(range(10))
        run_held_back(folder, pairs, presets, seeds, progress=False,
                      command=f"cxvae.table_bench.run_held_back({str(folder)!r}, {pairs}, {presets}, {seeds})")
    else:
        folder = Path(results_root) / "held_back"
    return dict(runs=pd.read_csv(folder / "runs.csv"), config=json.loads((folder / "config.json").read_text()),
                folder=str(folder))


# ---------------------------------------------------------------------------------------------
# The optimality gap (chapter 11)
# ---------------------------------------------------------------------------------------------
def load_or_decompose(recompute: bool = False, smoke: bool = True, seeds: str = "0-1", device: str = "cpu",
                      results_root=RESULTS, scratch_root=None) -> dict:
    """What chapter 11 calls: the committed decomposition (``results_root/gap``) or, with
    ``recompute``, the same commands rerun (at smoke scale when ``smoke``) into the scratch folder:
    CxVAE's sweep (:func:`load_or_run`) then :func:`cxvae.gap.decompose_study`. Returns
    ``table`` (the rows), ``folder`` and ``config``."""
    from .gap import decompose_study

    if recompute:
        study = load_or_run("paper", ["cxvae"], recompute=True, smoke=smoke, seeds=seeds, device=device,
                            scratch_root=scratch_root)
        root = scratch_folder(scratch_root)
        folder = root / f"gap-{'smoke' if smoke else 'paper'}"
        decompose_study(study["folder"], folder, progress=False)
    else:
        folder = Path(results_root) / "gap"
    return dict(table=pd.read_csv(folder / "decomposition.csv"), folder=str(folder),
                config=json.loads((folder / "config.json").read_text()))


def load_or_run_budget(recompute: bool = False, smoke: bool = True, device: str = "cpu",
                       results_root=RESULTS, scratch_root=None, factors=(2, 4), seeds=(0,)) -> dict:
    """The optimisation budget's part: CxVAE trained ``factors`` times longer than its scale's
    epochs. Committed: ``results_root/gap/budget/epochs=N`` (made by ``cxvae sweep --presets cxvae
    --scale paper --epochs N``) beside the same seeds of ``results_root/paper`` at the paper's
    budget. With ``recompute``: the same at smoke scale into the scratch folder. Returns ``runs``
    (the rows of every budget, with ``epochs``) and ``histories`` (``{(epochs, seed): DataFrame}``)."""
    from .config import make_run_config
    from .gap import reflected_table
    from .runner import read_study, sweep
    from .store import history_path

    scale = "smoke" if (recompute and smoke) else "paper"
    base_epochs = make_run_config("cxvae", scale=scale).train.epochs
    if recompute:
        root = scratch_folder(scratch_root) / f"gap-budget-{scale}"
        base = load_or_run("paper", ["cxvae"], recompute=True, smoke=smoke, seeds=",".join(map(str, seeds)),
                           device=device, scratch_root=scratch_root)["folder"]
        folders = {base_epochs: Path(base)}
        for f in factors:
            folders[f * base_epochs] = root / f"epochs={f * base_epochs}"
            sweep(["cxvae"], list(seeds), scale=scale, device=device, out=folders[f * base_epochs], progress=False,
                  overrides=dict(train=dict(epochs=f * base_epochs)))
    else:
        folders = {base_epochs: Path(results_root) / "paper"}
        for path in sorted((Path(results_root) / "gap" / "budget").glob("epochs=*")):
            if (path / "runs.csv").exists():  # a budget whose first run is still training has none yet
                folders[int(path.name.split("=")[1])] = path
    # the paper study has every seed: the comparison keeps those that were trained longer too
    longer = {int(s) for e, f in folders.items() if e != base_epochs for s in read_study(f)["runs"].seed}
    budget_seeds = longer or {int(s) for s in seeds}
    runs, histories, reflected = [], {}, reflected_table(folders, budget_seeds, recompute)
    for epochs, folder in sorted(folders.items()):
        table = read_study(folder)["runs"]
        table = table[(table.preset == "cxvae") & table.seed.isin(budget_seeds)]
        table = table.merge(reflected[reflected.epochs == epochs][["seed", "holdout_nll_reflected"]], on="seed",
                            how="left")
        runs.append(table.assign(epochs=epochs))
        for seed in table.seed:
            histories[(epochs, int(seed))] = pd.read_csv(history_path(folder, "cxvae", int(seed)))
    return dict(runs=pd.concat(runs, ignore_index=True), histories=histories)


def load_or_run_preset(recompute: bool = False, smoke: bool = True, seeds: str = "0-1", device: str = "cpu",
                       results_root=RESULTS, scratch_root=None) -> dict:
    """:data:`cxvae.gap.PRESET`'s runs beside CxVAE's on the same seeds and data, with the oracle.

    Committed: ``results_root/gap/mirror-long`` (made by :data:`cxvae.gap.PRESET_COMMAND`, its
    ``oracle.csv`` by ``cxvae oracle --scale paper``) and the same seeds of CxVAE from
    ``results_root/paper``. With ``recompute``: both presets swept at smoke scale (paper scale when
    not ``smoke``) into the scratch folder (:func:`load_or_run`). Returns ``runs`` (both presets),
    ``oracle`` (one row), ``command`` and ``folder``."""
    from .gap import PRESET
    from .runner import read_study

    if recompute:
        study = load_or_run("gap-preset", [PRESET, "cxvae"], recompute=True, smoke=smoke, seeds=seeds, device=device,
                            scratch_root=scratch_root)
        return dict(runs=study["runs"], oracle=study["oracle"], command=study["command"], folder=study["folder"])
    folder = Path(results_root) / "gap" / "mirror-long"
    study = read_study(folder)
    runs = study["runs"][study["runs"].preset == PRESET]
    paper = read_study(Path(results_root) / "paper")["runs"]
    paired = paper[(paper.preset == "cxvae") & paper.seed.isin(set(runs.seed))]
    return dict(runs=pd.concat([runs, paired], ignore_index=True), oracle=study["oracle"],
                command="\n".join(study["config"].get("commands", [])), folder=str(folder))


def load_or_run_table_long(recompute: bool = False, smoke: bool = True, results_root=RESULTS,
                           scratch_root=None) -> dict:
    """CxVAE trained 4x longer on real tables of chapter 9, beside the benchmark's budget.

    The mirror mixture needs a decoder known to be symmetric in sigma's sign, so on a real table
    (the ``mlp`` decoder) "the same model" is CxVAE with :data:`cxvae.gap.PRESET`'s 4x budget.
    Committed: ``results_root/gap/table-long`` (:data:`cxvae.gap.TABLE_LONG_COMMAND`: 400 epochs)
    and the same tables, seeds and preset of ``results_root/tabular_benchmark`` (100 epochs). With
    ``recompute``: Orthodont, seed 0, at 5 and 20 epochs (smoke) or the committed settings, into
    the scratch folder. Returns ``table``: one row per (table, split, epochs) with the median NLL
    over seeds, MixedLM's, and the difference."""
    from . import table_bench

    if recompute:
        root = scratch_folder(scratch_root) / "gap-table-long"
        tables, seeds, short = (["orthodont"], [0], 5) if smoke else (["chickweight", "orthodont"], list(range(5)), 100)
        for epochs in (short, 4 * short):
            table_bench.run_into(root / f"epochs={epochs}", tables, ["cxvae"], seeds, epochs=epochs, log=lambda s: None)
        folders = {short: root / f"epochs={short}", 4 * short: root / f"epochs={4 * short}"}
    else:
        folders = {100: Path(results_root) / "tabular_benchmark", 400: Path(results_root) / "gap" / "table-long"}
    longer = pd.read_csv(folders[max(folders)] / "runs.csv")
    keys = longer[longer.model == "cxvae"][["table", "seed"]].drop_duplicates()
    rows = []
    for epochs, folder in sorted(folders.items()):
        runs = pd.read_csv(folder / "runs.csv")
        runs = runs[runs.table.isin(set(keys.table))]
        mixed = runs[runs.model == "MixedLM"].groupby(["table", "split"], sort=False).nll.first()
        cx = runs[(runs.model == "cxvae") & runs.seed.isin(set(keys.seed))]
        for (table, split), group in cx.groupby(["table", "split"], sort=False):
            rows.append(dict(table=table, split=split, epochs=epochs, n_seeds=len(group), cxvae=group.nll.median(),
                             MixedLM=float(mixed[(table, split)]),
                             difference=group.nll.median() - float(mixed[(table, split)])))
    return dict(table=pd.DataFrame(rows).set_index(["table", "split", "epochs"]).sort_index(),
                folders={e: str(f) for e, f in folders.items()})


def load_or_amortise(recompute: bool = False, smoke: bool = True, seeds: str = "0-1", device: str = "cpu",
                     results_root=RESULTS, scratch_root=None) -> dict:
    """The amortisation gap's table: committed ``results_root/gap/amortisation.csv``
    (:func:`cxvae.gap.amortisation_study` of ``results/paper``'s CxVAE models with
    :data:`cxvae.gap.REFINE`) or, with ``recompute``, the same on the scratch study of
    :func:`load_or_decompose` (50 refinement steps at smoke scale). Returns ``table`` and
    ``change`` (per seed: the refined step's score minus the model's, for the metrics of
    :data:`cxvae.gap.GAP_METRICS`)."""
    from .gap import GAP_METRICS, REFINE, amortisation_study
    from .runner import parse_seeds

    if recompute:
        study = load_or_run("paper", ["cxvae"], recompute=True, smoke=smoke, seeds=seeds, device=device,
                            scratch_root=scratch_root)
        root = scratch_folder(scratch_root) / f"gap-{'smoke' if smoke else 'paper'}"
        table = amortisation_study(study["folder"], root, seeds=parse_seeds(seeds), progress=False,
                                   refine=dict(REFINE, steps=50) if smoke else None)
    else:
        table = pd.read_csv(Path(results_root) / "gap" / "amortisation.csv")
    wide = table.set_index(["seed", "step"])[list(GAP_METRICS)]
    change = wide.xs("refined q(u|x)", level="step") - wide.xs("model", level="step")
    return dict(table=table, change=change)
