"""The ``cxvae`` command line: ``cxvae train``, ``cxvae evaluate``, ``cxvae sweep``, ``cxvae oracle``,
``cxvae summary``, ``cxvae gap``, ``cxvae decompose``, ``cxvae strength``, ``cxvae bench``, ``cxvae merge``,
``cxvae rescore``, ``cxvae check``, ``cxvae table-bench``, ``cxvae table-splits`` and ``cxvae held-back``. ``cxvae sweep`` and ``cxvae strength`` train in this
process or, with ``--engine ray``, on a Ray cluster (:mod:`cxvae.engine`).

Run ``cxvae COMMAND --help`` for the options of each command.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from .config import (DECODERS, GROUP_ENCODERS, INSTANCE_ENCODERS, PRESETS, REGULARISERS, SCALES,
                     ConfigError, make_run_config)
from .data import DataError
from .engine import TaskFailed
from .strength import STRENGTHS
from .train import TrainingDiverged

__all__ = ["main", "build_parser"]


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scale", default="smoke", help=f"one of: {', '.join(SCALES)} (default smoke)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--group-encoder", help=f"override the preset's: {', '.join(GROUP_ENCODERS)}")
    p.add_argument("--instance-encoder", help=f"override the preset's: {', '.join(INSTANCE_ENCODERS)}")
    p.add_argument("--regulariser", help=f"override the preset's: {', '.join(REGULARISERS)}")
    p.add_argument("--decoder", help=f"override the preset's: {', '.join(DECODERS)}")
    p.add_argument("--epochs", type=int, help="override the scale's number of epochs")
    p.add_argument("--batch-size", type=int, help="override the scale's batch size (groups)")
    p.add_argument("--lr", type=float, help="override the learning rate")
    p.add_argument("--reg-weight", type=float, help="override the regulariser weight")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_engine_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", default="local",
                   help="local (default: train in this process) or ray (one Ray task per block; README, 'On a cluster')")
    p.add_argument("--address", default=None,
                   help="with --engine ray: the cluster, auto or HOST:PORT of its head (default: a local Ray)")
    p.add_argument("--task-cpus", type=int, default=1, help="with --engine ray: CPUs (torch threads) per task (default 1)")
    p.add_argument("--task-gpus", type=float, default=None,
                   help="with --engine ray: GPUs per task, a fraction shares one (default 1 on CUDA, else 0)")


def _engine_options(args) -> dict:
    return dict(engine=args.engine, address=args.address, task_cpus=args.task_cpus, task_gpus=args.task_gpus)


def _overrides(args) -> dict:
    model = {k: getattr(args, k) for k in ("group_encoder", "instance_encoder", "regulariser", "decoder")
             if getattr(args, k, None) is not None}
    train = {k: getattr(args, k) for k in ("epochs", "batch_size", "lr", "reg_weight")
             if getattr(args, k, None) is not None}
    return dict(model=model, train=train)


def _cmd_train(args) -> int:
    from .train import save_run, train

    cfg = make_run_config(args.preset, seed=args.seed, scale=args.scale, device=args.device, **_overrides(args))
    result = train(cfg, progress=not args.quiet)
    out = save_run(args.out, result)
    last = result.history.iloc[-1]
    print(f"{cfg.preset} seed {cfg.seed} ({cfg.scale}): {len(result.history)} epochs in {result.seconds:.1f} s; "
          f"train -ELBO/obs {result.history.train_neg_elbo.iloc[0]:.3f} -> {last.train_neg_elbo:.3f}, "
          f"valid -ELBO/obs {last.valid_neg_elbo:.3f}; wrote {out}")
    return 0


def _cmd_evaluate(args) -> int:
    from .config import RunConfig
    from .evaluation import ModelScorer
    from .model import load_model
    from .runner import score
    from .train import make_splits, resolve_device

    device = resolve_device(args.device)
    model, config = load_model(args.checkpoint, map_location=device)
    cfg = RunConfig.from_dict(config)
    if args.scale is not None:  # score on another scale's data (same generator, other sizes)
        cfg = make_run_config(cfg.preset, seed=cfg.seed, scale=args.scale, device=args.device)
    splits = {k: v.to(device) for k, v in make_splits(cfg.data).items()}
    metrics = score(ModelScorer(model, n_samples=cfg.eval.iwae_samples, seed=cfg.seed), cfg, splits)
    width = max(map(len, metrics))
    for name, value in metrics.items():
        print(f"{name:<{width}}  {value:.4f}")
    return 0


def _cmd_sweep(args) -> int:
    from .runner import main_sweep_summary, parse_seeds, sweep

    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    for p in presets:
        make_run_config(p)  # unknown names fail here, before any training
    command = "cxvae " + " ".join(sys.argv[1:]) if args.command_line is None else args.command_line
    overrides = None if args.epochs is None else dict(train=dict(epochs=args.epochs))
    sweep(presets, parse_seeds(args.seeds), scale=args.scale, device=args.device, out=args.out,
          progress=not args.quiet, command=command, stack=args.stack, score_together=args.score_together,
          cuda_graphs=args.cuda_graphs, overrides=overrides, **_engine_options(args))
    if not (Path(args.out) / "oracle.csv").exists():  # the reference row belongs beside every table
        from .runner import run_oracle

        run_oracle(scale=args.scale, out=args.out)
    print(main_sweep_summary(args.out))
    return 0


def _cmd_oracle(args) -> int:
    from .runner import run_oracle

    metrics = run_oracle(scale=args.scale, out=args.out)
    print("oracle (exact Bayes-optimal reference): " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return 0


def _cmd_rescore(args) -> int:
    from .runner import LEGACY_PROBES, RESCORABLE, rescore

    metrics = args.metrics.split(",") if args.metrics else list(RESCORABLE)
    for out in args.out:
        runs = rescore(out, metrics, progress=not args.quiet)
        for metric in metrics:
            kept = (f", their trained-probe score stays in {LEGACY_PROBES[metric]}" if metric in LEGACY_PROBES
                    else "")
            print(f"{out}: {metric} rescored for {int(runs[metric].notna().sum())} of {len(runs)} runs (the "
                  f"others' models were not kept: NaN{kept})")
        print(f"{out}: oracle rescored" if (Path(out) / "oracle.csv").exists() else f"{out}: no oracle to rescore")
    return 0


def _cmd_decompose(args) -> int:
    from .gap import decompose_study, rescore_gap_probes
    from .runner import parse_seeds

    if args.rescore_probes:
        for name, table in rescore_gap_probes(args.study, args.out, progress=not args.quiet).items():
            print(f"{args.out}/{name}: u_probe_mse and v_probe_mse rescored for {len(table)} rows")
        return 0
    table = decompose_study(args.study, args.out, preset=args.preset,
                            seeds=parse_seeds(args.seeds) if args.seeds else None, progress=not args.quiet)
    print(table.groupby("step", sort=False).median(numeric_only=True).drop(columns="seed").round(4).to_string())
    return 0


def _cmd_summary(args) -> int:
    from .runner import main_sweep_summary

    print(main_sweep_summary(args.out))
    return 0


def _cmd_gap(args) -> int:
    from .runner import posterior_gap_study

    presets = [p.strip() for p in args.presets.split(",")] if args.presets else None
    table = posterior_gap_study(args.out, presets)
    print(table[table.K == "all"].round(3).to_string(index=False))
    return 0


def _cmd_merge(args) -> int:
    from .runner import format_seeds, merge_study

    added = merge_study(args.src, args.into, replace=args.replace)
    if added.empty:
        print(f"nothing to merge: {args.into} already has every run of {args.src}")
    for preset, seeds in added.groupby("preset", sort=False).seed:
        print(f"{preset}: seeds {format_seeds(seeds)} {'replaced in' if args.replace else 'added to'} {args.into}")
    return 0


def health_report(health) -> str:
    """What ``cxvae check`` prints of a :class:`cxvae.store.Health`: the sound runs by preset and
    seeds, the oracle, runs without a curve or a model, problems and damaged rows (with why)."""
    from .runner import format_seeds
    from .store import DAMAGED_CSV, RUNS_CSV

    folder, lines = health.folder, []
    if health.runs is not None:
        scale = f" at {health.scale} scale" if health.scale else ""
        lines.append(f"{folder}: {len(health.runs)} sound run(s){scale}")
        for preset, seeds in health.runs.groupby("preset", sort=False).seed:
            lines.append(f"  {preset}: {len(seeds)} seed(s) ({format_seeds(seeds)})")
        lines.append(f"  oracle: {health.oracle}")
        for what, names in (("a curve (histories/)", health.no_curve), ("a model (models/)", health.no_model)):
            if names:
                lines.append(f"  {len(names)} run(s) without {what}: {', '.join(names[:6])}{' ...' if len(names) > 6 else ''}")
    lines += [f"problem: {p}" for p in health.problems]
    if health.damaged:
        lines.append(f"{len(health.damaged)} damaged row(s) in {folder / RUNS_CSV}, which do not count:")
        lines += [f"  {d}" for d in health.damaged]
        lines.append(f"(`cxvae check {folder} --set-aside` moves them to {DAMAGED_CSV}; the next sweep runs them again)")
    lines.append("healthy" if health.healthy else "damaged")
    return "\n".join(lines)


def _cmd_check(args) -> int:
    from .store import DAMAGED_CSV, check, set_aside

    health = check(args.folder)
    print(health_report(health))
    if args.set_aside and health.damaged:
        moved = set_aside(args.folder)
        print(f"moved {len(moved)} damaged row(s) to {Path(args.folder) / DAMAGED_CSV}; the next sweep runs them again")
        health = check(args.folder)
        print("healthy" if health.healthy else "damaged")
    return 0 if health.healthy else 1


def _cmd_strength(args) -> int:
    from .runner import parse_seeds
    from .strength import strength_study, summarise_strength

    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    for p in presets:
        make_run_config(p)  # unknown names fail here, before any training
    try:
        strengths = [float(c) for c in args.strengths.split(",")]
    except ValueError:
        raise ConfigError(f"cannot read strengths {args.strengths!r}; use e.g. 0,0.5,1") from None
    command = "cxvae " + " ".join(sys.argv[1:]) if args.command_line is None else args.command_line
    table = strength_study(strengths, presets, parse_seeds(args.seeds), scale=args.scale, out=args.out,
                           device=args.device, stack=args.stack, progress=not args.quiet, command=command,
                           **_engine_options(args))
    summary = summarise_strength(table, metrics=["translation_mse"])
    print("median translation MSE by group strength c:")
    print(summary.pivot(index="group_strength", columns="preset", values="median").round(3).to_string())
    return 0


def _parse_stacks(text: str) -> list:
    """``--stacks 1,10`` read like seeds, but with an error that names the right option."""
    from .runner import parse_seeds

    try:
        return parse_seeds(text)
    except ConfigError:
        raise ConfigError(f"cannot read --stacks {text!r}; use stack sizes such as 1,10") from None


def _cmd_bench(args) -> int:
    from .bench import benchmark_table

    stacks = _parse_stacks(args.stacks)
    table = benchmark_table([p.strip() for p in args.presets.split(",")], scale=args.scale, device=args.device,
                            steps=args.steps, seeds=args.seeds, stacks=stacks,
                            cuda_graphs=args.cuda_graphs, repeats=args.repeats)
    print(table.to_string(index=False))
    if args.score:
        from .bench import scoring_table

        print(scoring_table([p.strip() for p in args.presets.split(",")], scale=args.scale, device=args.device,
                            stacks=stacks).to_string(index=False))
    return 0


def _cmd_table_splits(args) -> int:
    import shlex

    from .runner import parse_seeds
    from .table_bench import CLASSICAL, DATASETS, best_against_best, run_repeated

    tables = list(DATASETS) if args.tables == "all" else [t.strip() for t in args.tables.split(",")]
    models = [m.strip() for m in args.models.split(",")]
    command = (f"cxvae table-splits --tables {args.tables} --models {args.models} --splits {args.splits} "
               f"--kinds {args.kinds} --out {shlex.quote(str(args.out))}")
    runs = run_repeated(args.out, tables, models, parse_seeds(args.splits), [k.strip() for k in args.kinds.split(",")],
                        command=command, progress=not args.quiet)
    presets = [m for m in dict.fromkeys(runs.model) if m not in CLASSICAL]
    compared = best_against_best(runs, presets) if presets else None
    if compared is None or compared.empty:
        print(f"{args.out}: no table has both a preset and a classical model yet, so there is nothing to compare")
    else:
        print(compared.round(4).to_string(index=False))
    return 0


def _cmd_held_back(args) -> int:
    import shlex

    from .runner import parse_seeds
    from .table_bench import held_back_gain, run_held_back

    command = (f"cxvae held-back --pairs {args.pairs} --presets {args.presets} --splits {args.splits} "
               f"--out {shlex.quote(str(args.out))}")
    runs = run_held_back(args.out, args.pairs.split(","), args.presets.split(","), parse_seeds(args.splits),
                         command=command, progress=not args.quiet)
    print("held-out NLL on all training groups minus at the defaults (nats a row; mean over splits, 95% t-interval):")
    print(held_back_gain(runs).round(4).to_string(index=False))
    return 0


def _cmd_table_bench(args) -> int:
    import shlex

    from .runner import parse_seeds
    from .table_bench import DATASETS, run_into, summarise

    tables = list(DATASETS) if args.tables == "all" else [t.strip() for t in args.tables.split(",")]
    command = (f"cxvae table-bench --tables {args.tables} --presets {args.presets} --seeds {args.seeds} "
               f"--epochs {args.epochs} --batch-size {args.batch_size} --out {shlex.quote(str(args.out))}")
    runs = run_into(args.out, tables, [p.strip() for p in args.presets.split(",")], parse_seeds(args.seeds),
                    epochs=args.epochs, batch_size=args.batch_size, command=command)
    print(summarise(runs).round(4).to_string())
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``cxvae`` command line: one sub-command per task (``cxvae --help`` lists them)."""
    parser = argparse.ArgumentParser(prog="cxvae", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train one model and save config.json, model.pt, history.csv")
    p.add_argument("--preset", default="cxvae", help=f"one of: {', '.join(PRESETS)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/train", help="output folder (default runs/train)")
    _add_run_options(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="score a checkpoint (model.pt) on its scale's holdout groups")
    p.add_argument("checkpoint")
    p.add_argument("--device", default="auto")
    p.add_argument("--scale", default=None, help="score on this scale's data instead of the run's own")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("sweep", help="train and score many presets and seeds; resumable")
    p.add_argument("--presets", default="ml-vae,gvae,gvae-ad,cxvae", help="comma-separated preset names")
    p.add_argument("--seeds", default="0-2", help="e.g. 0-99 or 0,1,2 (default 0-2)")
    p.add_argument("--scale", default="smoke", help=f"one of: {', '.join(SCALES)}")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="results/sweep")
    p.add_argument("--epochs", type=int, default=None,
                   help="train for this many epochs instead of the scale's (e.g. a budget study)")
    p.add_argument("--stack", type=int, default=1,
                   help="seeds of a preset trained at once, vectorised (default 1; e.g. 10 on a CPU, 100 on a GPU)")
    p.add_argument("--score-together", action="store_true",
                   help="score a stack's runs at once, their probes vectorised (for a GPU; no faster on a CPU)")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="replay the training step from CUDA graphs (CUDA only; fewer kernel launches)")
    _add_engine_options(p)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--command-line", default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("oracle", help="score the exact Bayes-optimal reference; writes oracle.csv")
    p.add_argument("--scale", default="smoke", help=f"one of: {', '.join(SCALES)}")
    p.add_argument("--out", default="results/sweep")
    p.set_defaults(func=_cmd_oracle)

    p = sub.add_parser("gap", help="each saved model's group posterior against the exact one")
    p.add_argument("--out", default="results/sweep", help="a study folder with models/")
    p.add_argument("--presets", default=None, help="comma-separated presets (default: all saved)")
    p.set_defaults(func=_cmd_gap)

    p = sub.add_parser("strength", help="the group-strength study (paper 6.3): presets x seeds at each strength c")
    p.add_argument("--strengths", default=",".join(map(str, STRENGTHS)),
                   help="comma-separated group strengths c (default: 7 from 0 to 1)")
    p.add_argument("--presets", default="ml-vae,gvae,gvae-ad,cxvae", help="comma-separated preset names")
    p.add_argument("--seeds", default="0-19", help="e.g. 0-19 (default)")
    p.add_argument("--scale", default="study", help=f"one of: {', '.join(SCALES)} (default study)")
    p.add_argument("--device", default="auto")
    p.add_argument("--stack", type=int, default=20, help="seeds trained at once (default 20)")
    p.add_argument("--out", default="results/strength")
    _add_engine_options(p)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--command-line", default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_strength)

    p = sub.add_parser("bench", help="training throughput per preset on this device, and the full study's cost")
    p.add_argument("--presets", default="ml-vae,gvae,gvae-ad,cxvae")
    p.add_argument("--scale", default="paper", help=f"one of: {', '.join(SCALES)} (default paper)")
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=30, help="timed training steps per preset (default 30)")
    p.add_argument("--repeats", type=int, default=1,
                   help="time this many windows of --steps steps and print the median, with the slowest and "
                        "fastest window's groups/s (default 1)")
    p.add_argument("--seeds", type=int, default=100, help="seeds per preset in the cost estimate (default 100)")
    p.add_argument("--stacks", default="1,10", help="stack sizes (seeds trained at once) to time (default 1,10)")
    p.add_argument("--score", action="store_true",
                   help="also time scoring per run, one run alone and a stack of runs together")
    p.add_argument("--cuda-graphs", action="store_true", help="time the training step replayed from CUDA graphs")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("merge", help="bring the finished runs of a copy of a study folder back into it")
    p.add_argument("src", help="the copy, extended elsewhere (e.g. unpacked from a GPU machine)")
    p.add_argument("--into", required=True, help="the study folder, e.g. results/paper")
    p.add_argument("--replace", action="store_true",
                   help="the copy's runs replace the folder's runs of the same (preset, seed) (runs retrained on "
                        "purpose, e.g. by scripts/paper_study_gpu.py --redo-unkept)")
    p.set_defaults(func=_cmd_merge)

    p = sub.add_parser("rescore", help="score the kept models of study folders again: the closed-form probes "
                       "(u_probe_mse, v_probe_mse) and the later metric recon_sampled_mse")
    p.add_argument("out", nargs="+", help="study folders with runs.csv and models/ (e.g. results/paper)")
    p.add_argument("--metrics", default="", help="comma-separated subset of u_probe_mse,v_probe_mse,recon_sampled_mse "
                   "(default: all three)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_rescore)

    p = sub.add_parser("decompose", help="the gap of a study's kept models to the oracle, part by part")
    p.add_argument("study", help="a study folder with models/ (e.g. results/paper)")
    p.add_argument("--preset", default="cxvae")
    p.add_argument("--seeds", help="seeds to decompose, e.g. 0-19 (default: every kept model)")
    p.add_argument("--out", default="results/gap")
    p.add_argument("--rescore-probes", action="store_true",
                   help="only rescore the closed-form probes of OUT's decomposition.csv and amortisation.csv")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_decompose)

    p = sub.add_parser("table-bench", help="holdout NLL of MixedLM and presets on public multilevel tables")
    p.add_argument("--tables", default="all", help="comma-separated cxvae.table_bench.DATASETS names (default all)")
    p.add_argument("--presets", default="ml-vae,ml-vae-corrected,gvae,gvae-ad,cxvae")
    p.add_argument("--seeds", default="0-4", help="model seeds, e.g. 0-4 or 0,1 (default 0-4)")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", default="results/tabular_benchmark")
    p.set_defaults(func=_cmd_table_bench)

    p = sub.add_parser("table-splits", help="held-out NLL on public multilevel tables over repeated splits: "
                       "MixedLM, GPBoost and presets at their defaults, resumable")
    p.add_argument("--tables", default="all", help="comma-separated cxvae.table_bench.DATASETS names (default all)")
    p.add_argument("--models", default="MixedLM,GPBoost-LMM,GPBoost-trees,gvae,cxvae",
                   help="classical models (MixedLM, GPBoost-LMM, GPBoost-trees) and presets, comma-separated")
    p.add_argument("--splits", default="0-9", help="split seeds, e.g. 0-9 (default: 10 splits)")
    p.add_argument("--kinds", default="within,new", help="split kinds: within (known groups), new (new groups)")
    p.add_argument("--out", default="results/table_splits")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_table_splits)

    p = sub.add_parser("held-back", help="what the groups fit holds back for early stopping cost: each preset at its "
                       "defaults against the same preset fitted on all training groups for as many steps")
    p.add_argument("--pairs", default="sleepstudy:new,orthodont:within", help="comma-separated TABLE:KIND")
    p.add_argument("--presets", default="cxvae,gvae")
    p.add_argument("--splits", default="0-9", help="split seeds, e.g. 0-9 (default: 10 splits)")
    p.add_argument("--out", default="results/held_back")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_held_back)

    p = sub.add_parser("check", help="a study folder's health: its runs, damaged rows (exit 1) and missing files")
    p.add_argument("folder", help="a study folder with runs.csv (e.g. results/paper)")
    p.add_argument("--set-aside", action="store_true",
                   help="move damaged rows to runs.damaged.csv, so that the next sweep runs them again")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("summary", help="print the median [95%% interval] table of a study folder")
    p.add_argument("--out", default="results/sweep")
    p.set_defaults(func=_cmd_summary)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``cxvae`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    # user errors: one line, no traceback. The library reports bad input as ConfigError (settings, study
    # files) or DataError (data), both ValueErrors; other exceptions are bugs and keep their traceback.
    except (ConfigError, DataError, TrainingDiverged, FileNotFoundError, TaskFailed) as err:
        print(f"cxvae {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
