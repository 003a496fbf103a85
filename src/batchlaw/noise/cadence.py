"""How often to measure: the cadence that keeps the noise monitor's cost under a target.

``GradientNoiseMonitor(every="auto")`` times its own hooks (``time.perf_counter`` around each)
and the optimizer step (between two ``step()`` calls). With ``c_m`` the monitor's seconds at a
measured step, ``c_s`` at an unmeasured one (its hooks return at once, but there is one call per
parameter per micro-batch) and ``T_0`` the step time without it, measuring every ``k``-th step
costs

    overhead(k) = (c_m + (k - 1) c_s) / (k T_0),

and the cadence is the smallest ``k`` with ``overhead(k) <= target``:
``k = ceil((c_m - c_s) / (target T_0 - c_s))``, when ``target T_0 > c_s``. Each input is the
median over a window of steps (an evaluation pause or a slow data batch moves a mean, not a
median); under data parallelism each rank's medians are summed by the monitor's all-reduce and
divided by the world size, so every rank decides on the same numbers, at the same step.

Fewer measured steps widen the interval of ``B_simple`` over a stretch of training: with ``n``
optimizer steps, ``n / k`` are measured, and for independent steps the interval is ``sqrt(k)``
times wider (less when successive steps are correlated, since neighbours carry less new
information).
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Callable

import torch

__all__ = ["AutoCadence", "cadence_for", "check_every"]

#: The largest cadence chosen: measuring less often than this leaves too few steps for an interval.
MAX_EVERY = 1000


def check_every(every) -> int | str:
    """``every`` as the monitor takes it: ``"auto"``, or a positive integer; else a ValueError naming it.

    Examples:
        >>> check_every("auto"), check_every(4)
        ('auto', 4)
    """
    from .._validation import check_positive_int

    if isinstance(every, str):
        if every != "auto":
            raise ValueError(f"The 'every' parameter must be a positive integer or 'auto'. Got {every!r} instead.")
        return every
    return check_positive_int("every", every)


def cadence_for(measured_cost: float, skipped_cost: float, step_time: float, target: float) -> tuple[int, str | None]:
    """The smallest ``k`` with ``(c_m + (k - 1) c_s) / (k T_0) <= target``, and a note when none is.

    Args:
        measured_cost: ``c_m``, seconds inside the monitor at a measured step.
        skipped_cost: ``c_s``, seconds inside it at an unmeasured step.
        step_time: ``T_0``, seconds of a training step without the monitor.
        target: the share of ``T_0`` allowed.

    Returns:
        ``(k, note)``: ``1 <= k <=`` :data:`MAX_EVERY`; ``note`` is ``None`` unless the target
        cannot be met (even unmeasured steps cost more than it, or ``k`` would exceed the cap).

    Examples:
        >>> cadence_for(0.004, 0.0, 0.2, 0.01)   # 2% of the step when measuring every step
        (2, None)
        >>> cadence_for(0.001, 0.0, 0.2, 0.01)
        (1, None)
    """
    if step_time <= 0 or measured_cost <= target * step_time:
        return 1, None
    spare = target * step_time - skipped_cost
    if spare <= 0:
        return MAX_EVERY, (f"the monitor's hooks take {skipped_cost / step_time:.2%} of the step even on the steps "
                           f"it does not measure (one call per parameter per micro-batch), above the target "
                           f"{target:.2%}: measuring every {MAX_EVERY}th step")
    k = math.ceil((measured_cost - skipped_cost) / spare - 1e-9)
    if k > MAX_EVERY:
        return MAX_EVERY, (f"a measured step costs {measured_cost / step_time:.1%} of a step: the target {target:.2%} "
                           f"would need measuring every {k}th step; measuring every {MAX_EVERY}th")
    return max(k, 1), None


class AutoCadence:
    """The timing and the decisions behind ``GradientNoiseMonitor(every="auto")``.

    The monitor wraps its hooks with :meth:`timed`, calls :meth:`end_step` after each
    ``step()``, and, at a measured step where :meth:`due` says so, all-reduces
    :meth:`window_stats` with its own statistics and passes the sums to :meth:`decide`.
    Decisions come after :data:`FIRST` measured steps (the first one, which warms up, left out),
    then every :data:`EVERY` measured steps.
    """

    #: Values per rank in :meth:`window_stats`.
    N_STATS = 3
    FIRST = 6
    EVERY = 50

    def __init__(self, target: float) -> None:
        self.target = target
        self._cost = 0.0  # seconds inside the monitor since the last step() returned
        self._last_end: float | None = None  # when the last step() returned
        self._measured_costs: list[float] = []
        self._skipped_costs: list[float] = []
        self._step_times: list[float] = []
        self._measured = 0  # measured steps seen
        self._next_decision = self.FIRST
        self.decision: dict | None = None

    def timed(self, fn: Callable) -> Callable:
        """``fn`` with its seconds added to the monitor's cost of the current step."""
        clock = time.perf_counter

        def wrapper(*args):
            start = clock()
            try:
                return fn(*args)
            finally:
                self._cost += clock() - start

        return wrapper

    def end_step(self, start: float, measured: bool) -> None:
        """Close one optimizer step: ``step()`` began at ``start``; ``measured`` says whether it measured."""
        now = time.perf_counter()
        cost = self._cost + (now - start)
        self._cost = 0.0
        if self._last_end is not None:  # the first step has no start to time from
            self._step_times.append(now - self._last_end)
            (self._measured_costs if measured else self._skipped_costs).append(cost)
        self._last_end = now
        if measured:
            self._measured += 1

    def due(self) -> bool:
        """Whether the measured step now in ``step()`` decides the cadence (same answer on every rank)."""
        return self._measured + 1 >= self._next_decision and bool(self._measured_costs)

    def window_stats(self, device) -> torch.Tensor:
        """This rank's medians since the last decision: cost at a measured step, at an unmeasured
        one (0 when there was none), step time; float64 on ``device``."""
        skipped = statistics.median(self._skipped_costs) if self._skipped_costs else 0.0
        values = [statistics.median(self._measured_costs), skipped, statistics.median(self._step_times)]
        return torch.tensor(values, dtype=torch.float64, device=device)

    def decide(self, sums: list[float], world_size: int, step: int) -> int:
        """The cadence from the all-reduced :meth:`window_stats` (sums over ``world_size`` ranks)."""
        measured_cost, skipped_cost, step_time = (v / world_size for v in sums)
        # without the monitor a step takes what it took less the monitor's share of it
        base = step_time - measured_cost
        every, note = cadence_for(measured_cost, skipped_cost, base, self.target)
        self.decision = {"decided_at_step": step, "measured_step_cost_s": measured_cost,
                         "skipped_step_cost_s": skipped_cost, "step_time_s": step_time, "note": note}
        self._measured_costs, self._skipped_costs, self._step_times = [], [], []
        self._next_decision = self._measured + 1 + self.EVERY
        return every

    def report(self, every: int) -> dict:
        """The decision and what it implies at cadence ``every``."""
        out = {"target": self.target, "decided_at_step": None, "interval_width_factor": math.sqrt(every)}
        if self.decision is not None:
            d = self.decision
            base = d["step_time_s"] - d["measured_step_cost_s"]
            overhead = ((d["measured_step_cost_s"] + (every - 1) * d["skipped_step_cost_s"]) / (every * base)
                        if base > 0 else math.nan)
            out.update({k: v for k, v in d.items() if k != "note"}, expected_overhead=overhead)
            if d["note"]:
                out["note"] = d["note"]
        return out
