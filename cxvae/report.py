"""How a paper claim becomes a verdict: the one rule the book's evidence chapters (6, 7, 8, 10) share.

Each claim is a list of checks (booleans) stated in the chapter that tests it. The claim is
*reproduced* when every check passes, *partly reproduced* when some do and *not reproduced* when
none does. A model with a single seed has no interval, so no comparison can call it better: the
claim is then *not tested*.
"""
from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Iterable, Sequence

__all__ = ["claim_verdict", "span", "significant", "glue", "book_display", "kernel_spread", "BOOK_DIGITS"]

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
