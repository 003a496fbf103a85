"""The learning-curve laws and their inputs: the learning-rate schedule, its areas, each law's design.

Three laws, all fitted with the shared engine (log-space Huber, bootstrap) by
:func:`~batchlaw.fit.curve_fit.fit_curve`:

- ``power``: ``L(t) = L_inf + a t^(-b)`` for constant-LR runs (or WSD runs before their decay).
- ``tissue`` (Tissue et al. 2024, "Scaling law with learning rate annealing",
  arXiv:2408.11029, eq. 1): ``L(s) = L_0 + A S_1^(-alpha) - C S_2`` with the forward area
  ``S_1 = sum_{i<=s} eta_i`` and the annealing area ``S_2 = sum_{i<=s} m_i``,
  ``m_i = lambda m_{i-1} + (eta_{i-1} - eta_i)`` (decreases only: warmup is not annealing),
  ``lambda = 0.999``; ``eta`` is the learning rate divided by its peak, so ``S_1`` counts
  peak-LR steps. It takes the LR schedule as input (warmup, cosine, WSD, any shape) and predicts
  the loss at a later step of the planned schedule.
- ``multipower`` (Luo et al. 2025, arXiv:2503.12811, eq. 1; :mod:`batchlaw.fit.multipower`): each
  decrease of the learning rate buys a loss drop that saturates with the area run at the lower rate.

A :class:`Schedule` is the learning rate at every step, from the steps where it is known. The
schedule-aware laws read their inputs from the schedules of the fitted runs, on one learning-rate
scale (the largest peak among the runs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import signal

from .._validation import check_positive_values
from .engine import Law
from .laws import saturating_law
from .multipower import multipower_law

__all__ = ["Schedule", "schedule_law", "ANNEAL_DECAY", "CURVE_LAWS"]


#: Tissue et al. 2024's momentum decay ``lambda`` of the annealing area.
ANNEAL_DECAY = 0.999


class Schedule:
    """A learning-rate schedule known at some steps, linearly interpolated to every step.

    Before its first known step the learning rate is taken as the first known value (a log that
    starts at its first logging step, e.g. step 50 of a run logged every 50, misses only those
    steps; :meth:`known_from_start` says whether that is all it misses).

    Args:
        steps: steps at which the learning rate is known (positive, any order).
        lr: the learning rate there (finite, ``>= 0``: a cosine or a linear decay ends at 0, a
            warmup may start there; the peak must be positive).

    Examples:
        >>> s = Schedule([1, 100], [1.0, 1.0])
        >>> s1, s2 = s.areas([50, 100])
        >>> s1.tolist(), s2.tolist()
        ([50.0, 100.0], [0.0, 0.0])
    """

    def __init__(self, steps, lr) -> None:
        st = np.asarray(steps, dtype=np.float64).ravel()
        lv = np.asarray(lr, dtype=np.float64).ravel()
        if st.shape != lv.shape:
            raise ValueError(f"'steps' has {st.size} values but 'lr' has {lv.size}: lengths must match.")
        check_positive_values("steps", st, where=" in the schedule")
        bad = ~np.isfinite(lv) | (lv < 0)
        if bad.any():
            raise ValueError(f"The 'lr' values must be finite and >= 0 in the schedule. Got {lv[bad][:5].tolist()} at "
                             f"positions {np.flatnonzero(bad)[:5].tolist()}.")
        if st.size and not lv.max() > 0:
            raise ValueError("The learning rate is 0 at every step of the schedule: give the learning rate of the run.")
        order = np.argsort(st, kind="stable")
        self.steps, self.lr = st[order], lv[order]
        self.peak = float(self.lr.max())
        self.peak_step = float(self.steps[np.argmax(self.lr)])
        #: the end of the warmup: the first step at the peak, if the learning rate rose to it
        self.warmup_end = self.peak_step if self.lr[0] < self.peak else 0.0
        self.last = int(math.ceil(self.steps[-1]))
        grid = np.arange(1, self.last + 1, dtype=np.float64)
        eta = np.interp(grid, self.steps, self.lr) / self.peak  # every step, normalised
        drop = np.maximum(np.concatenate([[0.0], eta[:-1] - eta[1:]]), 0.0)  # warmup is not annealing
        self.eta = eta
        self._s1 = np.cumsum(eta)
        self._s2 = np.cumsum(signal.lfilter([1.0], [1.0, -ANNEAL_DECAY], drop))

    def known_from_start(self) -> bool:
        """Whether the learning rate is known from the run's start: its first known step is step 1,
        or no later than the spacing of its first two known steps (the first row of a log kept every
        that many steps). A schedule first known at step 3,001 of rows 50 apart (a log resumed
        there, or a branch given without its trunk) is not: the summed learning rate before it is
        unknown."""
        first = float(self.steps[0])
        gap = float(self.steps[1] - self.steps[0]) if self.steps.size > 1 else first
        return first <= max(gap, 1.0)

    def areas(self, at, reference: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(S_1, S_2)`` at steps ``at`` (interpolated between integer steps), in steps at the
        ``reference`` learning rate (default: this schedule's peak)."""
        at = np.asarray(at, dtype=np.float64)
        if np.any(at > self.last + 1e-9) or np.any(at <= 0):
            raise ValueError(f"The schedule is known from step 1 to {self.last}; asked for steps "
                             f"{at.min():g} to {at.max():g}. Give the learning rate up to the step to predict.")
        g = np.arange(1, self.last + 1, dtype=np.float64)
        f = 1.0 if reference is None else self.peak / reference
        return f * np.interp(at, g, self._s1), f * np.interp(at, g, self._s2)

    def normalised(self, reference: float | None = None) -> np.ndarray:
        """The learning rate at steps ``1..T`` divided by ``reference`` (default: the peak)."""
        return self.eta * (1.0 if reference is None else self.peak / reference)


