"""Fitting a learning curve (:func:`fit_curve`), with a bootstrap that respects its autocorrelated noise.

A logged training loss is smoothed (EMA) and its residuals about any fitted curve are
autocorrelated, so resampling points independently makes the fitted floor look far more certain
than it is. The bootstrap here is a moving-block bootstrap over the curve (Kunsch 1989,
:func:`block_weights`): blocks of consecutive points of length ``2 tau`` (``tau``: the lag where
the residual autocorrelation falls below ``1/e``; at least ``n^(1/3)``), within each run, so each
resample refits the floor with the curve's own correlated wiggles. A fit (:class:`CurveFit`) also
keeps what the predictive interval of :func:`~batchlaw.fit.curves.predict_curve` needs: one
observation's noise, the same law refitted on windows of the points (its misfit), and for the
multi-power law the refits with other drop shapes that fit the points as well. Points before twice
the warmup are not fitted. The laws are in :mod:`batchlaw.fit.curve_laws`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

from .._validation import check_positive_float, check_positive_int, check_probability
from ..errors import InsufficientDataError
from .curve_laws import CURVE_LAWS, Schedule, _design, _law, _Runs, schedule_law
from .engine import ENGINE_DELTA, LawFit, fit_law, huber_dispersion, huber_loss, validate_xy
from .multipower import MultiPowerKernel, multipower_law

__all__ = ["CurveFit", "fit_curve", "block_weights"]


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
