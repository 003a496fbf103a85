"""One fitting engine for every law: log-space Huber loss, L-BFGS from a grid of starts, bootstrap.

A law is a function ``log y = f(theta, X)`` with its Jacobian, both vectorised over many
parameter vectors at once (``theta`` has shape ``(m, p)``). The engine minimises

    sum_i w_i Huber_delta(f(theta, X_i) - log y_i)

(Hoffmann et al. 2022, Approach 3; Besiroglu et al. 2024 use ``delta = 1e-3``) with
the best starts of a grid refined together by iteratively reweighted Gauss-Newton steps with
Levenberg-Marquardt damping (vectorised: many independent fits advance in one batched
``p x p`` solve per iteration), the winner polished with ``scipy.optimize.minimize`` (L-BFGS-B).
Bootstrap resamples (the same rows with multinomial weights, i.e. runs resampled with
replacement) are fitted the same vectorised way, starting from the point estimate, so 1,000 of
them take seconds. Intervals are bootstrap percentiles, widened about the estimate by
``t_{n-p} / z`` for small samples. A prediction also has a profile-likelihood interval of the
same Huber loss (:func:`profile_prediction`, the robust likelihood-ratio test).

Goodness of fit: RMSE and R^2 of ``log y``. Extrapolation check: refit without the points
largest in a chosen column (e.g. compute) and report the error on them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy import optimize, stats

from .._validation import check_positive_float, check_positive_int, check_positive_values, check_probability
from ..errors import InsufficientDataError

__all__ = ["ENGINE_DELTA", "Law", "LawFit", "fit_law", "huber", "huber_dispersion", "huber_loss", "profile_prediction",
           "validate_xy", "widened_interval"]


@dataclass(frozen=True)
class Law:
    """A law in log space.

    Attributes:
        name: for messages.
        params: names of the raw parameters ``theta`` (what is optimised).
        predict_log: ``(theta (m, p), X (n, k)) -> log y (m, n)``.
        jac_log: ``(theta (m, p), X (n, k)) -> d log y / d theta (m, n, p)``.
        report: ``theta (m, p) -> {name: (m,)}``: the quantities reported (e.g. ``A = exp(a)``).
        bounds: ``(lo, hi)`` per raw parameter (``None`` for unbounded).
    """

    name: str
    params: tuple[str, ...]
    predict_log: Callable[[np.ndarray, np.ndarray], np.ndarray]
    jac_log: Callable[[np.ndarray, np.ndarray], np.ndarray]
    report: Callable[[np.ndarray], dict]
    bounds: tuple[tuple[float | None, float | None], ...]


@dataclass(frozen=True)
class LawFit:
    """A fitted law: reported values, intervals and diagnostics."""

    law: str
    values: dict
    ci: dict
    theta: np.ndarray
    n_points: int
    rmse_log: float
    r2_log: float
    confidence: float
    n_boot: int
    extrapolation: dict | None = None
    boot: dict = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        d = {k: float(v) for k, v in self.values.items()}
        d.update(n_points=self.n_points, ci={k: [float(lo), float(hi)] for k, (lo, hi) in self.ci.items()},
                 confidence=self.confidence, n_boot=self.n_boot,
                 goodness={"rmse_log": self.rmse_log, "r2_log": self.r2_log})
        if self.extrapolation is not None:
            d["extrapolation"] = self.extrapolation
        return d


#: The Huber threshold on log residuals of every engine fit unless told otherwise (Besiroglu et al. 2024;
#: :data:`batchlaw.fit.steps.HUBER_DELTA` is the steps law's own).
ENGINE_DELTA = 1e-3


def huber(r, delta):
    """Huber loss of residuals ``r`` with threshold ``delta``."""
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def huber_loss(law: Law, X: np.ndarray, logy: np.ndarray, theta: np.ndarray, delta: float = ENGINE_DELTA) -> float:
    """The objective :func:`fit_law` minimises, at one parameter vector ``theta`` (p,)."""
    return float(huber(logy - law.predict_log(np.atleast_2d(theta), X)[0], delta).sum())


def widened_interval(boot, point: float, confidence: float, dof: int) -> tuple[float, float]:
    """Bootstrap percentile interval widened about ``point`` by ``t_dof / z`` for small samples
    (in log space when the quantity and the interval are positive), as a t interval would be
    wider than a normal one."""
    a = 1.0 - confidence
    widen = stats.t.ppf(1 - a / 2, max(dof, 1)) / stats.norm.ppf(1 - a / 2)
    boot = np.asarray(boot, dtype=np.float64)
    big = np.finfo(np.float64).max
    # resamples at +-inf (a coefficient whose log overflowed) count as the largest floats, so that the quantiles
    # interpolate (inf - inf is NaN) and an end among them is reported as unbounded
    lo_q, hi_q = (float(q) if abs(q) < big else math.copysign(math.inf, q)
                  for q in np.quantile(np.clip(boot, -big, big), [a / 2, 1 - a / 2]))
    if point > 0 and lo_q > 0:
        lp = math.log(point)
        return _exp(lp - widen * (lp - math.log(lo_q))), _exp(lp + widen * (math.log(hi_q) - lp))
    lo = point - widen * (point - lo_q)
    if lo_q == 0 and point >= 0 and boot.min() >= 0:
        # resamples sitting exactly at 0 meet a constraint (a law's E = exp(e) -> 0, an exponent bounded at 0):
        # the quantity cannot be negative, so neither can its interval
        lo = 0.0
    return lo, point + widen * (hi_q - point)


def _exp(x: float) -> float:
    """``exp(x)``, ``inf`` beyond the float range (an interval end the data do not bound)."""
    return math.exp(x) if x < 709.78 else math.inf


def _objective(flat, law, X, logy, W, delta, m, p):
    theta = flat.reshape(m, p)
    r = law.predict_log(theta, X) - logy[None, :]  # (m, n)
    f = float((W * huber(r, delta)).sum())
    psi = W * np.clip(r, -delta, delta)  # (m, n)
    grad = np.einsum("mn,mnp->mp", psi, law.jac_log(theta, X))
    return f, grad.ravel()


def _losses(law, X, logy, W, theta, delta):
    r = law.predict_log(theta, X) - logy[None, :]
    with np.errstate(invalid="ignore"):  # a zero weight on a point the trial cannot predict: refused below
        out = (W * huber(r, delta)).sum(1)
    return np.where(np.isfinite(out), out, np.inf)


def _solve_irls(law, X, logy, W, theta0, delta, lo, hi, iters=100, tol=1e-10):
    """Many independent Huber fits at once: iteratively reweighted Gauss-Newton with
    Levenberg-Marquardt damping per problem (batched p x p solves). Problems leave the active
    set once a step improves their loss by less than ``tol`` (relative) or their damping has grown
    past 1e6 (no step helps)."""
    theta = theta0.copy()
    m, p = theta.shape
    lam = np.full(m, 1e-3)
    loss = _losses(law, X, logy, W, theta, delta)
    eye = np.eye(p)
    active = np.arange(m)
    for _ in range(iters):
        if active.size == 0:
            break
        th, w = theta[active], W[active]
        r = law.predict_log(th, X) - logy[None, :]  # (a, n)
        J = law.jac_log(th, X)  # (a, n, p)
        om = w * np.minimum(1.0, delta / np.maximum(np.abs(r), 1e-12))
        jtj = np.einsum("anp,an,anq->apq", J, om, J)
        g = np.einsum("anp,an->ap", J, om * r)
        diag = np.einsum("app->ap", jtj)[:, :, None] * eye + 1e-12 * eye
        la = lam[active]
        step = -np.linalg.solve(jtj + la[:, None, None] * diag, g[..., None])[..., 0]
        cand = np.clip(th + step, lo, hi)
        cl = _losses(law, X, logy, w, cand, delta)
        old = loss[active]
        better = cl < old
        gain = np.where(better, (old - cl) / np.maximum(old, 1e-300), 0.0)
        theta[active[better]] = cand[better]
        loss[active[better]] = cl[better]
        la = np.where(better, np.maximum(la * 0.3, 1e-12), la * 10.0)
        lam[active] = la
        done = (better & (gain < tol)) | (la > 1e6)
        active = active[~done]
    return theta, loss


def _solve(law, X, logy, W, theta0, delta):
    """L-BFGS-B on the sum of ``m`` independent objectives (used to polish one fit)."""
    m, p = theta0.shape
    res = optimize.minimize(
        _objective, theta0.ravel(), args=(law, X, logy, W, delta, m, p), jac=True, method="L-BFGS-B",
        bounds=list(law.bounds) * m, options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-10, "maxcor": 30},
    )
    theta = res.x.reshape(m, p)
    r = law.predict_log(theta, X) - logy[None, :]
    return theta, (W * huber(r, delta)).sum(1)


def validate_xy(columns: dict, y, *, y_name: str, min_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Check positive finite inputs; return ``(log X (n, k), log y (n,))``."""
    arrays = {k: np.asarray(v, dtype=np.float64).ravel() for k, v in columns.items()}
    yv = np.asarray(y, dtype=np.float64).ravel()
    for name, arr in [*arrays.items(), (y_name, yv)]:
        if arr.shape != yv.shape:
            raise ValueError(f"'{name}' has {arr.size} values but '{y_name}' has {yv.size}: lengths must match.")
        check_positive_values(name, arr)
    if yv.size < min_points:
        raise InsufficientDataError(f"At least {min_points} points are needed for this fit; got {yv.size}.")
    X = np.column_stack([np.log(a) for a in arrays.values()]) if arrays else np.zeros((yv.size, 0))
    return X, np.log(yv)


