"""The real-data study of chapter 9: Group VAEs and linear mixed models on two real tables.

:func:`run_real_data_study` performs every fit of the chapter and writes the tables it shows as
CSV files (plus ``config.json``) into one folder; :func:`read_real_data_study` reads them back, and
:func:`cxvae.chapters.load_or_run_real_data` is what the chapter calls (read the committed folder, or recompute
into a scratch folder). Storing the tables makes the book's numbers the same on every machine:
short trainings round differently under other matrix kernels, so the chapter must not retrain.

The analyses (``train`` / ``held`` is :func:`cxvae.tabular.split_within_groups` of mlmRev's Exam,
holdout 0.2 within every school, at least 2 training students, split seed 0):

* **scores alone**: every preset on ``normexam``, against ``normexam ~ 1 + (1 | school)``;
* **scores with intake**: every preset on ``(standLRT, normexam)``, against
  ``normexam ~ standLRT + (1 + standLRT | school)`` times ``standLRT ~ 1 + (1 | school)``;
* **school-adjusted scores and translation** with the CxVAE of the first seed;
* **soybean**: the CxVAE on the log leaf weight alone, and GVAE and CxVAE on
  ``(Time, log_weight)``, probed for the plots' genotype and year.

Command line: ``python -m cxvae.real_data --out results/real_data/smoke`` (``--full`` for 5 times
more epochs, ``--seeds 0-4`` for more seeds).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from .mixed import compare_presets, fit_mixed, multiple_correlation, rank_agreement
from .runner import parse_seeds, provenance
from .store import write_json
from .frames import load_exam, load_soybean, split_within_groups
from .tabular import fit, group_structure
from .train import resolve_device

__all__ = ["PRESETS", "FILES", "study_settings", "real_data_command", "run_real_data_study",
           "read_real_data_study", "main"]

PRESETS = ("ml-vae", "gvae", "gvae-ad", "cxvae")
SOY_PRESETS = ("gvae", "cxvae")
BASE_EPOCHS = dict(scores=40, intake=100, soy=200, soy_1d=100)  # the smoke scale; full: 5 times

# file -> what it holds (its columns); read_real_data_study checks that every file is there
FILES = {
    "mixed.csv": "one row per mixed model (model: 'scores alone', 'scores with intake', 'intake'): "
                 "intercept, slope (NaN without a covariate), school variance, residual variance, holdout_nll",
    "mixed_nll.csv": "analysis ('scores alone', 'scores with intake'), holdout_nll: the classical model "
                     "of each analysis (with intake: exam model plus intake model), nats per held-out student",
    "runs_scores.csv": "compare_presets' runs of the scores-alone analysis: preset, seed, holdout_nll, "
                       "u_information, v_information, u~intercept, v~residual (with '... low' / '... high')",
    "runs_intake.csv": "the same for scores with intake: u~intercept, u~standLRT, u~intake, "
                       "v~exam residual, v~intake residual",
    "noise_scores.csv": "preset, seed, noise_std (decoder noise sd of normexam, scores alone), "
                        "within_school_sd (the mixed model's residual sd)",
    "students.csv": "one row per training student (row: the Exam row index): school, standLRT, normexam, "
                    "exam residual, intake residual (mixed models), adjusted_cxvae, adjusted_mixed "
                    "(school-adjusted normexam of the first seed's CxVAE and of the mixed model)",
    "rank_agreement.csv": "one row: rho, low, high (Spearman of the two adjusted scores, 95 % school "
                          "bootstrap), top_overlap (shared fraction of the top tenth)",
    "translation.csv": "what (source school, target school, CxVAE, mixed model), school, row, standLRT, "
                       "normexam: the training students of the source and target school and their translations",
    "soy_weight_only.csv": "one row: u_information, v_information, noise_std, total_sd (CxVAE on log_weight alone)",
    "soy_structure.csv": "code ('u' or 'mean v'), Variety, Year (leave-one-out accuracies), preset, seed, "
                         "u_information, v_information, v_time_R",
    "soy_group_codes.csv": "preset, seed, Plot, u0, u1, Variety, Year",
    "soy_instance_codes.csv": "preset, seed, row, Plot, Time, Variety, v0",
}


def study_settings(smoke: bool = True, seeds: Iterable[int] = (0,), presets: Sequence[str] = PRESETS,
                   epochs: Optional[Dict[str, int]] = None, n_boot: Optional[int] = None,
                   device: str = "cpu") -> dict:
    """The resolved settings of a study: ``scale`` ('smoke' or 'full'), ``epochs`` per analysis
    (:data:`BASE_EPOCHS`, times 5 when not ``smoke``; ``epochs`` overrides single entries),
    ``n_boot`` (200 smoke, 1000 full), seeds, presets and the fixed data split."""
    unknown = set(epochs or {}) - set(BASE_EPOCHS)
    if unknown:
        raise ValueError(f"epochs has unknown analyses {sorted(unknown)}; known: {sorted(BASE_EPOCHS)}")
    if "cxvae" not in presets:
        raise ValueError("the study needs the 'cxvae' preset (sections 5 and 6 use it)")
    scale = 1 if smoke else 5
    return dict(scale="smoke" if smoke else "full", seeds=[int(s) for s in seeds], presets=list(presets),
                soy_presets=list(SOY_PRESETS), epochs={k: v * scale for k, v in BASE_EPOCHS.items()} | dict(epochs or {}),
                n_boot=int(n_boot if n_boot is not None else (200 if smoke else 1000)),
                split=dict(holdout=0.2, min_train=2, seed=0), batch_size=dict(exam=16, soybean=8),
                device=device, threads=1)


def real_data_command(out, smoke: bool = True, seeds: str = "0") -> str:
    """The shell command that (re)makes a study folder at the chapter's settings."""
    return f"python -m cxvae.real_data --out {out} --seeds {seeds}" + ("" if smoke else " --full")


