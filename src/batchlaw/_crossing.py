"""Where a learning curve crosses a target loss, read from its evaluations. Pure Python/NumPy.

One rule for every reading of "steps to target" (sweep trials, schedule races): between the last
evaluation above the target, ``(t0, L0)``, and the first at or below it, ``(t1, L1)``, the curve is
taken to be ``L(t) = a + b t^p`` through those two points and the evaluation before them,
``(t_-1, L_-1)``. Three points fix ``a``, ``b`` and ``p``: the ratio
``(L_-1 - L0) / (L0 - L1) = (t_-1^p - t0^p) / (t0^p - t1^p)`` is monotone in ``p``, so ``p`` is
found by bisection, and the crossing is

    t* = (t0^p + f (t1^p - t0^p))^(1/p),        f = (L0 - target) / (L0 - L1)

(``p = 0`` is linear in ``log t``, ``p = 1`` linear in ``t``). The family holds learning curves with
an offset (``L = E + A t^-c``, exact for any ``E``, ``A``, ``c``), and it is monotone, so ``t*``
always lies in ``[t0, t1]`` whatever the three points are. ``p`` is kept in
``[P_MIN, P_MAX]`` (a late exponential decay ``exp(-t/tau)`` has local ``p = 1 - t/tau``).

Fallbacks: without a usable third point (the bracket starts at the first evaluation, the third
point is step 0, where ``t^p`` is undefined for ``p < 0``, or the three losses do not fall), the
crossing is linear in ``log t``; from step 0, linear in ``t``.

Why not the simpler rules: on a convex curve a straight line between two evaluations crosses
late. For ``L = t^-0.4`` evaluated at steps 10 and 20, the true crossing of the mid-loss is
13.81; linear in steps reads 15.00, linear in ``log t`` 14.14; this rule, given step 5 as
well, 13.81. ``bench/crossing_bias.py`` measures every rule on exact curves (power laws with and
without offsets, exponentials, a sum of exponentials as the noisy quadratic model has) at four
evaluation spacings; the table is in ``bench/RESULTS.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["crossing_step", "P_MIN", "P_MAX"]

#: bounds of the local exponent ``p`` of ``L = a + b t^p``.
P_MIN, P_MAX = -16.0, 3.0


_EXP_MAX = 700.0  # exp() of more overflows a float


def _ratio(log_a: float, log_c: float, p: float) -> float:
    """``(t_-1^p - t0^p) / (t0^p - t1^p)`` with ``log_a = log(t_-1/t0)``, ``log_c = log(t1/t0)``."""
    if p == 0.0:
        return -log_a / log_c
    return math.expm1(min(p * log_a, _EXP_MAX)) / -math.expm1(min(p * log_c, _EXP_MAX))


def _log_mix(f: float, x: float) -> float:
    """``log(1 - f + f e^x)`` for ``0 <= f <= 1``, without overflow."""
    if x <= _EXP_MAX or f == 0.0:
        return math.log1p(f * math.expm1(x))
    if f == 1.0:
        return x
    a, b = math.log(f) + x, math.log1p(-f)
    return max(a, b) + math.log1p(math.exp(-abs(a - b)))


def _exponent(steps: Sequence[float], losses: Sequence[float]) -> float:
    """The ``p`` of ``a + b t^p`` through three points (decreasing in the ratio of the loss drops)."""
    (tm, t0, t1), (lm, l0, l1) = steps, losses
    log_a, log_c = math.log(tm) - math.log(t0), math.log(t1) - math.log(t0)
    r = (lm - l0) / (l0 - l1)
    lo, hi = P_MIN, P_MAX  # _ratio falls from lo to hi
    if r >= _ratio(log_a, log_c, lo):
        return lo
    if r <= _ratio(log_a, log_c, hi):
        return hi
    for _ in range(60):  # bisection: the interval shrinks below 1e-16 of its width
        mid = 0.5 * (lo + hi)
        if _ratio(log_a, log_c, mid) > r:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def crossing_step(steps: Sequence[float], losses: Sequence[float], target: float) -> float:
    """Step at which a learning curve crosses ``target``, read from its evaluations.

    Args:
        steps: increasing evaluation steps (``>= 0``); only the last three are used.
        losses: the loss at each; the last is the first at or below ``target`` and the one
            before it is above.
        target: the target loss.

    Returns:
        The crossing, in ``[steps[-2], steps[-1]]`` (see the module docstring for the rule).

    Raises:
        ValueError: fewer than two evaluations, lengths that differ, steps that do not increase,
            or a last pair that does not bracket ``target``.

    Examples:
        >>> round(crossing_step([5, 10, 20], [5**-0.4, 10**-0.4, 20**-0.4], (10**-0.4 + 20**-0.4) / 2), 2)
        13.81
        >>> round(crossing_step([10, 100], [2.0, 1.0], 1.5), 3)  # two points: linear in log-steps
        31.623
    """
    if len(steps) != len(losses) or len(steps) < 2:
        raise ValueError(f"'steps' and 'losses' must have the same length, at least 2. Got {len(steps)} and "
                         f"{len(losses)}.")
    t = [float(x) for x in steps[-3:]]
    y = [float(x) for x in losses[-3:]]
    (t0, t1), (l0, l1) = t[-2:], y[-2:]
    if not (0 <= t0 < t1):
        raise ValueError(f"The evaluation 'steps' must be non-negative and increase. Got {t0:g} then {t1:g}.")
    if not (l0 > target >= l1):
        raise ValueError(f"The last two 'losses' must bracket the target {target:g} (the one before above it, the "
                         f"last at or below it). Got {l0:g} then {l1:g}.")
    f = (l0 - target) / (l0 - l1)
    if t0 == 0.0:
        return t1 * f
    p = 0.0
    if len(t) == 3 and 0.0 < t[0] < t0 and math.isfinite(y[0]) and y[0] > l0:
        p = _exponent(t, y)
    log_c = math.log(t1) - math.log(t0)
    if abs(p * log_c) < 1e-12:
        return min(t1, max(t0, math.exp(math.log(t0) + f * log_c)))
    return min(t1, max(t0, math.exp(math.log(t0) + _log_mix(f, p * log_c) / p)))
