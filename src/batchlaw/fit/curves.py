"""Learning-curve extrapolation with honest intervals, for constant and decaying learning rates.

Two laws, both fitted with the shared engine (log-space Huber, bootstrap):

- ``power``: ``L(t) = L_inf + a t^(-b)`` for constant-LR runs (or WSD runs before their decay).
- ``schedule`` (Tissue et al. 2024, "Scaling law with learning rate annealing",
  arXiv:2408.11029, eq. 1): ``L(s) = L_0 + A S_1^(-alpha) - C S_2`` with the forward area
  ``S_1 = sum_{i<=s} eta_i`` and the annealing area ``S_2 = sum_{i<=s} m_i``,
  ``m_i = lambda m_{i-1} + (eta_{i-1} - eta_i)`` (decreases only: warmup is not annealing),
  ``lambda = 0.999``; ``eta`` is the learning rate divided by its peak, so ``S_1`` counts
  peak-LR steps. It takes the LR schedule as input (warmup, cosine, WSD, any shape) and predicts
  the loss at a later step of the planned schedule. Points before twice the warmup are not
  fitted; a prediction through a decay the fitted points saw (almost) none of is refused.

Intervals. A logged training loss is smoothed (EMA) and its residuals about any fitted curve
are autocorrelated, so resampling points independently makes the fitted floor look far more
certain than it is. The bootstrap here is a moving-block bootstrap over the curve (Kunsch 1989):
blocks of consecutive points of length ``2 tau`` (``tau``: the lag where the residual
autocorrelation falls below ``1/e``; at least ``n^(1/3)``), so each resample refits the floor
with the curve's own correlated wiggles. The predictive interval at step ``t`` combines, in log
space, the spread of the resampled curves there (which carries the floor's uncertainty), one
observation's noise, and the shift of the prediction when the law is fitted to the later half
of the points only (the law's misfit), with Student-t quantiles on ``n / block - p`` degrees of
freedom (:func:`predict_curve`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import signal, stats

from .._validation import check_positive_float, check_positive_int, check_positive_values, check_probability
from ..errors import InsufficientDataError
from .engine import ENGINE_DELTA, Law, LawFit, fit_law, huber_dispersion, huber_loss, profile_prediction, validate_xy
from .laws import saturating_law
from .multipower import MultiPowerKernel, multipower_law

__all__ = ["CurveFit", "Schedule", "fit_curve", "predict_curve", "backtest_curve", "schedule_law",
           "block_weights", "ANNEAL_DECAY", "CURVE_LAWS"]

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


def block_weights(n: int, n_boot: int, block: int, rng) -> np.ndarray:
    """Moving-block bootstrap counts ``(n_boot, n)``: each resample is ``ceil(n / block)`` blocks of
    ``block`` consecutive points with uniform starts, cut to ``n`` points (Kunsch 1989)."""
    block = int(min(max(block, 1), n))
    k = -(-n // block)
    starts = rng.integers(0, n - block + 1, size=(n_boot, k))
    idx = (starts[:, :, None] + np.arange(block)[None, None, :]).reshape(n_boot, -1)[:, :n]
    W = np.zeros((n_boot, n))
    np.add.at(W, (np.repeat(np.arange(n_boot), n), idx.ravel()), 1.0)
    return W


def _block_length(resid: np.ndarray) -> int:
    """``2 tau`` (``tau``: the first lag with autocorrelation below ``1/e``), within ``[n^(1/3), n/4]``."""
    n = resid.size
    r = resid - resid.mean()
    den = float(r @ r)
    tau = 1
    if den > 0:
        for lag in range(1, n // 2):
            if float(r[:-lag] @ r[lag:]) / den < math.exp(-1):
                tau = lag
                break
        else:
            tau = n // 2
    return int(min(max(2 * tau, math.ceil(n ** (1 / 3))), max(n // 4, 1)))


#: A prediction at an annealing area beyond this multiple of the largest fitted one extrapolates
#: the decay's gain: always flagged for the Tissue law (its annealing term is linear), and for the
#: multi-power law when its fitted drop has not saturated (see :func:`predict_curve`).
S2_REACH = 1.5

#: The multi-power law's drop counts as unsaturated when its ``C x`` stays below this over the
#: fitted points (:meth:`MultiPowerKernel.saturation`). Chosen from backtests of a stable phase plus
#: an 800-step cooldown (40 seeds): the 9 fits below it predicted the longer decay 0.9% to 7.3% too
#: low (median 2.9%), those above it were within 2.2% either way.
MULTIPOWER_SATURATION = 2.0

#: Laws whose predictive interval also takes the profile likelihood of the prediction (the wider
#: side wins; see :func:`predict_curve`). Only the multi-power law: its seven parameters have
#: basins a bootstrap started from one optimum does not leave, while for the power and Tissue laws
#: the block bootstrap and window refits already hold the truth (95-100% in backtests) and the
#: profile only widened their intervals (power law on the first half of constant-LR curves: mean
#: half-width 2.5% -> 6.3%).
PROFILED_LAWS = ("multipower",)

#: The laws :func:`fit_curve` knows: ``power`` needs only steps, the others the LR schedule.
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


@dataclass(frozen=True)
class CurveFit:
    """A fitted learning curve.

    Attributes:
        kind: ``"power"``, ``"tissue"`` (Tissue et al. 2024) or ``"multipower"`` (Luo et al. 2025).
        fit: the engine's :class:`LawFit` (values, intervals, bootstrap draws).
        schedule: the :class:`Schedule` of the (first) run (schedule-aware laws), else ``None``.
        block: block length of the moving-block bootstrap (points).
        resid_var: variance of one observation's log noise (robust scale of the residuals of the later
            half of the fitted points).
        s2_fitted: the largest annealing area among the fitted points (schedule-aware laws).
        window_thetas: raw parameters of the same law fitted to the later half of the points and to
            their first three quarters (those that could be fitted): how far the prediction moves with
            the window measures the law's misfit and how much the extrapolation leans on the last
            points, which a bootstrap of one fit cannot see.
        runs: the runs of a schedule-aware fit (names, schedules, the common LR scale).
        profile_thetas: multi-power law: refits with ``beta`` and ``gamma`` pinned to other values
            that fit the points as well as the best, within noise; the spread of their predictions
            is in the interval.
        inputs: ``(X, log loss)`` as fitted (the law's design and the points kept), for the
            profile likelihood of a prediction.
        warnings: why the fitted law may not describe the points (the loss rises over the fitted
            steps, or the power law came out flat); also issued with :func:`warnings.warn`.
    """

    kind: str
    fit: LawFit
    schedule: Schedule | None
    block: int
    resid_var: float
    s2_fitted: float = 0.0
    window_thetas: tuple = ()
    runs: _Runs | None = None
    profile_thetas: tuple = ()
    inputs: tuple = ()
    warnings: tuple = ()

    @property
    def values(self):
        return self.fit.values

    @property
    def ci(self):
        return self.fit.ci

    @property
    def boot(self):
        return self.fit.boot

    @property
    def n_points(self):
        return self.fit.n_points

    @property
    def confidence(self):
        return self.fit.confidence

    @property
    def rmse_log(self):
        return self.fit.rmse_log

    @property
    def r2_log(self):
        return self.fit.r2_log

    @property
    def run_names(self) -> tuple:
        return self.runs.names if self.runs is not None else ()

    def curve(self, step, values=None, *, run=None):
        """The fitted loss at ``step`` (scalar or array) of ``run`` (needed when the fit has several);
        ``values``: parameters to use (e.g. the bootstrap draws, as arrays)."""
        v = self.values if values is None else values
        step = np.asarray(step, dtype=np.float64)
        if self.kind == "power":
            return v["y_inf"] + v["a"] * step ** (-np.asarray(v["alpha"]))
        r = self.runs.index(run)
        X = _design(self.kind, self.runs, r, np.atleast_1d(step))
        if self.kind == "multipower":
            out = MultiPowerKernel(self.runs.etas(), X[:, 0], X[:, 1]).loss(v)
        else:
            out = (np.asarray(v["L0"])[..., None] + np.asarray(v["A"])[..., None]
                   * np.exp(X[:, 0]) ** (-np.asarray(v["alpha"])[..., None]) - np.asarray(v["C"])[..., None] * X[:, 1])
        return out.reshape(np.shape(v["L0"]) + np.shape(step))

    def window_predictions(self, step: float, *, run=None, profile: bool = False) -> list[float]:
        """The loss at ``step`` predicted by each window refit (see ``window_thetas``), or with
        ``profile`` by each of ``profile_thetas``."""
        r = self.runs.index(run) if self.runs is not None else 0
        law, X = _law(self.kind, self.runs), _design(self.kind, self.runs, r, [step])
        out = []
        for theta in (self.profile_thetas if profile else self.window_thetas):
            with np.errstate(invalid="ignore", over="ignore"):
                v = float(law.predict_log(theta[None, :], X)[0, 0])
            if np.isfinite(v):
                out.append(math.exp(v))
        return out


def _starts(kind: str, X: np.ndarray, logy: np.ndarray, tissue_theta=None) -> np.ndarray:
    ymin = float(np.exp(logy.min()))
    if kind == "power":
        return np.array([(np.log(ymin * f), np.log(ymin) + al * X[:, 0].mean() + da, al)
                         for f in (0.2, 0.5, 0.8, 0.95) for al in (0.05, 0.2, 0.5, 1.0, 2.0) for da in (-2.0, 0.0, 2.0)])
    if kind == "tissue":
        return np.array([(np.log(ymin * f), np.log(ymin) + al * X[:, 0].mean() + da, al, c)
                         for f in (0.5, 0.8, 0.95) for al in (0.1, 0.3, 0.6, 1.0)
                         for da in (-2.0, 0.0, 1.0) for c in (0.0, 1e-4, 1e-3)])
    # multipower: the power part from the Tissue fit (its L0 or a lower floor), the drop part from a grid
    l0, a, al = tissue_theta[:3]
    return np.array([(l0 + dl, a, al, np.log(ymin * b), np.log(c), be, ga)
                     for dl in (0.0, -0.1) for b in (0.03, 0.1, 0.3) for c in (1e-3, 1e-2, 1e-1, 1.0)
                     for be in (0.3, 0.6, 1.2) for ga in (0.3, 0.6)])


def _runs_of(st, lr, schedule, run, schedules) -> tuple[_Runs, np.ndarray]:
    """The runs and each point's run index, from the arguments of :func:`fit_curve`."""
    if run is None:
        if schedules is not None:
            raise ValueError("'schedules' is for several runs: give 'run' (each point's run) with it.")
        if schedule is None:
            schedule = Schedule(st, lr)
        elif lr is not None:
            Schedule(st, lr)  # validates the given column
        return _Runs((None,), (schedule,), schedule.peak), np.zeros(st.size, dtype=np.int64)
    if schedule is not None:
        raise ValueError("With 'run', give each run's planned schedule in 'schedules' (a dict), not 'schedule'.")
    labels = np.asarray(run, dtype=object).ravel()
    if labels.size != st.size:
        raise ValueError(f"'run' has {labels.size} values but 'steps' has {st.size}: lengths must match.")
    names = tuple(dict.fromkeys(labels.tolist()))
    sch = dict(schedules or {})
    for name in names:
        if name not in sch:
            if lr is None:
                raise ValueError(f"Run {name!r} has no schedule: give 'lr' or its entry in 'schedules'.")
            at = labels == name
            sch[name] = Schedule(st[at], np.asarray(lr, dtype=np.float64).ravel()[at])
    names = names + tuple(k for k in sch if k not in names)  # planned runs, to predict only
    idx = np.array([names.index(x) for x in labels.tolist()], dtype=np.int64)
    schedules_t = tuple(sch[k] for k in names)
    return _Runs(names, schedules_t, max(sc.peak for sc in schedules_t)), idx


def fit_curve(steps, loss, *, lr=None, schedule: Schedule | None = None, law: str | None = None,
              run=None, schedules: dict | None = None, warmup_steps: float | None = None, n_boot: int = 1000,
              confidence: float = 0.95, seed: int | None = 0, block: int | None = None) -> CurveFit:
    """Fit a learning curve: ``L_inf + a t^-b``, or with the LR schedule a schedule-aware law.

    Args:
        steps: logged steps (positive).
        loss: loss at those steps.
        lr: learning rate at those steps (for the schedule-aware laws).
        schedule: the full planned schedule (to predict beyond the logged steps); default: the
            one given by ``steps`` and ``lr``.
        law: ``"power"``, ``"tissue"`` (Tissue et al. 2024) or ``"multipower"`` (Luo et al. 2025);
            default ``"power"`` without a schedule, ``"tissue"`` with one.
        run: each point's run (any hashable labels), to fit one schedule-aware law to several runs
            (e.g. a constant-LR run and a short cooldown from one of its checkpoints). Learning
            rates are compared on one scale (steps at the largest peak among the runs).
        schedules: with ``run``: ``{run: Schedule}``, the planned schedules (default: from each
            run's ``steps`` and ``lr``); a run with a schedule but no points can be predicted.
        warmup_steps: steps of learning-rate warmup; points before twice this are left out of the
            fit; too few left for the law is refused. Default: from the schedule (the first step at the peak LR, if the LR
            rose to it), else 0. On constant-LR curves fitted on their first quarter, leaving out a
            300-step warmup took the power law's median error from -3.5% to +0.7%.
        n_boot: moving-block bootstrap resamples (0: none); blocks stay within a run.
        confidence: interval level.
        seed: bootstrap seed.
        block: block length in points (default: from the residual autocorrelation).

    Returns:
        A :class:`CurveFit`; ``values`` has ``y_inf``, ``a``, ``alpha`` (power), ``L0``, ``A``,
        ``alpha``, ``C`` (tissue) or ``L0, A, alpha, B, C, beta, gamma`` (multipower).

    Raises:
        ValueError: non-positive steps or losses, lengths that differ, an unknown law, a
            schedule-aware law without a schedule, ``run`` with the power law, a schedule-aware
            law with a schedule not known from step 1 (:meth:`Schedule.known_from_start`; named
            by run), or fitted points before any learning rate was applied (summed LR 0).
        InsufficientDataError: fewer than 5 points (power), 6 (tissue) or 10 (multipower), also
            after the points before twice the warmup are left out.

    Warns:
        UserWarning: the loss rises over the fitted steps, or the power law comes out flat
            (also in :attr:`CurveFit.warnings`).

    Examples:
        >>> t = np.arange(100, 5001, 100.0)
        >>> fit = fit_curve(t, 2.0 + 5.0 * t**-0.3, n_boot=0)
        >>> round(fit.values["y_inf"], 3), round(fit.values["alpha"], 3)
        (2.0, 0.3)
    """
    confidence = check_probability("confidence", confidence)
    n_boot = check_positive_int("n_boot", n_boot, minimum=0)
    if warmup_steps is not None:
        warmup_steps = check_positive_float("warmup_steps", warmup_steps, allow_zero=True)
    has_schedule = lr is not None or schedule is not None or schedules is not None
    kind = law if law is not None else ("tissue" if has_schedule else "power")
    if kind not in CURVE_LAWS:
        raise ValueError(f"Unknown learning-curve law {law!r}; use one of {', '.join(CURVE_LAWS)}.")
    if kind != "power" and not has_schedule:
        raise ValueError(f"The {kind!r} law takes the learning-rate schedule as input: give 'lr' (the learning rate "
                         "at each logged step) or 'schedule'.")
    if kind == "power" and run is not None:
        raise ValueError("The power law is fitted to one run; several runs share a law only through their schedules "
                         "(law='tissue' or 'multipower').")
    st = np.asarray(steps, dtype=np.float64).ravel()
    if np.any(~np.isfinite(st) | (st <= 0)):
        raise ValueError("The 'steps' values must be positive (step 0 has no place on a power law).")
    loss = np.asarray(loss, dtype=np.float64).ravel()
    if loss.size != st.size:
        raise ValueError(f"'step' has {st.size} values but 'loss' has {loss.size}: lengths must match.")
    runs, ridx = None, np.zeros(st.size, dtype=np.int64)
    if has_schedule:
        runs, ridx = _runs_of(st, lr, schedule, run, schedules)
        if kind != "power":
            _check_known_from_start(runs)
    min_points = {"power": 5, "tissue": 6, "multipower": 10}[kind]
    if warmup_steps is not None:
        warm = np.full(st.size, warmup_steps)
    else:
        warm = np.array([runs.schedules[r].warmup_end for r in ridx]) if runs is not None else np.zeros(st.size)
    keep = st >= 2 * warm  # the warmup's transient is not the law's (a power law in steps reads it as curvature)
    if keep.sum() < min_points <= st.size:
        _refuse_warmup(warmup_steps, warm, keep, kind, min_points)
    st, loss, ridx = st[keep], loss[keep], ridx[keep]
    if kind == "power":
        runs = None
    order = np.lexsort((st, ridx))  # by run, then step: blocks of the bootstrap are runs' stretches
    st, ridx, loss = st[order], ridx[order], loss[order]
    _, logy = validate_xy({"step": st}, loss, y_name="loss", min_points=min_points)
    X = _design(kind, runs, ridx, st)
    Xt = None  # the Tissue law's inputs: its starts for the multi-power law, and the annealing areas fitted
    if runs is not None:
        Xt = X if kind == "tissue" else _design("tissue", runs, ridx, st)
        unlearnt = ~np.isfinite(Xt[:, 0])  # log S_1 of a point before any learning rate was applied
        if unlearnt.any():
            raise ValueError(f"The learning rate is 0 up to step {st[unlearnt].max():g}, where a point is fitted: the "
                             "schedule-aware laws describe the loss after some learning, from a summed learning rate "
                             "> 0. Leave those points out (warmup_steps, --warmup-steps).")
    the_law = _law(kind, runs)
    if kind == "multipower":
        tissue = fit_law(schedule_law(), Xt, logy, starts=_starts("tissue", Xt, logy), n_boot=0, keep_starts=24)
        starts = _starts(kind, X, logy, tissue.theta)
    else:
        starts = _starts(kind, X, logy)
    point = fit_law(the_law, X, logy, starts=starts, n_boot=0, confidence=confidence, keep_starts=24)
    resid = logy - the_law.predict_log(point.theta[None, :], X)[0]
    n, p = logy.size, len(the_law.params)
    bounds = np.flatnonzero(np.diff(np.concatenate([[-1], ridx, [-2]])) != 0)  # run stretches
    blk = (max(_block_length(resid[a:b]) for a, b in zip(bounds[:-1], bounds[1:]) if b - a >= 2)
           if block is None else check_positive_int("block", block))
    W = None
    if n_boot:
        rng = np.random.default_rng(seed)
        W = np.hstack([block_weights(b - a, n_boot, blk, rng) for a, b in zip(bounds[:-1], bounds[1:])])
    fit = fit_law(the_law, X, logy, starts=point.theta[None, :], n_boot=0 if W is None else n_boot,
                  confidence=confidence, seed=seed, keep_starts=1, boot_weights=W)
    resid = logy - the_law.predict_log(fit.theta[None, :], X)[0]
    late = resid[st >= np.median(st)]  # one late observation's noise, not the early transient's misfit
    noise_var = float((1.4826 * np.median(np.abs(late - np.median(late)))) ** 2)
    s2_max = float(Xt[:, 1].max()) if runs is not None else 0.0
    # the same law on the later half, and on the first three quarters: how much the answer leans on the window
    windows = []
    for sel in (st >= np.median(st), st <= st.min() + 0.75 * (st.max() - st.min())):
        if sel.sum() >= p + 3:
            windows.append(fit_law(the_law, X[sel], logy[sel], starts=np.vstack([fit.theta, starts]), n_boot=0,
                                   keep_starts=8).theta)
    profile = _profile_multipower(runs, X, logy, fit, blk, confidence) if kind == "multipower" else ()
    notes = _trend_warnings(kind, fit, st, ridx, logy, resid, runs)
    for note in notes:
        warnings.warn(note, stacklevel=2)
    return CurveFit(kind, fit, runs.schedules[0] if runs is not None else None, blk, noise_var, s2_max,
                    tuple(windows), runs, profile, (X, logy), notes)


def _check_known_from_start(runs: _Runs) -> None:
    """Refuse, by run, a schedule not known from step 1 (:meth:`Schedule.known_from_start`): the
    schedule-aware laws sum the learning rate from the run's first step."""
    for name, sched in zip(runs.names, runs.schedules):
        if not sched.known_from_start():
            of = "" if name is None else f" of run {name!r}"
            gap = sched.steps[1] - sched.steps[0]  # known_from_start: a single row always is
            power = "" if len(runs.names) > 1 else ", or fit law='power' (--law power), which needs only the steps"
            raise ValueError(
                f"The learning rate{of} is known from step {sched.steps[0]:g} on (its first rows are {gap:g} "
                f"step{'s' if gap != 1 else ''} apart): the schedule-aware laws sum the learning rate from step 1, and "
                "the steps before are missing. Give them (their learning rate, with an empty loss; for a branch, its "
                f"trunk's steps){power}.")


def _refuse_warmup(warmup_steps, warm: np.ndarray, keep: np.ndarray, kind: str, min_points: int) -> None:
    """Too few points left after twice the warmup: say so, rather than fit the warmup's transient."""
    left = f"{int(keep.sum())} of the {keep.size} points remain"
    if warmup_steps is not None:
        raise InsufficientDataError(
            f"warmup_steps={warmup_steps:g} (--warmup-steps) leaves out the points before step {2 * warmup_steps:g} "
            f"(twice the warmup): {left}, and the {kind} law needs {min_points}. Give the warmup the run had, or a "
            "longer curve.")
    raise InsufficientDataError(
        f"The learning rate rises to its peak until step {warm.max():g}, and the points before twice that are left "
        f"out of the fit: {left}, and the {kind} law needs {min_points}. Log a longer curve, or pass "
        "warmup_steps=0 (--warmup-steps 0) to fit the warmup's points too.")


#: A curve whose last quarter of fitted points lies this many noise scales (and at least 0.1%) above
#: its first quarter is called rising (see :func:`_trend_warnings`).
RISE_NOISE = 2.0


def _trend_warnings(kind: str, fit: LawFit, st, ridx, logy, resid, runs) -> tuple:
    """Warnings for a curve the laws cannot describe: the loss rises over the fitted steps (every
    law here decreases, or stays flat), or the fitted power law is flat (its exponent at 0)."""
    out = []
    noise = 1.4826 * float(np.median(np.abs(resid - np.median(resid))))
    for r in np.unique(ridx):
        y = logy[ridx == r]
        q = y.size // 4
        if q < 2:
            continue
        rise = float(np.median(y[-q:]) - np.median(y[:q]))
        if rise > max(RISE_NOISE * noise, 1e-3):
            of = "" if runs is None or runs.names[r] is None else f" of run {runs.names[r]!r}"
            t = st[ridx == r]
            out.append(f"The loss{of} rises over the fitted steps: the median of its last quarter (steps {t[-q]:g} to "
                       f"{t[-1]:g}) is {math.expm1(rise):.1%} above that of its first quarter. The {kind} law only "
                       "decreases, so its curve and predictions do not follow these points: check for divergence, a "
                       "rising validation loss (overfitting) or a learning rate raised mid-run.")
    if kind == "power" and fit.values["alpha"] < 1e-6 and not out:
        out.append("The fitted power law is flat (exponent b = 0): the points show no decrease for L_inf + a t^-b to "
                   "follow, and every prediction is their level. Fit a curve that is still falling, or read the level "
                   "as the plateau the points reached.")
    return tuple(out)


def _profile_multipower(runs: _Runs, X, logy, fit: LawFit, block: int, confidence: float) -> tuple:
    """Refits with ``(beta, gamma)`` pinned on a grid that the data cannot tell from the best fit.

    A short decay barely determines the shape of the multi-power law's loss drop: fits with quite
    different ``beta`` and ``gamma`` match the points equally well and predict a longer decay
    differently, and a bootstrap started from one of them stays there. Kept: the pinned fits that
    the robust likelihood-ratio test of the fits' own Huber loss does not reject (Schrader &
    Hettmansperger 1980; :func:`~batchlaw.fit.engine.profile_prediction`): twice the excess of
    their loss over the best's, divided by ``E[psi^2] / E[psi']``
    (:func:`~batchlaw.fit.engine.huber_dispersion`), at most the ``confidence`` quantile of chi^2
    with 2 degrees of freedom times the block length (the autocorrelated residuals make each point
    worth about one block's share of an independent one).
    """
    full = multipower_law(runs.etas())
    best = huber_loss(full, X, logy, fit.theta)
    resid = logy - full.predict_log(fit.theta[None, :], X)[0]
    limit = 0.5 * stats.chi2.ppf(confidence, 2) * block * huber_dispersion(resid, ENGINE_DELTA, len(fit.theta))
    etas = runs.etas()
    kept = []
    for beta in (0.3, 0.6, 1.2):
        for gamma in (0.3, 0.6, 1.0):
            law = multipower_law(etas, fixed={"beta": beta, "gamma": gamma})
            base = fit.theta.copy()
            base[5], base[6] = beta, gamma
            starts = np.array([base + np.array([0, 0, 0, 0, dc, 0, 0]) for dc in (-2.0, 0.0, 2.0)])
            alt = fit_law(law, X, logy, starts=starts, n_boot=0, keep_starts=3)
            if huber_loss(law, X, logy, alt.theta) - best <= limit:
                kept.append(alt.theta)
    return tuple(kept)


def _profile_prediction(fit: CurveFit, step: float, run, t: float) -> tuple[float, float]:
    """The profile-likelihood interval of the prediction at ``step`` (log distances below and
    above): the Huber fits that hold the prediction elsewhere and whose Huber loss exceeds the
    best's by at most ``t^2`` (``F_{1, dof}``) times the block length (autocorrelated residuals:
    each point is worth about one block's share of an independent one) on the robust
    likelihood-ratio scale (:func:`~batchlaw.fit.engine.profile_prediction`). Started from the
    window and shape refits too, so other basins are found."""
    X, logy = fit.inputs
    law = _law(fit.kind, fit.runs)
    r = fit.runs.index(run) if fit.runs is not None else 0
    base = [fit.fit.theta, *fit.window_thetas]
    starts = [np.asarray(th) for th in base[1:] + list(fit.profile_thetas)]
    if fit.kind == "multipower":  # the drop's scale and saturation, across their range: other basins
        for th in base:
            for log_b in (-2.0, 0.0):
                for log_c in (-6.0, -3.0, 0.0, 3.0):
                    v = np.array(th, dtype=np.float64)
                    v[3], v[4] = log_b, log_c
                    starts.append(v)
    return profile_prediction(law, X, logy, fit.fit.theta, _design(fit.kind, fit.runs, r, [step]),
                              critical=t * t, inflation=fit.block, starts=np.array(starts) if starts else None)


def predict_curve(fit: CurveFit, step: float, *, run=None, confidence: float | None = None, **_ignored) -> dict:
    """Predicted loss at ``step`` (of ``run``, for a fit to several) with a predictive interval (needs
    the fit's bootstrap).

    The interval adds, in log space and on each side, the distance from the estimate to the
    block-bootstrap percentile of the curves at ``step`` (the floor's uncertainty included), one
    observation's noise, the shifts of the prediction when the law is fitted to the later half
    or to the first three quarters of the points only (the law's misfit and the extrapolation's
    lean on the last points, which no bootstrap of one fit sees) and, for the multi-power law, the
    largest shift among equally good fits with other ``beta, gamma`` (``profile_thetas``), in
    quadrature, widened by ``t / z`` on ``n / block - p`` degrees of freedom. For the laws in
    :data:`PROFILED_LAWS` each side is at least the profile-likelihood interval of the prediction
    itself (:func:`~batchlaw.fit.engine.profile_prediction`: the Huber fits whose loss exceeds the
    best's by at most ``t^2`` times the block length on the robust likelihood-ratio scale) with one
    observation's noise added.

    A ``warning`` is added where the prediction extrapolates the decay's gain: the Tissue law
    beyond :data:`S2_REACH` times the largest fitted annealing area, and the multi-power law there
    when its fitted drop has not saturated (:data:`MULTIPOWER_SATURATION`).

    Raises:
        ValueError: ``step`` not a finite number > 0.
        InsufficientDataError: a schedule-aware fit asked to predict through an LR decay it saw
            (almost) none of: its annealing term is not determined; or a fitted law whose loss at
            ``step`` is not a positive number (the Tissue law's linear annealing term can run
            below zero far along a decay).
    """
    confidence = check_probability("confidence", confidence or fit.confidence)
    step = check_positive_float("step", step)
    if fit.runs is not None:
        r = fit.runs.index(run)
        s2 = float(fit.runs.schedules[r].areas([step], fit.runs.reference)[1][0])
        if s2 > 0 and fit.s2_fitted < 0.1 * s2:
            raise InsufficientDataError(
                f"The learning rate decays before step {step:g} but barely within the fitted steps (annealing area "
                f"{fit.s2_fitted:.3g} fitted vs {s2:.3g} at step {step:g}): the law's annealing term is not "
                "determined. Fit a curve that includes part of the decay (e.g. a short cooldown from a checkpoint, "
                "given as a second run).")
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        point = float(fit.curve(step, run=run))
    if not (math.isfinite(point) and point > 0):
        raise InsufficientDataError(
            f"The fitted {fit.kind} law gives a loss of {point:.4g} at step {step:g}, not a positive number: the law does "
            "not reach that far"
            + (" (its annealing term, linear in the annealing area, has run past the floor; law='multipower' "
               "saturates)." if fit.kind == "tissue" and point < 0 else ".") + " Predict nearer the fitted steps.")
    out = {"step": step, "loss": point, "interval": [None, None]}
    if fit.kind == "tissue" and s2 > S2_REACH * fit.s2_fitted > 0:
        out["warning"] = (f"The annealing area at step {step:g} is {s2 / fit.s2_fitted:.1f}x the largest fitted: the "
                          "Tissue law's linear annealing term overstates what a longer decay gains (in backtests, a "
                          "WSD run predicted from its stable phase and a short cooldown came out 5% too low, outside "
                          "its interval). Prefer law='multipower' (--law multipower) here.")
    if fit.kind == "multipower" and s2 > S2_REACH * fit.s2_fitted > 0 and fit.inputs:
        X = fit.inputs[0]
        sat = MultiPowerKernel(fit.runs.etas(), X[:, 0], X[:, 1]).saturation(fit.values)
        if sat < MULTIPOWER_SATURATION:
            out["warning"] = (f"The fitted loss drop barely saturates within the decay it saw (C x reaches {sat:.2g}; "
                              f"below {MULTIPOWER_SATURATION:g} its gain is still close to linear in the area run at "
                              "the lower rate), and the annealing area at step "
                              f"{step:g} is {s2 / fit.s2_fitted:.1f}x the largest fitted: the prediction leans on a "
                              "saturation the data did not show (in backtests such fits came out 1-7% too low). "
                              "Fit more of a decay: later steps of this run, or a longer cooldown (or one to a lower "
                              "learning rate) from a checkpoint as another run.")
    if fit.runs is not None and len(fit.runs.names) > 1:
        out["run"] = fit.runs.names[fit.runs.index(run)]
    if not fit.boot:
        return out
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        curves = np.log(fit.curve(step, fit.boot, run=run))
    curves = curves[np.isfinite(curves)]
    if curves.size < 0.5 * len(next(iter(fit.boot.values()))):
        raise InsufficientDataError(f"Most bootstrap fits of the {fit.kind} law give no finite loss at step {step:g}: "
                                    "its interval cannot be computed there. Predict nearer the fitted steps.")
    a = 1 - confidence
    dof = max(fit.n_points / fit.block - len(fit.values), 1)
    z, t = stats.norm.ppf(1 - a / 2), stats.t.ppf(1 - a / 2, dof)
    lp = math.log(point)
    q_lo, q_hi = np.quantile(curves, [a / 2, 1 - a / 2])
    misfit = math.sqrt(sum((math.log(w) - lp) ** 2 for w in fit.window_predictions(step, run=run)))
    shape = max([abs(math.log(w) - lp) for w in fit.window_predictions(step, run=run, profile=True)], default=0.0)
    noise = math.sqrt(z**2 * fit.resid_var + misfit**2 + shape**2)
    lo = math.hypot(max(lp - q_lo, 0.0), noise) * t / z
    hi = math.hypot(max(q_hi - lp, 0.0), noise) * t / z
    if fit.kind in PROFILED_LAWS and fit.inputs:
        below, above = _profile_prediction(fit, step, run, t)
        one = z * math.sqrt(fit.resid_var)  # one observation's noise
        lo, hi = max(lo, math.hypot(below, one)), max(hi, math.hypot(above, one))
    out["interval"] = [point * math.exp(-lo), point * math.exp(hi) if hi < 700 else math.inf]
    return out


def backtest_curve(steps, loss, *, lr=None, law: str | None = None, fraction: float = 0.5, n_boot: int = 500,
                   confidence: float = 0.95, warmup_steps: float | None = None) -> dict:
    """Fit on the first ``fraction`` of the curve (by step), predict the last point, report the error.

    Without a bootstrap (``n_boot=0``) the interval is ``[None, None]`` and ``inside`` is ``None``.
    With ``lr`` (the learning rate at every logged step) a schedule-aware law is used (``law``, as
    in :func:`fit_curve`) and the whole schedule is known to the prediction, as it is when a run is
    planned. ``warmup_steps``: as in :func:`fit_curve`.
    """
    fraction = check_probability("fraction", fraction)
    steps, loss = np.asarray(steps, float), np.asarray(loss, float)
    order = np.argsort(steps)
    steps, loss = steps[order], loss[order]
    cut = steps[0] + fraction * (steps[-1] - steps[0])
    sel = steps <= cut
    need = 10 if law == "multipower" else 6
    if sel.sum() < need:
        raise InsufficientDataError(f"The first {fraction:.0%} of the curve holds {int(sel.sum())} points; "
                                    f"{need} are needed.")
    if lr is None:
        fit = fit_curve(steps[sel], loss[sel], law=law, n_boot=n_boot, confidence=confidence,
                        warmup_steps=warmup_steps)
    else:
        lr = np.asarray(lr, float)[order]
        fit = fit_curve(steps[sel], loss[sel], lr=lr[sel], schedule=Schedule(steps, lr), law=law, n_boot=n_boot,
                        confidence=confidence, warmup_steps=warmup_steps)
    pred = predict_curve(fit, steps[-1])
    lo, hi = pred["interval"]
    return {"fraction": fraction, "law": fit.kind, "fit_points": int(fit.n_points), "final_step": float(steps[-1]),
            "final_loss": float(loss[-1]), "predicted": pred["loss"], "interval": [lo, hi],
            "rel_error": float(pred["loss"] / loss[-1] - 1),
            "inside": None if lo is None else bool(lo <= loss[-1] <= hi)}
