"""The ``cxvae`` command line: ``cxvae train``, ``cxvae evaluate``, ``cxvae sweep``, ``cxvae oracle``.

Run ``cxvae COMMAND --help`` for the options of each command.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from .config import (DECODERS, GROUP_ENCODERS, INSTANCE_ENCODERS, PRESETS, REGULARISERS, SCALES,
                     ConfigError, make_run_config)

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cxvae", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train one model and save config.json, model.pt, history.csv")
    p.add_argument("--preset", default="cxvae", help=f"one of: {', '.join(PRESETS)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/train", help="output folder (default runs/train)")
    _add_run_options(p)
    p.set_defaults(func=_cmd_train)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``cxvae`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, ValueError, RuntimeError) as err:  # user errors: one clear line, no traceback
        print(f"cxvae {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