def schedule_law() -> Law:
    """Tissue et al. 2024: ``log L = log(exp(l0) + exp(a - alpha log S_1) - c S_2)``; inputs
    ``(log S_1, S_2)``; raw parameters ``(l0, a, alpha, c)``, ``c >= 0``."""

    def terms(theta, X):
        return theta[:, :1] + 0 * X[:, 0][None, :], theta[:, 1:2] - theta[:, 2:3] * X[:, 0][None, :]

    def predict(theta, X):
        t0, t1 = terms(theta, X)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # a trial step far out: inf, refused
            inner = np.exp(t0) + np.exp(t1) - theta[:, 3:4] * X[:, 1][None, :]
            return np.where(inner > 0, np.log(np.maximum(inner, 1e-300)), np.nan)

    def jac(theta, X):
        t0, t1 = terms(theta, X)
        inner = np.maximum(np.exp(t0) + np.exp(t1) - theta[:, 3:4] * X[:, 1][None, :], 1e-300)
        e0, e1 = np.exp(t0) / inner, np.exp(t1) / inner
        return np.stack([e0, e1, -e1 * X[:, 0][None, :], -np.broadcast_to(X[:, 1][None, :], e0.shape) / inner],
                        axis=-1)

    def report(theta):
        return {"L0": np.exp(theta[:, 0]), "A": np.exp(theta[:, 1]), "alpha": theta[:, 2], "C": theta[:, 3]}

    return Law("tissue", ("l0", "a", "alpha", "c"), predict, jac, report,
               ((None, None), (None, None), (0.0, 5.0), (0.0, None)))


#: The laws :func:`~batchlaw.fit.curve_fit.fit_curve` knows: ``power`` needs only steps, the others the
#: LR schedule.
CURVE_LAWS = ("power", "tissue", "multipower")


@dataclass(frozen=True)
class _Runs:
    """The runs a schedule-aware law is fitted to: their schedules, on one learning-rate scale."""

    names: tuple
    schedules: tuple
    reference: float  # the largest peak LR: every run's areas count steps at this rate

    def etas(self) -> list[np.ndarray]:
        """Each run's learning rate at steps ``1..T``, divided by ``reference``."""
        return [sc.normalised(self.reference) for sc in self.schedules]

    def index(self, run) -> int:
        if run is None:
            if len(self.names) > 1:
                raise ValueError(f"The fit covers runs {', '.join(map(str, self.names))}: say which run to predict.")
            return 0
        try:
            return self.names.index(run)
        except ValueError:
            raise ValueError(f"Unknown run {run!r}; the fit knows {', '.join(map(str, self.names))}.") from None


def _design(kind: str, runs: _Runs | None, run_idx, steps) -> np.ndarray:
    """The law's inputs at ``steps`` of runs ``run_idx``: ``log t`` (power), ``(log S_1, S_2)``
    (tissue), ``(run, t)`` (multipower)."""
    steps = np.atleast_1d(np.asarray(steps, dtype=np.float64))
    if kind == "power":
        return np.log(steps)[:, None]
    run_idx = np.broadcast_to(np.asarray(run_idx, dtype=np.int64), steps.shape)
    s1, s2 = np.empty(steps.size), np.empty(steps.size)
    for r, sched in enumerate(runs.schedules):
        at = run_idx == r
        if at.any():
            s1[at], s2[at] = sched.areas(steps[at], runs.reference)
    if kind == "tissue":
        with np.errstate(divide="ignore"):  # S_1 = 0 before any learning rate: -inf, refused by fit_curve
            return np.column_stack([np.log(s1), s2])
    return np.column_stack([run_idx.astype(np.float64), steps])


def _law(kind: str, runs: _Runs | None) -> Law:
    if kind == "power":
        return saturating_law()
    if kind == "tissue":
        return schedule_law()
    return multipower_law(runs.etas())
