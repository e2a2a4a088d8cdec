"""How a paper claim becomes a verdict: the one rule the book's evidence chapters (6, 7, 8, 10) share.

Each claim is a list of checks (booleans) stated in the chapter that tests it. The claim is
*reproduced* when every check passes, *partly reproduced* when some do and *not reproduced* when
none does. A model with a single seed has no interval, so no comparison can call it better: the
claim is then *not tested*.

The checks of claims C1-C5 are here too, each a pure function of a study's summary table
(:func:`cxvae.runner.summarise`: one row per preset and metric with ``median, lo, hi``), so
chapters 6, 7 and 8 compute them once, alike: :func:`c1_checks`, :func:`c2_checks`,
:func:`c3_checks`, :func:`c4_checks`, :func:`c5_checks` (with :func:`swap_costs` and
:func:`part_ranking`). C6's checks are :func:`cxvae.strength.translation_checks`.
"""
from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Iterable, Mapping, Sequence

__all__ = ["claim_verdict", "span", "significant", "glue", "book_display", "kernel_spread", "BOOK_DIGITS",
           "BASELINES", "PAPER_SWAPS", "FIGURE4_METRICS", "SWAP_METRICS", "RANKED_METRICS", "PAPER_ORDER",
           "better_than", "c1_checks", "c2_checks", "c3_checks", "c4_checks", "swap_costs", "part_ranking",
           "c5_checks"]

BASELINES = ("ml-vae", "gvae", "gvae-ad")  # the paper's state of the art (chapter 6)
# the single-part swaps of the paper's Figure 5 and the part of CxVAE each replaces (chapter 7)
PAPER_SWAPS = {"cxvae-unconditional": "instance encoder", "cxvae-nemeth": "regulariser",
               "cxvae-none": "regulariser", "cxvae-average": "group encoder", "cxvae-product": "group encoder"}
FIGURE4_METRICS = ("recon_mse", "translation_mse", "u_probe_mse", "v_probe_mse")  # C3: the paper's Figure 4
SWAP_METRICS = ("recon_mse", "translation_mse")  # C5: the metrics the paper names for its swaps
RANKED_METRICS = ("recon_mse", "translation_mse", "holdout_nll")  # C5's ranking: all lower-is-better
PAPER_ORDER = ("instance encoder", "regulariser", "group encoder")  # C5: costs most first

# Significant digits of every number a chapter stores (glued values, tables): what the prose means.
# Another CPU rounds the arithmetic differently (other kernels), which moves the 5th-7th digit of a
# trained model's score; stored outputs are compared at this precision, not to the last bit.
BOOK_DIGITS = 4


def claim_verdict(checks: Iterable[bool], min_seeds: int) -> str:
    """The verdict on a claim from its ``checks`` when the models involved have at least
    ``min_seeds`` seeds each: ``'reproduced'``, ``'partly reproduced'``, ``'not reproduced'`` or
    ``'not tested (one seed)'``."""
    checks = [bool(c) for c in checks]
    if min_seeds < 2:  # one seed gives no interval, so nothing can be called better
        return "not tested (one seed)"
    if not checks:
        raise ValueError("a claim needs at least one check")
    return "reproduced" if all(checks) else "partly reproduced" if any(checks) else "not reproduced"


def span(values: Sequence[float], digits: int = 3, fmt: str = "") -> str:
    """``'a'`` or ``'a–b'``: the range of a few medians, rounded to ``digits`` decimals (or
    written with the format spec ``fmt``, e.g. ``'.2e'``); one number when both ends print alike."""
    lo, hi = min(values), max(values)
    fmt = fmt or f".{digits}f"
    a, b = format(lo, fmt), format(hi, fmt)
    return a if a == b else f"{a}–{b}"


def significant(value, digits: int = BOOK_DIGITS):
    """``value`` rounded to ``digits`` significant digits (a float stays a float; integers, bools,
    strings and NaN or infinite values pass unchanged)."""
    if isinstance(value, Integral) or not isinstance(value, Real):
        return value
    value = float(value)
    if not math.isfinite(value) or value == 0.0:
        return value
    return float(f"{value:.{digits}g}")


