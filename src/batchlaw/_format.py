"""Number formatting for people: three significant figures, thousands separators, inf."""

from __future__ import annotations

import math

__all__ = ["fmt_num"]


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