def fit_law(
    law: Law,
    X: np.ndarray,
    logy: np.ndarray,
    *,
    starts: np.ndarray,
    delta: float = ENGINE_DELTA,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int | None = 0,
    keep_starts: int = 16,
    extrapolation_col: int | None = None,
    extrapolation_frac: float = 0.2,
    boot_weights: np.ndarray | None = None,
) -> LawFit:
    """Fit ``law`` to ``(X, log y)`` (``X`` holds logs of the inputs) with bootstrap intervals.

    Args:
        law: the law.
        X: (n, k) log inputs.
        logy: (n,) log outputs.
        starts: (s, p) grid of starting points; the ``keep_starts`` best by initial loss are refined.
        delta: Huber threshold on log residuals.
        n_boot: bootstrap resamples of the rows (0 for none).
        confidence: interval level.
        seed: bootstrap seed.
        extrapolation_col: if given, also refit without the ``extrapolation_frac`` of points largest
            in ``X[:, col]`` and report the error of predicting them.
        boot_weights: (n_boot, n) resampling counts to use instead of i.i.d. multinomial ones (e.g.
            a moving-block bootstrap for autocorrelated residuals); overrides ``n_boot``.
    """
    confidence = check_probability("confidence", confidence)
    n_boot = check_positive_int("n_boot", n_boot, minimum=0)
    n = logy.size
    p = len(law.params)
    if n <= p:
        raise InsufficientDataError(f"The {law.name} law has {p} parameters and needs more than {p} points; got {n}.")
    starts = np.atleast_2d(np.asarray(starts, dtype=np.float64))
    lo, hi = _bounds(law)
    starts = np.clip(starts, lo, hi)
    ones = np.ones((1, n))
    init_r = law.predict_log(starts, X) - logy[None, :]
    init_loss = huber(init_r, delta).sum(1)
    init_loss[~np.isfinite(init_loss)] = np.inf
    best = starts[np.argsort(init_loss)[: min(keep_starts, len(starts))]]
    thetas, losses = _solve_irls(law, X, logy, np.repeat(ones, len(best), 0), best, delta, lo, hi)
    theta, loss = thetas[np.argmin(losses)], losses.min()
    polished, ploss = _solve(law, X, logy, ones, theta[None, :], delta)
    if ploss[0] < loss:
        theta = polished[0]

    fitted = law.predict_log(theta[None, :], X)[0]
    resid = logy - fitted
    rmse = float(np.sqrt(np.mean(resid**2)))
    ss_tot = float(((logy - logy.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / ss_tot if ss_tot > 0 else math.nan
    values = {k: float(v[0]) for k, v in law.report(theta[None, :]).items()}

    ci, boot = {}, {}
    if boot_weights is not None:
        boot_weights = np.asarray(boot_weights, dtype=np.float64)
        if boot_weights.ndim != 2 or boot_weights.shape[1] != n:
            raise ValueError(f"'boot_weights' must have shape (n_boot, {n}); got {boot_weights.shape}.")
        n_boot = boot_weights.shape[0]
    if n_boot:
        rng = np.random.default_rng(seed)
        W = (boot_weights if boot_weights is not None
             else rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64))  # (n_boot, n)
        tb, _ = _solve_irls(law, X, logy, W, np.repeat(theta[None, :], n_boot, 0), delta, lo, hi)
        boot = law.report(tb)
        ci = {k: widened_interval(v, values[k], confidence, n - p) for k, v in boot.items()}

    extrap = None
    if extrapolation_col is not None:
        cut = np.quantile(X[:, extrapolation_col], 1.0 - extrapolation_frac)
        train, test = X[:, extrapolation_col] < cut, X[:, extrapolation_col] >= cut
        if train.sum() > p and test.any():
            sub = fit_law(law, X[train], logy[train], starts=starts, delta=delta, n_boot=0, keep_starts=keep_starts)
            pred = law.predict_log(sub.theta[None, :], X[test])[0]
            rel = np.exp(pred - logy[test]) - 1.0
            extrap = {"held_out_points": int(test.sum()), "held_out_fraction": extrapolation_frac,
                      "median_abs_rel_error": float(np.median(np.abs(rel))),
                      "max_abs_rel_error": float(np.max(np.abs(rel)))}
    return LawFit(law.name, values, ci, theta, n, rmse, r2, confidence, n_boot, extrap, boot)


def _bounds(law: Law) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([-np.inf if b[0] is None else b[0] for b in law.bounds]),
            np.array([np.inf if b[1] is None else b[1] for b in law.bounds]))


def huber_dispersion(resid, delta: float, n_params: int) -> float:
    """``E[psi^2] / E[psi']`` of the Huber loss at threshold ``delta`` for residuals ``resid`` of a
    fit with ``n_params`` parameters: the factor that turns an excess of the Huber objective into
    a likelihood-ratio statistic (Schrader & Hettmansperger 1980, "Robust analysis of variance
    based upon a likelihood ratio criterion"; Huber & Ronchetti 2009, ch. 7).

    ``psi = clip(r, -delta, delta)``. ``E[psi^2]`` is the mean of ``psi(r)^2`` on ``n - p`` degrees
    of freedom; ``E[psi'] = P(|e| <= delta)`` is taken for Gaussian noise of the residuals' robust
    scale (``1.4826`` times their median absolute deviation, on ``n - p`` degrees of freedom): the
    count of residuals inside ``delta`` would be biased upwards, a Huber fit with ``delta`` below
    the noise passing close to ``p`` of its points. For ``delta`` far above the noise this is the
    residual variance (the squared-error case); far below, ``delta`` times ``sqrt(pi / 2)`` times
    the scale (least absolute deviations).
    """
    r = np.asarray(resid, dtype=np.float64)
    n = r.size
    dof = max(n - n_params, 1)
    psi2 = float(np.sum(np.clip(r, -delta, delta) ** 2)) / dof
    scale = 1.4826 * float(np.median(np.abs(r - np.median(r)))) * math.sqrt(n / dof)
    inside = 2.0 * stats.norm.cdf(delta / scale) - 1.0 if scale > 0 else 1.0
    return psi2 / max(inside, 1e-300)


#: Shifts of the log prediction tried by :func:`profile_prediction`, on each side.
PROFILE_SHIFTS = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64)


