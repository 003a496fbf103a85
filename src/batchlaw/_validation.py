"""Argument checks at the public boundary, with messages a user can act on.

Every message names the parameter, echoes the value and says what is allowed
(the scikit-learn convention).
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import numpy as np

__all__ = ["check_positive_int", "check_positive_float", "check_probability", "check_choice", "check_positive_values",
           "check_sequence"]


def check_positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """Return ``value`` as an int if it is an integer >= ``minimum``, else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"The '{name}' parameter must be {what}. Got {value!r} instead.")
    return int(value)


def check_positive_float(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a float if it is finite and > 0 (or >= 0), else raise ValueError."""
    ok = (
        not isinstance(value, bool)
        and isinstance(value, Real)
        and math.isfinite(value)
        and (value >= 0 if allow_zero else value > 0)
    )
    if not ok:
        what = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise ValueError(f"The '{name}' parameter must be {what}. Got {value!r} instead.")
    return float(value)


#: The largest learning rate accepted where training runs: a float32 parameter update ``p - lr g`` cannot hold more
#: than about 3.4e38, and torch raises on a larger ``lr``; 1e30 leaves room for batch-size rules that scale it up.
MAX_LR = 1e30


def check_learning_rate(name: str, value: Any) -> float:
    """Return ``value`` as a float if it is a usable learning rate (finite, > 0, <= :data:`MAX_LR`), else raise
    ValueError naming the parameter."""
    lr = check_positive_float(name, value)
    if lr > MAX_LR:
        raise ValueError(f"The '{name}' parameter must be at most {MAX_LR:g} (a larger learning rate overflows a "
                         f"float32 parameter update). Got {value!r} instead.")
    return lr


def check_probability(name: str, value: Any, *, open_low: bool = True, open_high: bool = True) -> float:
    """Return ``value`` as a float strictly (or not) between 0 and 1, else raise ValueError."""
    ok = not isinstance(value, bool) and isinstance(value, Real) and math.isfinite(value)
    if ok:
        ok = (value > 0 if open_low else value >= 0) and (value < 1 if open_high else value <= 1)
    if not ok:
        lo, hi = ("(" if open_low else "["), (")" if open_high else "]")
        raise ValueError(f"The '{name}' parameter must be in {lo}0, 1{hi}. Got {value!r} instead.")
    return float(value)


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ValueError listing them."""
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"The '{name}' parameter must be one of {allowed}. Got {value!r} instead.")
    return value


def check_positive_values(name: str, values, *, where: str = ""):
    """Return ``values`` as a flat float array if every entry is finite and > 0, else raise
    ValueError naming the first offending values and their positions (``where``: e.g. ``" in the
    schedule"``, after the rule in the message)."""
    arr = np.asarray(values, dtype=np.float64).ravel()
    bad = ~np.isfinite(arr) | (arr <= 0)
    if bad.any():
        raise ValueError(f"The '{name}' values must be finite and positive{where}. Got {arr[bad][:5].tolist()} at "
                         f"positions {np.flatnonzero(bad)[:5].tolist()}.")
    return arr


def check_sequence(name: str, value: Any, *, pairs: bool = False, example: str = "") -> list:
    """Return ``value`` as a list if it is a sequence (a list, tuple, array...; not a string or a
    dict), of ``(a, b)`` pairs when ``pairs``; else raise ValueError naming it (``example``: what
    a good value looks like, e.g. ``"[(0, 8), (1000, 16)]"``)."""
    hint = f", e.g. {example}" if example else ""
    what = "a sequence of (a, b) pairs" if pairs else "a sequence of numbers"
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
        raise ValueError(f"The '{name}' parameter must be {what}{hint}. Got {value!r} instead.")
    items = list(value)
    if pairs:
        for item in items:
            if isinstance(item, (str, bytes, dict)) or not hasattr(item, "__len__") or len(item) != 2:
                raise ValueError(f"The '{name}' parameter must be {what}{hint}. Got {item!r} in {value!r}.")
        items = [tuple(item) for item in items]
    return items
