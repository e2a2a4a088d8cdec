"""How much each metric moves when only the CPU's kernels change: score the same models under
several kernel settings and write the scores to a CSV (chapter 5 reads it).

Usage (from the repository root, after `bash scripts/test.sh` made .venv):

    .venv/bin/python scripts/kernel_spread.py --out results/paper/kernel_spread.csv \
        --models results/paper/models/cxvae-0.pt,results/paper/models/ml-vae-0.pt

Each setting runs in its own process, because PyTorch reads ATEN_CPU_CAPABILITY (its vectorised
kernels) and MKL reads MKL_CBWR (its matrix-product kernels) once, at start-up. The settings:
the machine's own dispatch, ATEN_CPU_CAPABILITY=avx2, =default (no SIMD), and MKL_CBWR=COMPATIBLE
(MKL's vendor-neutral code path, the closest one machine gets to another vendor's CPU). Every
metric of cxvae.metrics.METRICS is scored on the paper scale's holdout groups, and beside them the
trained probes that the study used before the closed-form ones: the Deep Sets v-probe
(v_probe_deepsets_mse) and the MLP u-probe (u_probe_mlp_mse). By default the oracle, CxVAE seed 0
and ML-VAE seed 0. --probes-only measures the probes alone and replaces their rows (how the
closed-form u-probe was measured on 2026-12-04):

    .venv/bin/python scripts/kernel_spread.py --probes-only --out results/paper/kernel_spread.csv
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

SETTINGS = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "default": {"ATEN_CPU_CAPABILITY": "default"},
    "mkl-compatible": {"MKL_CBWR": "COMPATIBLE"},
}


PROBES = ("u_probe_mse", "u_probe_mlp_mse", "v_probe_mse", "v_probe_deepsets_mse", "instance_probe_mse")


def score_here(models, threads: int, probes_only: bool = False) -> dict:
    """Every metric of the oracle and of each checkpoint (only the probes of :data:`PROBES` with
    ``probes_only``), in this process's kernels."""
    import torch

    from cxvae.config import RunConfig, make_run_config
    from cxvae.evaluation import ModelScorer
    from cxvae.metrics import probe_mses, u_probe_mlp_mse, v_probe_deepsets_mse
    from cxvae.model import load_model
    from cxvae.oracle import ExamScoresOracle
    from cxvae.runner import probe_config, score
    from cxvae.train import make_splits

    torch.set_num_threads(threads)
    cfg = make_run_config("cxvae", scale="paper", device="cpu")
    splits = make_splits(cfg.data)
    probe = probe_config(cfg)
    train, holdout = splits["train"].subset(slice(0, probe.max_train)), splits["holdout"]
    rows = {}
    for name in ["oracle", *models]:
        if name == "oracle":
            scorer = ExamScoresOracle(noise_std=cfg.data.noise_std)
        else:
            model, config = load_model(name, map_location="cpu")
            scorer = ModelScorer(model, n_samples=RunConfig.from_dict(config).eval.iwae_samples,
                                 seed=RunConfig.from_dict(config).seed)
        (tr_u, tr_v), (te_u, te_v) = scorer.codes(train), scorer.codes(holdout)
        if probes_only:
            metrics = probe_mses([(tr_u, tr_v)], train, [(te_u, te_v)], holdout, probe)
            metrics = {name: float(values[0]) for name, values in metrics.items()}
        else:
            metrics = score(scorer, cfg, splits)
        metrics["u_probe_mlp_mse"] = u_probe_mlp_mse(tr_u, train.u, te_u, holdout.u, probe)
        metrics["v_probe_deepsets_mse"] = v_probe_deepsets_mse(tr_v, train.mask, train.u, te_v, holdout.mask,
                                                               holdout.u, probe)
        rows[Path(name).stem] = metrics
    return dict(capability=torch.backends.cpu.get_cpu_capability(), scores=rows)


def _rows(outputs: dict) -> list:
    """The long table's rows from each setting's worker output (setting -> its stdout)."""
    rows = []
    for setting, out in outputs.items():
        result = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
        print(f"{setting}: kernels {result['capability']}", flush=True)
        for scorer, metrics in result["scores"].items():
            rows += [dict(setting=setting, capability=result["capability"], scorer=scorer, metric=metric,
                          value=value) for metric, value in metrics.items()]
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="results/paper/models/cxvae-0.pt,results/paper/models/ml-vae-0.pt")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=1, help="settings scored side by side (each its own process)")
    parser.add_argument("--out", default="results/paper/kernel_spread.csv")
    parser.add_argument("--probes-only", action="store_true",
                        help="score only the probes and replace their rows in --out (the other rows, with "
                             "their own commit, stay): the cheap way to measure a new probe")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    models = [m for m in args.models.split(",") if m]
    if args.worker:
        print("RESULT " + json.dumps(score_here(models, args.threads, args.probes_only)))
        return 0
    import pandas as pd

    from cxvae.runner import provenance

    import torch

    rows, settings = [], args.settings.split(",")

    def start(setting):
        env = dict(os.environ, **SETTINGS[setting])
        return subprocess.Popen([sys.executable, __file__, "--worker", "--models", args.models, "--threads",
                                 str(args.threads), *(["--probes-only"] if args.probes_only else [])],
                                env=env, stdout=subprocess.PIPE, text=True)

    running = {}
    for i, setting in enumerate(settings):  # at most --jobs settings side by side, each its own process
        running[setting] = start(setting)
        if len(running) < args.jobs and i + 1 < len(settings):
            continue
        for name, proc in running.items():
            out, _ = proc.communicate()
            if proc.returncode:
                raise SystemExit(f"kernel_spread.py: the {name} setting failed (exit {proc.returncode})")
            running[name] = out
        outputs = dict(running)
        running = {}
        rows += _rows(outputs)
    table = pd.DataFrame(rows).assign(threads=args.threads, **provenance(torch.device("cpu")))
    if args.probes_only and Path(args.out).exists():
        before = pd.read_csv(args.out)
        table = pd.concat([before[~before.metric.isin(PROBES)], table], ignore_index=True)

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    spread = table.groupby(["scorer", "metric"]).value.agg(lambda v: (v.max() - v.min()) / abs(v).max())
    print(spread.unstack(0).to_string(float_format=lambda x: f"{x:.1e}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