def _write(out: Path, name: str, table: pd.DataFrame) -> None:
    table.to_csv(out / name, index=False)


def run_real_data_study(out="results/real_data/smoke", smoke: bool = True, seeds: Iterable[int] = (0,),
                        presets: Sequence[str] = PRESETS, device: str = "cpu",
                        epochs: Optional[Dict[str, int]] = None, n_boot: Optional[int] = None,
                        progress: bool = True, command: Optional[str] = None) -> Dict[str, pd.DataFrame]:
    """Perform every fit of chapter 9 and write its tables into ``out`` (see :data:`FILES`).

    Args:
        out: the folder (made if missing; its files are overwritten).
        smoke: the chapter's default epochs (:data:`BASE_EPOCHS`); False: 5 times as many.
        seeds: model seeds (the data split is fixed); the figures use the first.
        presets: the presets of the exam analyses (must include ``cxvae``).
        epochs: overrides per analysis (``scores``, ``intake``, ``soy``, ``soy_1d``), e.g. for tests.
        n_boot: bootstrap resamples of the correlation intervals (default 200 smoke, 1000 full).
        progress: print one line per analysis (with its time) to stderr.
        command: the command recorded in ``config.json`` (default: the call's equivalent).
    Returns:
        :func:`read_real_data_study` of ``out``.

    Trains with one CPU thread (``torch.set_num_threads(1)``, restored afterwards).
    """
    seeds = [int(s) for s in seeds]
    settings = study_settings(smoke, seeds, presets, epochs, n_boot, device)
    ep, n_boot, first = settings["epochs"], settings["n_boot"], seeds[0]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    threads, start = torch.get_num_threads(), time.time()
    prov = provenance(resolve_device(device))  # at the start: the commit the study ran from
    torch.set_num_threads(1)

    def say(what):
        if progress:
            print(f"[real_data] {what} ({time.time() - start:.0f} s)", file=sys.stderr, flush=True)

    try:
        exam = load_exam()
        train, held = split_within_groups(exam, "school", **settings["split"])
        # the classical baselines
        mixed_scores = fit_mixed(train, "normexam", "school")
        mixed_exam = fit_mixed(train, "normexam", "school", covariates=["standLRT"], random_slopes=["standLRT"])
        mixed_intake = fit_mixed(train, "standLRT", "school")
        _write(out, "mixed.csv", pd.DataFrame([
            {"model": name, "intercept": m.beta[0], "slope": m.beta[1] if len(m.beta) > 1 else np.nan,
             "school variance": m.psi[0, 0], "residual variance": m.residual_var, "holdout_nll": m.holdout_nll(held)}
            for name, m in [("scores alone", mixed_scores), ("scores with intake", mixed_exam),
                            ("intake", mixed_intake)]]))
        _write(out, "mixed_nll.csv", pd.DataFrame(dict(
            analysis=["scores alone", "scores with intake"],
            holdout_nll=[mixed_scores.holdout_nll(held), mixed_exam.holdout_nll(held) + mixed_intake.holdout_nll(held)])))
        say("mixed models")
        # scores alone
        models, runs = compare_presets(train, held, group="school", values=["normexam"], presets=presets,
                                       seeds=seeds, epochs=ep["scores"], effects=mixed_scores.group_effects(),
                                       residuals=mixed_scores.residuals().to_frame(), device=device, n_boot=n_boot)
        _write(out, "runs_scores.csv", runs)
        _write(out, "noise_scores.csv", pd.DataFrame(
            [dict(preset=p, seed=s, noise_std=float(m.noise_std["normexam"]),
                  within_school_sd=float(np.sqrt(mixed_scores.residual_var))) for (p, s), m in models.items()]))
        say("scores alone")
        # scores with intake
        effects = mixed_exam.group_effects().join(mixed_intake.group_effects().rename(columns={"intercept": "intake"}))
        residuals = pd.DataFrame({"exam residual": mixed_exam.residuals(), "intake residual": mixed_intake.residuals()})
        models, runs = compare_presets(train, held, group="school", values=["standLRT", "normexam"], presets=presets,
                                       seeds=seeds, epochs=ep["intake"], effects=effects, residuals=residuals,
                                       device=device, n_boot=n_boot)
        _write(out, "runs_intake.csv", runs)
        say("scores with intake")
        # school-adjusted scores and translation, with the first seed's CxVAE
        cx = models["cxvae", first]
        learned, reference = cx.adjusted()["normexam"], mixed_exam.adjusted()
        agreement = rank_agreement(learned, reference, clusters=train.school, n_boot=n_boot)
        _write(out, "rank_agreement.csv", pd.DataFrame([agreement]))
        _write(out, "students.csv", train[["school", "standLRT", "normexam"]].join(residuals).assign(
            adjusted_cxvae=learned, adjusted_mixed=reference).rename_axis("row").reset_index())
        big = effects.loc[train.groupby("school").size().loc[lambda s: s >= 30].index, "intercept"]
        source, target = big.idxmin(), big.idxmax()
        src = train[train.school == source]
        parts = {"source school": src[["standLRT", "normexam"]], "target school": train[train.school == target][["standLRT", "normexam"]],
                 "CxVAE": cx.translate(source, target),
                 "mixed model": pd.DataFrame({"standLRT": src.standLRT, "normexam": mixed_exam.translate(source, target)})}
        _write(out, "translation.csv", pd.concat(
            [t.assign(what=w, school=target if w == "target school" else source).rename_axis("row").reset_index()
             for w, t in parts.items()])[["what", "school", "row", "standLRT", "normexam"]])
        say("adjusted scores and translation")
        # soybean
        soy = load_soybean()
        plots = soy.groupby("Plot")[["Variety", "Year"]].first()
        one = fit(soy, "Plot", ["log_weight"], preset="cxvae", epochs=ep["soy_1d"], batch_size=8, seed=first, device=device)
        _write(out, "soy_weight_only.csv", pd.DataFrame([dict(
            u_information=one.group_information(), v_information=one.instance_information(),
            noise_std=float(one.noise_std["log_weight"]), total_sd=float(soy.log_weight.std(ddof=0)))]))
        tables, u_codes, v_codes = [], [], []
        for preset in SOY_PRESETS:
            for seed in seeds:
                m = fit(soy, "Plot", ["Time", "log_weight"], preset=preset, epochs=ep["soy"], batch_size=8,
                        seed=seed, device=device)
                v = m.instance_codes()
                info = dict(u_information=m.group_information(), v_information=m.instance_information(),
                            v_time_R=multiple_correlation(soy.Time, v.to_numpy(), n_boot=1)["r"])
                tables.append(group_structure(m, soy, plots).assign(preset=preset, seed=seed, **info))
                u_codes.append(m.group_codes().join(plots).rename_axis("Plot").reset_index().assign(preset=preset, seed=seed))
                v_codes.append(soy[["Plot", "Time", "Variety"]].join(v[["v0"]]).rename_axis("row").reset_index()
                               .assign(preset=preset, seed=seed))
        _write(out, "soy_structure.csv", pd.concat(tables).rename_axis("code").reset_index())
        first_cols = ["preset", "seed"]
        u_all = pd.concat(u_codes)
        _write(out, "soy_group_codes.csv", u_all[first_cols + [c for c in u_all.columns if c not in first_cols]])
        v_all = pd.concat(v_codes)
        _write(out, "soy_instance_codes.csv", v_all[first_cols + [c for c in v_all.columns if c not in first_cols]])
        say("soybean")
    finally:
        torch.set_num_threads(threads)
    command = command or (f"cxvae.real_data.run_real_data_study(out={str(out)!r}, smoke={smoke}, "
                          f"seeds={seeds}, presets={list(presets)}, device={device!r}, epochs={epochs}, n_boot={settings['n_boot']})")
    config = dict(study="real_data", settings=settings, command=command, files=FILES,
                  seconds=round(time.time() - start, 1), provenance=prov)
    write_json(out / "config.json", config)
    return read_real_data_study(out)