def profile_prediction(law: Law, X: np.ndarray, logy: np.ndarray, theta: np.ndarray, x_new: np.ndarray, *,
                       critical: float, inflation: float = 1.0, starts: np.ndarray | None = None,
                       delta: float = ENGINE_DELTA, weight: float = 1e4,
                       shifts: tuple = PROFILE_SHIFTS) -> tuple[float, float]:
    """Profile-likelihood interval of one prediction ``log y(x_new)`` of a Huber fit, as shifts
    below and above the fitted one (Venzon & Moolgavkar 1988; Bates & Watts 1988, sec. 6.1), with
    the robust likelihood-ratio ("drop-in-dispersion") test of Schrader & Hettmansperger 1980
    (Huber & Ronchetti 2009, ch. 7).

    The objective and the statistic are the same: the Huber loss the point fit ``theta``
    minimises (:func:`fit_law`, same ``delta``). For each trial shift ``d`` in ``shifts``
    (increasing) the law is refitted with a pseudo-point at ``x_new`` on ``log y + d`` and weight
    ``weight`` (its loss is linear far from the shift, so a large enough weight holds the
    prediction there; the prediction the refit reached is what is recorded), from ``theta`` and
    ``starts`` for the first shift and from each one's solution for the previous shift after that
    (all are kept: a basin that fits worse at a small shift can be the best at a larger one). The
    refit is then the Huber fit of the real points with the prediction held, so the growth ``D``
    of their Huber loss over that of ``theta`` is its profile. A shift is inside while

        2 D / k <= critical * inflation,  k = E[psi^2] / E[psi']  (:func:`huber_dispersion`),

    which for squared errors (``delta`` far above the noise) is the classical ``SSE excess <=
    t^2 s^2`` and reproduces the t interval of a straight line. (The squared errors of Huber
    refits are the profile of neither loss: measured so, a straight line's interval came out 10%
    short where the refits left the squared-error part of the loss, and one outlier made it 3 to
    5 times wider.) The first shift outside and the last inside bracket the edge, which refits
    at the edge interpolated on the square root of ``D`` then narrow to 1% of the shift (``D`` is
    quadratic in the shift near the optimum, linear beyond ``delta``). The profile explores other
    basins of a weakly identified law (e.g. a floor traded against the exponent) that a
    bootstrap started at ``theta`` stays away from.

    Args:
        law: the law.
        X: its inputs (logs).
        logy: the log outputs.
        theta: the Huber fit.
        x_new: (1, k) the inputs to predict at.
        critical: the squared critical value of the test of one constraint, e.g. ``t^2`` on
            ``n - p`` degrees of freedom (``F_{1, n-p}``) or ``chi^2_1``.
        inflation: multiplies the dispersion, e.g. the block length of autocorrelated residuals
            (each point worth about one block's share of an independent one).
        starts: other parameter vectors to refit from.
        delta: the Huber threshold of the fit ``theta``.
        weight: the pseudo-point's weight.
        shifts: the shifts tried on each side, increasing.

    Returns:
        ``(below, above)``: distances in log space (``>= 0``); the largest shift tried when every
        one fits (the data do not bound the prediction on that side).

    Raises:
        ValueError: ``critical``, ``inflation`` or ``delta`` not a positive finite number.
    """
    critical = check_positive_float("critical", critical)
    inflation = check_positive_float("inflation", inflation)
    delta = check_positive_float("delta", delta)
    n = logy.size
    lo, hi = _bounds(law)
    xa = np.vstack([X, np.atleast_2d(x_new)])
    th0 = np.atleast_2d(theta)
    cand = th0 if starts is None else np.vstack([th0, np.atleast_2d(starts)])
    cand = np.clip(cand, lo, hi)
    h0 = huber_loss(law, X, logy, th0, delta)
    limit = 0.5 * critical * inflation * huber_dispersion(logy - law.predict_log(th0, X)[0], delta, th0.shape[1])
    lp = float(law.predict_log(th0, xa[-1:])[0, 0])
    W = np.ones((len(cand), n + 1))
    W[:, -1] = weight

    def refit(sign, d, at):
        """The fits from ``at`` with the prediction held ``d`` away: (shift reached, sqrt of the
        real points' Huber excess, the fits)."""
        th, losses = _solve_irls(law, xa, np.append(logy, lp + sign * d), W, at.copy(), delta, lo, hi)
        best = th[int(np.argmin(np.where(np.isfinite(losses), losses, np.inf)))]
        with np.errstate(invalid="ignore", over="ignore"):
            got = abs(float(law.predict_log(best[None, :], xa[-1:])[0, 0]) - lp)
            excess = math.sqrt(max(huber_loss(law, X, logy, best, delta) - h0, 0.0))
        return got, excess, th

    return _profile_side(-1.0, refit, cand, shifts, limit), _profile_side(1.0, refit, cand, shifts, limit)


