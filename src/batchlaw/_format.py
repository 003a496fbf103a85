"""Number formatting for people: counts exact, estimates to three significant figures."""

from __future__ import annotations

import math
from numbers import Integral

__all__ = ["fmt_num", "fmt_count", "fmt_interval"]


def fmt_num(x: float | None) -> str:
    """An integer exactly, with thousands separators; any other number to three significant figures.

    An ``int`` is a count (examples, steps, tokens, a batch size) and is never rounded; a
    ``float`` is an estimate and keeps three significant figures (an integer-valued float that
    is a count goes through :func:`fmt_count`).

    Examples:
        >>> fmt_num(1024), fmt_num(1028), fmt_num(2_500_000_000)
        ('1,024', '1,028', '2,500,000,000')
        >>> fmt_num(1234.5), fmt_num(0.01234), fmt_num(2.5e7), fmt_num(float('inf')), fmt_num(None)
        ('1,230', '0.0123', '2.5e+07', 'inf', '-')
    """
    if x is None:
        return "-"
    if isinstance(x, Integral) and not isinstance(x, bool):
        return f"{int(x):,}"
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x != 0 and (abs(x) >= 1e6 or abs(x) < 1e-3):
        return f"{x:.3g}"
    if abs(x) >= 1000:
        return f"{float(f'{x:.3g}'):,.0f}"
    return f"{x:.3g}"


def fmt_count(x: float | None) -> str:
    """A count (examples, steps, tokens) that may arrive as a float: exact when it is a whole
    number, else as :func:`fmt_num` (a mean over seeds, say).

    Examples:
        >>> fmt_count(1028.0), fmt_count(1028.4), fmt_count(None)
        ('1,028', '1,030', '-')
    """
    if isinstance(x, float) and math.isfinite(x) and x.is_integer():
        return fmt_num(int(x))
    return fmt_num(x)


def fmt_interval(iv: dict, missing: str = "-") -> str:
    """An interval dict ``{"mean", "ci": [low, high], "bound"?}`` as text: ``mean [low, high]``,
    a one-sided bound as ``>= x`` / ``<= x``, ``missing`` when there is no mean.

    Examples:
        >>> fmt_interval({"mean": 0.25, "ci": [0.125, 0.375]})
        '0.25 [0.125, 0.375]'
        >>> fmt_interval({"mean": 1500, "ci": [None, None], "bound": "lower"})
        '>= 1,500'
    """
    if iv["mean"] is None:
        return missing
    bound = iv.get("bound")
    if bound is not None:
        return f"{'>=' if bound == 'lower' else '<='} {fmt_num(iv['mean'])}"
    lo, hi = iv["ci"]
    if lo is None:
        return fmt_num(iv["mean"])
    return f"{fmt_num(iv['mean'])} [{fmt_num(lo)}, {fmt_num(hi)}]"
