"""How a paper claim becomes a verdict: the one rule the book's evidence chapters (6, 7, 8, 10) share.

Each claim is a list of checks (booleans) stated in the chapter that tests it. The claim is
*reproduced* when every check passes, *partly reproduced* when some do and *not reproduced* when
none does. A model with a single seed has no interval, so no comparison can call it better: the
claim is then *not tested*.
"""
from __future__ import annotations

from typing import Iterable, Sequence

__all__ = ["claim_verdict", "span"]


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


def span(values: Sequence[float], digits: int = 3) -> str:
    """``'a'`` or ``'a–b'``: the range of a few medians, rounded to ``digits`` decimals."""
    lo, hi = min(values), max(values)
    return f"{lo:.{digits}f}" if round(lo, digits) == round(hi, digits) else f"{lo:.{digits}f}–{hi:.{digits}f}"
