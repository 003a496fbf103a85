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
from dataclasses import dataclass

import numpy as np
from scipy import signal, stats

from .._validation import check_positive_int, check_probability
from ..errors import InsufficientDataError
from .engine import Law, LawFit, fit_law, validate_xy
from .laws import saturating_law

__all__ = ["CurveFit", "Schedule", "fit_curve", "predict_curve", "backtest_curve", "schedule_law",
           "block_weights", "ANNEAL_DECAY"]

#: Tissue et al. 2024's momentum decay ``lambda`` of the annealing area.
ANNEAL_DECAY = 0.999


class Schedule:
    """A learning-rate schedule known at some steps, linearly interpolated to every step.

    Args:
        steps: steps at which the learning rate is known (positive, any order).
        lr: the learning rate there (positive).

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
        for name, arr in (("steps", st), ("lr", lv)):
            bad = ~np.isfinite(arr) | (arr <= 0)
            if bad.any():
                raise ValueError(f"The '{name}' values of the schedule must be finite and positive. Got "
                                 f"{arr[bad][:5].tolist()} at positions {np.flatnonzero(bad)[:5].tolist()}.")
        order = np.argsort(st)
        self.steps, self.lr = st[order], lv[order]
        self.peak = float(self.lr.max())
        self.peak_step = float(self.steps[np.argmax(self.lr)])
        self.last = int(math.ceil(self.steps[-1]))
        grid = np.arange(1, self.last + 1, dtype=np.float64)
        eta = np.interp(grid, self.steps, self.lr) / self.peak  # every step, normalised
        drop = np.maximum(np.concatenate([[0.0], eta[:-1] - eta[1:]]), 0.0)  # warmup is not annealing
        self._s1 = np.cumsum(eta)
        self._s2 = np.cumsum(signal.lfilter([1.0], [1.0, -ANNEAL_DECAY], drop))

    def areas(self, at) -> tuple[np.ndarray, np.ndarray]:
        """``(S_1, S_2)`` at steps ``at`` (interpolated between integer steps)."""
        at = np.asarray(at, dtype=np.float64)
        if np.any(at > self.last + 1e-9) or np.any(at <= 0):
            raise ValueError(f"The schedule is known from step 1 to {self.last}; asked for steps "
                             f"{at.min():g} to {at.max():g}. Give the learning rate up to the step to predict.")
        g = np.arange(1, self.last + 1, dtype=np.float64)
        return np.interp(at, g, self._s1), np.interp(at, g, self._s2)


def schedule_law() -> Law:
    """Tissue et al. 2024: ``log L = log(exp(l0) + exp(a - alpha log S_1) - c S_2)``; inputs
    ``(log S_1, S_2)``; raw parameters ``(l0, a, alpha, c)``, ``c >= 0``."""

    def terms(theta, X):
        return theta[:, :1] + 0 * X[:, 0][None, :], theta[:, 1:2] - theta[:, 2:3] * X[:, 0][None, :]

    def predict(theta, X):
        t0, t1 = terms(theta, X)
        inner = np.exp(t0) + np.exp(t1) - theta[:, 3:4] * X[:, 1][None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(inner > 0, np.log(np.maximum(inner, 1e-300)), np.nan)

    def jac(theta, X):
        t0, t1 = terms(theta, X)
        inner = np.maximum(np.exp(t0) + np.exp(t1) - theta[:, 3:4] * X[:, 1][None, :], 1e-300)
        e0, e1 = np.exp(t0) / inner, np.exp(t1) / inner
        return np.stack([e0, e1, -e1 * X[:, 0][None, :], -np.broadcast_to(X[:, 1][None, :], e0.shape) / inner],
                        axis=-1)

    def report(theta):
        return {"L0": np.exp(theta[:, 0]), "A": np.exp(theta[:, 1]), "alpha": theta[:, 2], "C": theta[:, 3]}

    return Law("schedule", ("l0", "a", "alpha", "c"), predict, jac, report,
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


@dataclass(frozen=True)
class CurveFit:
    """A fitted learning curve.

    Attributes:
        kind: ``"power"`` or ``"schedule"``.
        fit: the engine's :class:`LawFit` (values, intervals, bootstrap draws).
        schedule: the :class:`Schedule` (``kind == "schedule"``), else ``None``.
        block: block length of the moving-block bootstrap (points).
        resid_var: variance of one observation's log noise (robust scale of the residuals of the later
            half of the fitted points).
        s2_fitted: the largest annealing area among the fitted points (``kind == "schedule"``).
        late_theta: raw parameters of the same law fitted to the later half of the points only
            (``None`` when too few): the spread between the two predictions measures how much the
            extrapolation leans on the window, which a bootstrap of one fit cannot see.
    """

    kind: str
    fit: LawFit
    schedule: Schedule | None
    block: int
    resid_var: float
    s2_fitted: float = 0.0
    late_theta: np.ndarray | None = None

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

    def curve(self, step, values=None):
        """The fitted loss at ``step`` (scalar or array); ``values``: parameters to use (e.g. the
        bootstrap draws, as arrays)."""
        v = self.values if values is None else values
        step = np.asarray(step, dtype=np.float64)
        if self.kind == "power":
            return v["y_inf"] + v["a"] * step ** (-np.asarray(v["alpha"]))
        s1, s2 = self.schedule.areas(np.atleast_1d(step))
        out = (np.asarray(v["L0"])[..., None] + np.asarray(v["A"])[..., None] * s1 ** (-np.asarray(v["alpha"])[..., None])
               - np.asarray(v["C"])[..., None] * s2)
        return out.reshape(np.shape(v["L0"]) + np.shape(step))


def fit_curve(steps, loss, *, lr=None, schedule: Schedule | None = None, n_boot: int = 1000,
              confidence: float = 0.95, seed: int | None = 0, block: int | None = None) -> CurveFit:
    """Fit a learning curve: ``L_inf + a t^-b``, or with ``lr`` the schedule-aware law of Tissue et al.

    Args:
        steps: logged steps (positive).
        loss: loss at those steps.
        lr: learning rate at those steps: fit the schedule-aware law.
        schedule: the full planned schedule (to predict beyond the logged steps); default: the
            one given by ``steps`` and ``lr``.
        n_boot: moving-block bootstrap resamples (0: none).
        confidence: interval level.
        seed: bootstrap seed.
        block: block length in points (default: from the residual autocorrelation).

    Returns:
        A :class:`CurveFit`; ``values`` has ``y_inf``, ``a``, ``alpha`` (power) or ``L0``, ``A``,
        ``alpha``, ``C`` (schedule).

    Raises:
        ValueError: non-positive steps or losses, lengths that differ.
        InsufficientDataError: fewer than 5 points (power) or 6 (schedule).

    Examples:
        >>> t = np.arange(100, 5001, 100.0)
        >>> fit = fit_curve(t, 2.0 + 5.0 * t**-0.3, n_boot=0)
        >>> round(fit.values["y_inf"], 3), round(fit.values["alpha"], 3)
        (2.0, 0.3)
    """
    confidence = check_probability("confidence", confidence)
    n_boot = check_positive_int("n_boot", n_boot, minimum=0)
    st = np.asarray(steps, dtype=np.float64).ravel()
    if np.any(~np.isfinite(st) | (st <= 0)):
        raise ValueError("The 'steps' values must be positive (step 0 has no place on a power law).")
    if lr is None and schedule is None:
        X, logy = validate_xy({"step": st}, loss, y_name="loss", min_points=5)
        ymin = float(np.exp(logy.min()))
        lx = X[:, 0]
        starts = np.array([(np.log(ymin * f), np.log(ymin) + al * lx.mean() + da, al)
                           for f in (0.2, 0.5, 0.8, 0.95) for al in (0.05, 0.2, 0.5, 1.0, 2.0)
                           for da in (-2.0, 0.0, 2.0)])
        law, sched, kind = saturating_law(), None, "power"
    else:
        if schedule is None:
            schedule = Schedule(st, lr)
        elif lr is not None:
            Schedule(st, lr)  # validates the given column
        keep = st >= 2 * schedule.peak_step  # the warmup and its transient are not the law's business
        if keep.sum() >= 6:
            st, loss = st[keep], np.asarray(loss, dtype=np.float64).ravel()[keep]
        _, logy = validate_xy({"step": st}, loss, y_name="loss", min_points=6)
        s1, s2 = schedule.areas(st)
        X = np.column_stack([np.log(s1), s2])
        ymin = float(np.exp(logy.min()))
        starts = np.array([(np.log(ymin * f), np.log(ymin) + al * X[:, 0].mean() + da, al, c)
                           for f in (0.5, 0.8, 0.95) for al in (0.1, 0.3, 0.6, 1.0)
                           for da in (-2.0, 0.0, 1.0) for c in (0.0, 1e-4, 1e-3)])
        law, sched, kind = schedule_law(), schedule, "schedule"
    point = fit_law(law, X, logy, starts=starts, n_boot=0, confidence=confidence, keep_starts=24)
    resid = logy - law.predict_log(point.theta[None, :], X)[0]
    n, p = logy.size, len(law.params)
    blk = _block_length(resid) if block is None else check_positive_int("block", block)
    W = block_weights(n, n_boot, blk, np.random.default_rng(seed)) if n_boot else None
    fit = fit_law(law, X, logy, starts=point.theta[None, :], n_boot=0 if W is None else n_boot,
                  confidence=confidence, seed=seed, keep_starts=1, boot_weights=W)
    resid = logy - law.predict_log(fit.theta[None, :], X)[0]
    late = resid[np.argsort(X[:, 0])][n // 2:]  # one late observation's noise, not the early transient's misfit
    noise_var = float((1.4826 * np.median(np.abs(late - np.median(late)))) ** 2)
    s2_max = float(X[:, 1].max()) if kind == "schedule" else 0.0
    late_theta = None
    late = X[:, 0] >= np.median(X[:, 0])
    if late.sum() >= p + 3:  # the same law fitted to the later half: how much the answer leans on the window
        late_theta = fit_law(law, X[late], logy[late], starts=np.vstack([fit.theta, starts]), n_boot=0,
                             keep_starts=8).theta
    return CurveFit(kind, fit, sched, blk, noise_var, s2_max, late_theta)


def predict_curve(fit: CurveFit, step: float, *, confidence: float | None = None, **_ignored) -> dict:
    """Predicted loss at ``step`` with a predictive interval (needs the fit's bootstrap).

    The interval adds, in log space and on each side, the distance from the estimate to the
    block-bootstrap percentile of the curves at ``step`` (the floor's uncertainty included), one
    observation's noise, and the shift of the prediction when the law is fitted to the later half
    of the points only (the law's misfit, which no bootstrap of one fit sees), in quadrature,
    widened by ``t / z`` on ``n / block - p`` degrees of freedom.

    Raises:
        InsufficientDataError: a schedule-aware fit asked to predict through an LR decay it saw
            (almost) none of: its annealing term is not determined.
    """
    confidence = check_probability("confidence", confidence or fit.confidence)
    if fit.kind == "schedule":
        s2 = float(fit.schedule.areas([step])[1][0])
        if s2 > 0 and fit.s2_fitted < 0.1 * s2:
            raise InsufficientDataError(
                f"The learning rate decays before step {step:g} but barely within the fitted steps (annealing area "
                f"{fit.s2_fitted:.3g} fitted vs {s2:.3g} at step {step:g}): the law's annealing term is not "
                "determined. Fit a curve that includes part of the decay (e.g. a short cooldown from a checkpoint).")
    point = float(fit.curve(step))
    if not fit.boot:
        return {"step": step, "loss": point, "interval": [None, None]}
    with np.errstate(invalid="ignore", divide="ignore"):
        curves = np.log(fit.curve(step, fit.boot))
    curves = curves[np.isfinite(curves)]
    a = 1 - confidence
    dof = max(fit.n_points / fit.block - len(fit.values), 1)
    z, t = stats.norm.ppf(1 - a / 2), stats.t.ppf(1 - a / 2, dof)
    lp = math.log(point)
    q_lo, q_hi = np.quantile(curves, [a / 2, 1 - a / 2])
    noise = z * math.sqrt(fit.resid_var)
    if fit.late_theta is not None:
        law = saturating_law() if fit.kind == "power" else schedule_law()
        values = {k: float(v[0]) for k, v in law.report(fit.late_theta[None, :]).items()}
        late = float(fit.curve(step, values))
        if late > 0:
            noise = math.hypot(noise, math.log(late) - lp)
    lo = math.hypot(max(lp - q_lo, 0.0), noise) * t / z
    hi = math.hypot(max(q_hi - lp, 0.0), noise) * t / z
    return {"step": step, "loss": point, "interval": [point * math.exp(-lo), point * math.exp(hi)]}


def backtest_curve(steps, loss, *, lr=None, fraction: float = 0.5, n_boot: int = 500,
                   confidence: float = 0.95) -> dict:
    """Fit on the first ``fraction`` of the curve (by step), predict the last point, report the error.

    With ``lr`` (the learning rate at every logged step) the schedule-aware law is used and the
    whole schedule is known to the prediction, as it is when a run is planned.
    """
    fraction = check_probability("fraction", fraction)
    steps, loss = np.asarray(steps, float), np.asarray(loss, float)
    order = np.argsort(steps)
    steps, loss = steps[order], loss[order]
    cut = steps[0] + fraction * (steps[-1] - steps[0])
    sel = steps <= cut
    if sel.sum() < 6:
        raise InsufficientDataError(f"The first {fraction:.0%} of the curve holds {int(sel.sum())} points; 6 are needed.")
    if lr is None:
        fit = fit_curve(steps[sel], loss[sel], n_boot=n_boot, confidence=confidence)
    else:
        lr = np.asarray(lr, float)[order]
        fit = fit_curve(steps[sel], loss[sel], lr=lr[sel], schedule=Schedule(steps, lr), n_boot=n_boot,
                        confidence=confidence)
    pred = predict_curve(fit, steps[-1])
    lo, hi = pred["interval"]
    return {"fraction": fraction, "law": fit.kind, "fit_points": int(sel.sum()), "final_step": float(steps[-1]),
            "final_loss": float(loss[-1]), "predicted": pred["loss"], "interval": [lo, hi],
            "rel_error": float(pred["loss"] / loss[-1] - 1), "inside": bool(lo <= loss[-1] <= hi)}
