"""The constant-batch frontier: the yardstick a batch-size schedule is judged against.

Constant batches ``B_j`` (same learning-rate rule) trained to a target loss give points
``(E_j, S_j)``: examples and optimizer steps to the target. In log-log they trace the frontier
``S(E)``, which McCandlish et al. 2018 (arXiv:1812.06162, eq. 2.11) write as
``(S / S_min - 1)(E / E_min - 1) = 1``. A schedule that reaches the target in ``S`` steps with
``E`` examples has the **Pareto gain** ``1 - S / S_frontier(a E)``: above 0, no constant batch
spending up to ``a`` times its examples gets there in as few steps. The allowance ``a`` (1.1 by
default) matters because below the critical batch size the frontier is nearly flat in examples:
at equal examples, a schedule that spends 1% fewer than the small batch would be compared with
an interpolated point far up the steep part and look better than it is. The **example overhead**
``E / E_frontier(S) - 1`` is the other reading: the extra examples against the constant batch
that takes the same number of steps.

Only Pareto-efficient points form the frontier (a constant batch with more examples *and* more
steps than another is dominated), so ``S_frontier`` decreases as ``E`` grows and can be
inverted. Between two frontier points it is interpolated linearly in ``log E`` and ``log S``.
Outside the measured range nothing is invented: the nearest end gives a **bound** (below the
smallest ``E_j`` the frontier is at least the first point's steps; beyond the largest it is at
most the last point's), and the derived gain or overhead carries that bound.

Everything here is pure arithmetic (no torch): :mod:`batchlaw.schedule.compare` trains the runs.
"""

from __future__ import annotations

import math
from typing import NamedTuple

__all__ = ["Bounded", "Frontier", "pareto_front", "pareto_gain", "example_overhead", "mean_interval",
           "bounded_interval", "loss_at", "T95"]

#: Two-sided 95% Student-t quantiles by degrees of freedom (1.96 beyond).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093}


class Bounded(NamedTuple):
    """A number that may be a one-sided bound.

    Attributes:
        value: the number.
        bound: ``None`` (exact), ``"lower"`` (the true value is at least ``value``) or
            ``"upper"`` (at most ``value``).
    """

    value: float
    bound: str | None = None


_FLIP = {None: None, "lower": "upper", "upper": "lower"}


def _finite_positive(x) -> bool:
    return x is not None and not isinstance(x, bool) and isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def pareto_front(examples, steps) -> list[int]:
    """Indices of the Pareto-efficient points, by examples ascending (and so steps descending).

    A point is efficient when no other point has fewer or equal examples and fewer or equal
    steps, one of them strictly fewer. Points with a missing, non-finite or non-positive value
    (a run that did not reach the target) are never efficient. Of exact duplicates the first is
    kept.

    Examples:
        >>> pareto_front([100, 110, 150, 400, 300], [80, 50, 60, 20, 25])
        [0, 1, 4, 3]
    """
    if len(examples) != len(steps):
        raise ValueError(f"The 'examples' ({len(examples)}) and 'steps' ({len(steps)}) lists must have the same length.")
    ok = [i for i in range(len(steps)) if _finite_positive(examples[i]) and _finite_positive(steps[i])]
    ok.sort(key=lambda i: (examples[i], steps[i], i))
    front, best = [], math.inf
    for i in ok:
        if steps[i] < best:
            front.append(i)
            best = steps[i]
    return front