def read_real_data_study(folder) -> Dict[str, object]:
    """The tables of a study folder: ``{name without .csv: DataFrame}`` for every file of
    :data:`FILES`, plus ``config`` (the parsed ``config.json``) and ``folder``.

    Raises:
        FileNotFoundError: the folder, its ``config.json`` or one of its tables is missing (the
            message names the command that makes it).
    """
    folder = Path(folder)
    remedy = f"make it with: {real_data_command(folder, smoke=folder.name != 'full')}"
    if not folder.is_dir():
        raise FileNotFoundError(f"no real-data study at {folder}; {remedy}")
    missing = [n for n in ["config.json", *FILES] if not (folder / n).exists()]
    if missing:
        raise FileNotFoundError(f"the real-data study at {folder} lacks {missing}; {remedy}")
    tables = {n[:-4]: pd.read_csv(folder / n) for n in FILES}
    return tables | dict(config=json.loads((folder / "config.json").read_text()), folder=str(folder))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m cxvae.real_data [--out DIR] [--seeds 0] [--full] [--device cpu]``."""
    p = argparse.ArgumentParser(prog="python -m cxvae.real_data", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="the folder (default results/real_data/<smoke|full>)")
    p.add_argument("--seeds", default="0", help="model seeds, e.g. 0-4 (default 0)")
    p.add_argument("--full", action="store_true", help="5 times more epochs than the chapter's default")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    smoke = not args.full
    out = args.out or f"results/real_data/{'smoke' if smoke else 'full'}"
    command = "python -m cxvae.real_data " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    run_real_data_study(out, smoke=smoke, seeds=parse_seeds(args.seeds), device=args.device, command=command.strip())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