def glue(name: str, value, digits: int = BOOK_DIGITS) -> None:
    """Glue ``value`` for the chapter's prose (``{glue:text}`name```) rounded to ``digits``
    significant digits, so that the stored output means what the prose says and not the last bits
    of this CPU's rounding. Lists and tuples are rounded element-wise. Never displayed in place."""
    from myst_nb import glue as myst_glue

    if isinstance(value, (list, tuple)):
        value = type(value)(significant(v, digits) for v in value)
    myst_glue(name, significant(value, digits), display=False)


def book_display(digits: int = BOOK_DIGITS) -> None:
    """Show every float of a chapter's tables (text and HTML) with ``digits`` significant digits."""
    import pandas as pd

    pd.set_option("display.float_format", lambda x: f"{x:.{digits}g}")


def kernel_spread(scores) -> "pd.DataFrame":
    """How far each metric moves when only the CPU's kernels change: from a long table with
    columns ``setting, scorer, metric, value`` (``scripts/kernel_spread.py`` writes it), the
    relative spread ``(max - min) / |median|`` over the settings, one row per metric and one column
    per scorer. 0 means every setting gave the same value to the last bit."""
    import pandas as pd

    spread = scores.groupby(["metric", "scorer"], sort=False).value.agg(
        lambda v: float((v.max() - v.min()) / abs(v.median())) if v.median() != 0 else float(v.max() - v.min()))
    return pd.DataFrame(spread).value.unstack("scorer")


# --- the checks of claims C1-C5 -------------------------------------------------------------

def better_than(summary, model: str = "cxvae", others: Sequence[str] = BASELINES) -> "pd.Series":
    """``True`` where ``model``'s 95% interval of the median lies wholly on the good side of
    ``other``'s (:func:`cxvae.runner.compare_to`'s ``'better'``). A boolean Series indexed by
    ``(other, metric)`` over every other preset in ``others`` and metric of ``summary``; a pair
    missing from the summary is ``False`` (nothing shows it better)."""
    import pandas as pd

    from .summary import compare_to

    metrics = list(dict.fromkeys(summary.metric))
    index = pd.MultiIndex.from_product([list(others), metrics], names=["baseline", "metric"])
    present = set(summary.preset)
    if model not in present:
        return pd.Series(False, index=index, name="better")
    there = [o for o in others if o in present]
    versus = compare_to(summary, model, there) if there else pd.DataFrame(columns=["baseline", "metric", "verdict"])
    better = versus.set_index(["baseline", "metric"]).verdict.eq("better")
    return better.reindex(index, fill_value=False).astype(bool).rename("better")


def _medians(summary) -> "pd.DataFrame":
    return summary.pivot(index="preset", columns="metric", values="median")


def c1_checks(summary, model: str = "cxvae", baselines: Sequence[str] = BASELINES) -> "pd.DataFrame":
    """C1, the existing methods fail on emergent groups: per baseline (rows), whether its instance
    codes tell the set probe more about the group than the exact posterior's instance codes do
    (``v_probe_mse`` median below the oracle's: ``'instance codes leak'``) and whether ``model``'s
    group code holds the group better than the baseline's (``u_probe_mse`` verdict ``better``:
    ``'group code better'``). Needs the oracle's row in ``summary``."""
    import pandas as pd

    med = _medians(summary)
    if "oracle" not in med.index:
        raise ValueError("C1 compares with the exact posterior: summarise the study with its oracle")
    leak = [bool(med.loc[b, "v_probe_mse"] < med.loc["oracle", "v_probe_mse"]) if b in med.index else False
            for b in baselines]
    better = better_than(summary, model, baselines)
    return pd.DataFrame({"instance codes leak": leak,
                         "group code better": [bool(better[(b, "u_probe_mse")]) for b in baselines]},
                        index=pd.Index(list(baselines), name="baseline"))


def c2_checks(summary, mean_shrinkage: float, corrected: str = "ml-vae-corrected",
              plain: str = "ml-vae") -> "pd.Series":
    """C2, the product of normals is biased and eq. (1) corrects it, in two halves: the closed
    form (``mean_shrinkage``, the plain product's posterior mean as a fraction of the exact one,
    :func:`cxvae.bias.product_bias_table`, below 1: pulled towards the prior) and, trained, the
    ``corrected`` preset ``better`` than the ``plain`` one on the holdout NLL and on translation."""
    import pandas as pd

    better = better_than(summary, corrected, [plain])
    return pd.Series({"closed form pulled to the prior": bool(mean_shrinkage < 1),
                      "holdout_nll better": bool(better[(plain, "holdout_nll")]),
                      "translation_mse better": bool(better[(plain, "translation_mse")])}, name="C2")