class Frontier:
    """The steps-vs-examples frontier of constant batches, interpolated in log-log.

    Args:
        examples: examples to the target of each constant batch (``None`` or ``inf`` for a
            run that did not reach it).
        steps: steps to the target, same order.
        batches: the batch of each point (examples), kept for reports.
        interpolation: between two frontier points, ``"hyperbola"`` follows the McCandlish law
            through both (exact when the points obey eq. 2.11), ``"loglog"`` a straight line in
            ``log E``, ``log S``. The law is convex in log-log, so the straight line lies above
            it: on a factor-2 grid of batches it overstates ``S_frontier`` by up to 6% at the
            law's knee, which would flatter every schedule; hence the hyperbola by default.

    Raises:
        InsufficientDataError: no point reached the target.

    Examples:
        >>> f = Frontier([1000, 1200, 2000], [1000, 300, 125], batches=[1, 4, 16])
        >>> f.steps_at(1200), f.steps_at(900), f.steps_at(4000)
        (Bounded(value=300.0, bound=None), Bounded(value=1000.0, bound='lower'), Bounded(value=125.0, bound='upper'))
        >>> round(f.steps_at(1549.2).value), round(Frontier(f.examples, f.steps, interpolation="loglog").steps_at(1549.2).value)
        (168, 194)
    """

    def __init__(self, examples, steps, batches=None, *, interpolation: str = "hyperbola") -> None:
        from .._validation import check_choice
        from ..errors import InsufficientDataError

        self.interpolation = check_choice("interpolation", interpolation, ("hyperbola", "loglog"))

        examples, steps = list(examples), list(steps)
        idx = pareto_front(examples, steps)
        if not idx:
            raise InsufficientDataError("No constant batch reached the target: there is no frontier to compare with.")
        self.examples = [float(examples[i]) for i in idx]  # ascending
        self.steps = [float(steps[i]) for i in idx]  # descending
        self.batches = None if batches is None else [batches[i] for i in idx]
        self.indices = idx

    def __len__(self) -> int:
        return len(self.examples)

    def _segment(self, j: int) -> tuple[float, float] | None:
        """``(S_min, E_min)`` of the hyperbola ``(S / S_min - 1)(E / E_min - 1) = 1`` through points
        ``j`` and ``j + 1`` (``None`` for log-log interpolation).

        The law is linear in its parameters (``S E = E_min S + S_min E``), so two points fix
        them; for two Pareto-ordered points (``E_1 < E_2``, ``S_1 > S_2``) the solution always has
        ``0 < S_min < S_2`` and ``0 < E_min < E_1``, so the curve decreases between them.
        """
        if self.interpolation != "hyperbola":
            return None
        (e1, e2), (s1, s2) = self.examples[j:j + 2], self.steps[j:j + 2]
        a = s1 * s2 * (e2 - e1) / (e2 * s1 - e1 * s2)  # S_min
        return a, e1 * (1.0 - a / s1)  # E_min

    def _between(self, x: float, xs: list[float], from_examples: bool) -> float:
        """The frontier between the bracketing points of ``x`` (examples ascending, or steps
        ascending when ``from_examples`` is false)."""
        if x in xs:  # a measured point: exactly its value
            return (self.steps if from_examples else self.examples[::-1])[xs.index(x)]
        n = len(xs)
        j = next(i for i in range(n - 1) if xs[i] <= x <= xs[i + 1])
        seg = j if from_examples else n - 2 - j  # segments are indexed by examples ascending
        ab = self._segment(seg)
        if ab is not None:
            a, b = ab
            return a * x / (x - b) if from_examples else b * x / (x - a)
        ys = self.steps if from_examples else self.examples[::-1]
        f = (math.log(x) - math.log(xs[j])) / (math.log(xs[j + 1]) - math.log(xs[j]))
        return math.exp(math.log(ys[j]) + f * (math.log(ys[j + 1]) - math.log(ys[j])))

    def steps_at(self, examples: float) -> Bounded:
        """``S_frontier(E)``: the fewest steps of a constant batch spending ``examples``.

        Below the smallest examples of the frontier, a lower bound (the first point's steps);
        beyond the largest, an upper bound (the last point's).
        """
        if not _finite_positive(examples):
            raise ValueError(f"The 'examples' parameter must be a finite number > 0. Got {examples!r} instead.")
        if examples < self.examples[0]:
            return Bounded(self.steps[0], "lower")
        if examples > self.examples[-1]:
            return Bounded(self.steps[-1], "upper")
        return Bounded(self._between(examples, self.examples, True))

    def examples_at(self, steps: float) -> Bounded:
        """``E_frontier(S)``: the fewest examples of a constant batch taking ``steps``.

        Above the largest steps of the frontier (slower than its smallest batch), an upper bound
        (the first point's examples); below the fewest steps, a lower bound (the last point's).
        """
        if not _finite_positive(steps):
            raise ValueError(f"The 'steps' parameter must be a finite number > 0. Got {steps!r} instead.")
        if steps > self.steps[0]:
            return Bounded(self.examples[0], "upper")
        if steps < self.steps[-1]:
            return Bounded(self.examples[-1], "lower")
        return Bounded(self._between(steps, self.steps[::-1], False))

    def to_dict(self) -> dict:
        return {"examples": self.examples, "steps": self.steps, "batches": self.batches}


