"""Number formatting for people: three significant figures, thousands separators, inf."""

from __future__ import annotations

import math

__all__ = ["fmt_num", "fmt_interval"]


def fmt_num(x: float | None) -> str:
    """``1234.5 -> '1,230'``, ``0.01234 -> '0.0123'``, ``2.5e7 -> '2.5e+07'``, ``None -> '-'``.

    Examples:
        >>> fmt_num(1234.5), fmt_num(0.01234), fmt_num(float('inf')), fmt_num(None)
        ('1,230', '0.0123', 'inf', '-')
    """
    if x is None:
        return "-"
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
