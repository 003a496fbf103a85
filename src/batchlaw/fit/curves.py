"""Learning-curve extrapolation with honest intervals, for constant and decaying learning rates.

The learning-curve API in one place: the laws and the learning-rate :class:`Schedule`
(:mod:`batchlaw.fit.curve_laws`: a power law in steps, Tissue et al. 2024's schedule-aware law,
Luo et al. 2025's multi-power law), the fit with its moving-block bootstrap (:func:`fit_curve`,
:mod:`batchlaw.fit.curve_fit`), and, defined here, the prediction from a fit and its backtest.

Intervals. A logged training loss is smoothed (EMA) and its residuals about any fitted curve
are autocorrelated, so resampling points independently makes the fitted floor look far more
certain than it is. The bootstrap is a moving-block bootstrap over the curve (Kunsch 1989):
blocks of consecutive points of length ``2 tau`` (``tau``: the lag where the residual
autocorrelation falls below ``1/e``; at least ``n^(1/3)``), so each resample refits the floor
with the curve's own correlated wiggles. The predictive interval at step ``t`` combines, in log
space, the spread of the resampled curves there (which carries the floor's uncertainty), one
observation's noise, and the shift of the prediction when the law is fitted to the later half
of the points only (the law's misfit), with Student-t quantiles on ``n / block - p`` degrees of
freedom (:func:`predict_curve`). A prediction through a decay the fitted points saw (almost) none
of is refused.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from .._validation import check_positive_float, check_probability
from ..errors import InsufficientDataError
from .curve_fit import CurveFit, block_weights, fit_curve
from .curve_laws import ANNEAL_DECAY, CURVE_LAWS, Schedule, _design, _law, schedule_law
from .engine import profile_prediction
from .multipower import MultiPowerKernel

__all__ = ["CurveFit", "Schedule", "fit_curve", "predict_curve", "backtest_curve", "schedule_law",
           "block_weights", "ANNEAL_DECAY", "CURVE_LAWS"]


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