def pareto_gain(steps: float, examples: float, frontier: Frontier, allowance: float = 1.1) -> Bounded:
    """``1 - S / S_frontier(allowance * E)``: the share of steps saved against the best constant
    batch that spends up to ``allowance`` times the examples (section 10 of the science notes;
    McCandlish et al. 2018, eq. 2.11 for the frontier's shape).

    Examples:
        >>> f = Frontier([1000, 2000], [400, 100])
        >>> pareto_gain(100, 1000, f, allowance=2.0)  # as fast as the batch spending 2x the examples
        Bounded(value=0.0, bound=None)
        >>> pareto_gain(50, 3000, f)  # beyond the frontier's range: at most this
        Bounded(value=0.5, bound='upper')
    """
    if not (isinstance(allowance, (int, float)) and math.isfinite(allowance) and allowance >= 1):
        raise ValueError(f"The 'allowance' parameter must be a finite number >= 1. Got {allowance!r} instead.")
    s_f = frontier.steps_at(allowance * examples)
    return Bounded(1.0 - steps / s_f.value, s_f.bound)  # increases with S_frontier: a bound stays on its side


def example_overhead(steps: float, examples: float, frontier: Frontier) -> Bounded:
    """``E / E_frontier(S) - 1``: the extra examples against the constant batch that takes the
    same number of steps (negative: fewer examples).

    Examples:
        >>> o = example_overhead(200, 1500, Frontier([1000, 2000], [400, 100]))  # E_frontier(200) = 1,200
        >>> round(o.value, 4), o.bound
        (0.25, None)
    """
    e_f = frontier.examples_at(steps)
    return Bounded(examples / e_f.value - 1.0, _FLIP[e_f.bound])  # decreases with E_frontier: a bound flips


def mean_interval(values, *, floor: float | None = None) -> dict:
    """Mean of per-seed values with a Student-t 95% interval of the mean.

    Args:
        values: one value per seed; ``None`` where the seed has none (then no mean is given).
        floor: clip the interval here (0 for quantities that cannot be negative).

    Returns:
        ``{"mean", "ci": [low, high], "values"}``; ``ci`` is ``[None, None]`` with one value.
    """
    values = list(values)
    vals = [v for v in values if v is not None]
    if len(vals) < len(values) or not vals:
        return {"mean": None, "ci": [None, None], "values": values}
    n = len(vals)
    mean = sum(vals) / n
    if n == 1:
        return {"mean": mean, "ci": [None, None], "values": values}
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    half = T95.get(n - 1, 1.96) * sd / math.sqrt(n)
    lo = mean - half if floor is None else max(floor, mean - half)
    return {"mean": mean, "ci": [lo, mean + half], "values": values}


def bounded_interval(values) -> dict:
    """:func:`mean_interval` of per-seed :class:`Bounded` values, honest about bounds.

    All exact: the mean and its t interval (``bound`` ``None``). Some bounds, all on the same
    side: the mean of the values is itself a bound on that side and no interval is given (an
    interval of bounds is not an interval). Bounds on both sides: no mean. A ``None`` (a seed
    that did not reach the target): no mean.

    Returns:
        ``{"mean", "ci", "values", "bounds", "bound"}``.
    """
    values = list(values)
    nums = [None if v is None else v.value for v in values]
    bounds = [None if v is None else v.bound for v in values]
    out = mean_interval(nums)
    sides = {b for b in bounds if b is not None}
    out["bounds"] = bounds
    out["bound"] = None
    if out["mean"] is None or not sides:
        return out
    if len(sides) == 2:
        out.update(mean=None, ci=[None, None])
        return out
    out.update(ci=[None, None], bound=sides.pop())
    return out


def loss_at(curve, examples: float) -> float | None:
    """The held-out loss at ``examples``, linear between the evaluations ``[steps, examples,
    seconds, loss]`` of ``curve``; ``None`` beyond its last evaluation or where it is not finite.

    Examples:
        >>> loss_at([[0, 0, 0.0, 5.0], [10, 100, 1.0, 3.0]], 25)
        4.5
        >>> loss_at([[0, 0, 0.0, 5.0], [10, 100, 1.0, None]], 25) is None  # diverged
        True
    """
    for (_, e0, _, l0), (_, e1, _, l1) in zip(curve, curve[1:]):
        if e0 <= examples <= e1:
            if l0 is None or l1 is None:  # a diverged evaluation
                return None
            f = 0.0 if e1 == e0 else (examples - e0) / (e1 - e0)
            v = l0 + f * (l1 - l0)
            return v if math.isfinite(v) else None
    return None