#: Refits that narrow the bracket of a profile interval's edge, at most, and the relative width it stops at.
PROFILE_REFINE, PROFILE_TOL = 8, 0.01


def _profile_side(sign, refit, cand, shifts, limit) -> float:
    """One side of :func:`profile_prediction`: the first of ``shifts`` whose refit exceeds
    ``limit`` brackets the edge with the last one inside; the bracket is then narrowed by
    refits at the edge interpolated on the square root of the excess (Illinois false position:
    the Huber excess is quadratic in the shift near the optimum, linear beyond ``delta``)."""
    root = math.sqrt(limit)
    inside, at = (0.0, 0.0), cand  # (shift reached, sqrt of the excess) of the last shift inside, its fits
    outside = None
    for d in shifts:
        got, excess, th = refit(sign, d, at)
        if not (math.isfinite(got) and math.isfinite(excess)):
            return inside[0]
        if excess > root:
            outside = (got, excess)
            break
        inside, at = (max(got, inside[0]), excess), th  # continuation: each start's solution starts the next
    if outside is None:
        return inside[0]  # every shift fits: the data do not bound this side
    (s0, e0), (s1, e1) = inside, outside
    g0, g1 = e0 - root, e1 - root  # the ends' values in the false position (Illinois: when the same end
    moved = None  # moves twice, the other end's value is halved, so that the other end moves too)
    for _ in range(PROFILE_REFINE):
        if s1 <= s0 or g1 <= g0 or s1 - s0 <= PROFILE_TOL * s1:
            break
        got, excess, th = refit(sign, s0 - g0 / (g1 - g0) * (s1 - s0), at)
        if not (math.isfinite(got) and math.isfinite(excess)) or not s0 < got < s1:
            break
        if excess > root:
            s1, e1, g1 = got, excess, excess - root
            g0 = 0.5 * g0 if moved == "outside" else g0
            moved = "outside"
        else:
            s0, e0, g0, at = got, excess, excess - root, th
            g1 = 0.5 * g1 if moved == "inside" else g1
            moved = "inside"
    frac = (root - e0) / (e1 - e0) if e1 > e0 else 0.0
    return s0 + min(max(frac, 0.0), 1.0) * max(s1 - s0, 0.0)