def c3_checks(summary, model: str = "cxvae", baselines: Sequence[str] = BASELINES,
              recon: str = "recon_mse") -> "pd.DataFrame":
    """C3, CxVAE better on every metric of the paper's Figure 4: a boolean table, one row per
    baseline and one column per metric of :data:`FIGURE4_METRICS` (verdict ``better``).

    ``recon`` names the reconstruction metric: ``recon_mse`` (decoded posterior means, the form
    the verdict was fixed with) or ``recon_sampled_mse`` (decoded posterior draws), to show how
    far the verdict rests on that form; the paper does not say which it used."""
    metrics = [recon if m == "recon_mse" else m for m in FIGURE4_METRICS]
    better = better_than(summary, model, baselines)
    c3 = better.unstack("metric").reindex(columns=metrics, fill_value=False).loc[list(baselines)]
    return c3.rename_axis(columns=None)


def c4_checks(summary, model: str = "cxvae", baselines: Sequence[str] = BASELINES) -> "pd.Series":
    """C4, CxVAE has the better holdout likelihood: per baseline, the ``holdout_nll`` verdict is ``better``."""
    return better_than(summary, model, baselines).xs("holdout_nll", level="metric").rename("holdout_nll better")


def swap_costs(summary, swaps: Iterable[str], model: str = "cxvae",
               metrics: Sequence[str] = RANKED_METRICS) -> "pd.DataFrame":
    """The cost of each swap: its median minus ``model``'s, per metric (rows: swaps; every metric
    is lower-is-better, so a positive cost means the swap hurts). A swap without runs is NaN."""
    med = _medians(summary)
    return (med.reindex(list(swaps))[list(metrics)] - med.loc[model, list(metrics)]).rename_axis(columns=None)


def part_ranking(summary, swaps: Mapping[str, str] = PAPER_SWAPS, model: str = "cxvae",
                 metrics: Sequence[str] = RANKED_METRICS) -> tuple:
    """The cost of each part (the mean cost of its ``swaps``, a mapping swap -> part) and the
    ranking it gives per metric. Returns ``(part_cost, ranking)``: ``part_cost`` one row per part
    of :data:`PAPER_ORDER`, one column per metric; ``ranking`` one row per metric with
    ``'ranking (costs most first)'`` and ``'matches the paper'`` (a part without runs cannot be
    ranked, so the ranking then does not match)."""
    import pandas as pd

    cost = swap_costs(summary, swaps, model, metrics)
    part_cost = cost.groupby(pd.Series(swaps)).mean().reindex(list(PAPER_ORDER)).rename_axis(index="part",
                                                                                          columns=None)
    order = {m: " > ".join(part_cost[m].dropna().sort_values(ascending=False).index) for m in metrics}
    ranking = pd.DataFrame({"ranking (costs most first)": order,
                            "matches the paper": {m: order[m] == " > ".join(PAPER_ORDER) for m in metrics}})
    return part_cost, ranking


def c5_checks(summary, model: str = "cxvae", swaps: Mapping[str, str] = PAPER_SWAPS) -> tuple:
    """C5, every swap costs and the costs rank instance encoder > regulariser > group encoder.
    Returns ``(swap_checks, ranking)``: ``swap_checks`` one row per swap, one column per metric of
    :data:`SWAP_METRICS` (``model`` ``better`` than the swap); ``ranking`` from
    :func:`part_ranking`. The claim's checks are ``swap_checks`` (ten) and
    ``ranking['matches the paper']`` (three)."""
    better = better_than(summary, model, list(swaps))
    swap_checks = better.unstack("metric").reindex(columns=list(SWAP_METRICS), fill_value=False).loc[list(swaps)]
    return swap_checks.rename_axis(index="swap", columns=None), part_ranking(summary, swaps, model)[1]
