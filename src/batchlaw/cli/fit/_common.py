"""Helpers shared by the ``batchlaw fit`` commands: an interval as text, a loss column with diverged runs."""

from __future__ import annotations

import math

from ..._format import fmt_num


def _ci_text(fit, key) -> str:
    """``value (lo to hi)``, or the value alone when the fit has no interval for it (no bootstrap)."""
    if key not in fit.ci:
        return fmt_num(fit.values[key])
    lo, hi = fit.ci[key]
    return f"{fmt_num(fit.values[key])} ({fmt_num(lo)} to {fmt_num(hi)})"


_DIVERGED = {"", "nan", "inf", "+inf", "infinity", "diverged", "none", "null"}


def _losses_with_divergence(values, column, path) -> list[float]:
    """A loss column where empty, NaN, inf or 'diverged' cells mark diverged runs (NaN)."""
    out = []
    for line, v in enumerate(values, start=2):
        text = str(v).strip()
        if text.lower() in _DIVERGED:
            out.append(float("nan"))
            continue
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"Column {column!r}, line {line} of {path!r}: {text!r} is not a number (a diverged run's "
                             "loss may be empty, 'nan', 'inf' or 'diverged').") from None
        if math.isinf(value) and value > 0 or math.isnan(value):
            value = float("nan")
        elif not math.isfinite(value) or value <= 0:
            raise ValueError(f"Column {column!r}, line {line} of {path!r}: {text!r} is not a loss (a finite number "
                             "> 0, or empty/'nan'/'inf'/'diverged' for a diverged run).")
        out.append(value)
    return out
