"""Study folders written by hand for the tests (no training): rows with every column a study's
runs.csv has (cxvae.store.RUN_COLUMNS), a config.json and the runs' curves. Only names that
predate cxvae.store are imported, so the tests of damaged folders also run against older code."""
import json
from pathlib import Path

import pandas as pd

from cxvae.config import make_run_config
from cxvae.metrics import METRICS


def run_row(preset: str, seed: int, scale: str = "smoke", **values) -> dict:
    """A sound row of runs.csv: every metric 1.0 plus 0.01 per seed, unless ``values`` say otherwise."""
    row = dict(preset=preset, seed=seed, scale=scale, **{m: 1.0 + 0.01 * seed for m in METRICS},
               final_train_neg_elbo=2.0, final_valid_neg_elbo=2.1, train_seconds=1.5, score_seconds=0.5,
               version="0.1.0", git_commit="abcdef123456", torch="2.0", python="3.11", device="cpu (x86_64)")
    row.update(values)
    return row


def write_study(folder, runs, scale: str = "smoke", config: bool = True, curves: bool = True, **overrides) -> Path:
    """A study folder holding ``runs`` ((preset, seed) pairs or rows): runs.csv, and unless told
    otherwise config.json (each preset at ``scale`` with ``overrides``) and every run's curve."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = [r if isinstance(r, dict) else run_row(*r, scale=scale) for r in runs]
    pd.DataFrame(rows).to_csv(folder / "runs.csv", index=False)
    if config:
        presets = {p: {k: v for k, v in make_run_config(p, scale=scale, **overrides).to_dict().items() if k != "seed"}
                   for p in dict.fromkeys(r["preset"] for r in rows)}
        (folder / "config.json").write_text(json.dumps(dict(presets=presets, commands=[]), indent=2, sort_keys=True))
    if curves:
        (folder / "histories").mkdir(exist_ok=True)
        for r in rows:
            pd.DataFrame(dict(epoch=[1], train_neg_elbo=[2.0], valid_neg_elbo=[2.1])).to_csv(
                folder / "histories" / f"{r['preset']}-{r['seed']}.csv", index=False)
    return folder
