"""Learning-curve extrapolation: ``L(t) = L_inf + a t^(-b)``, with a predictive interval and a backtest.

For constant-learning-rate or warmup-stable-decay runs (before the decay); under cosine decay
the power law is the wrong shape (Tissue et al. 2024, arXiv:2408.11029). The predictive
interval at step ``t`` adds, in log space, the bootstrap variance of the fitted curve there and
the residual variance of the data (``n - 3`` degrees of freedom), with Student-t quantiles, so
it covers a new observation, not only the mean curve.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from .._validation import check_probability
from ..errors import InsufficientDataError
from .laws import fit_saturating

__all__ = ["fit_curve", "predict_curve", "backtest_curve"]


def fit_curve(steps, loss, *, n_boot: int = 1000, confidence: float = 0.95, seed: int | None = 0):
    """Fit ``L(t) = L_inf + a t^(-b)``; keys ``y_inf``, ``a``, ``alpha`` (= b)."""
    steps = np.asarray(steps, dtype=float)
    if np.any(steps <= 0):
        raise ValueError("The 'steps' values must be positive (step 0 has no place on a power law).")
    return fit_saturating(steps, loss, x_name="step", y_name="loss", n_boot=n_boot, confidence=confidence,
                          seed=seed, extrapolation=False)


def predict_curve(fit, step: float, *, steps=None, loss=None, confidence: float | None = None) -> dict:
    """Predicted loss at ``step`` with a predictive interval (needs the fit's bootstrap).

    ``steps``/``loss``: the data fitted, to add the observation noise to the interval.
    """
    confidence = check_probability("confidence", confidence or fit.confidence)
    v = fit.values
    point = v["y_inf"] + v["a"] * step ** (-v["alpha"])
    if not fit.boot:
        return {"step": step, "loss": point, "interval": [None, None]}
    curves = np.log(fit.boot["y_inf"] + fit.boot["a"] * step ** (-fit.boot["alpha"]))
    var = float(np.var(curves, ddof=1))  # spread of the fitted curve (log)
    dof = max(fit.n_points - 3, 1)
    if steps is not None and loss is not None:
        s = np.asarray(steps, float)
        resid = np.log(np.asarray(loss, float)) - np.log(v["y_inf"] + v["a"] * s ** (-v["alpha"]))
        var += float(np.sum(resid**2)) / dof  # a new observation's own noise
    half = stats.t.ppf(0.5 + confidence / 2, dof) * np.sqrt(var)
    return {"step": step, "loss": float(point),
            "interval": [float(point * np.exp(-half)), float(point * np.exp(half))]}


def backtest_curve(steps, loss, *, fraction: float = 0.5, n_boot: int = 500, confidence: float = 0.95) -> dict:
    """Fit on the first ``fraction`` of the curve (by step), predict the last point, report the error."""
    fraction = check_probability("fraction", fraction)
    steps, loss = np.asarray(steps, float), np.asarray(loss, float)
    order = np.argsort(steps)
    steps, loss = steps[order], loss[order]
    cut = steps[0] + fraction * (steps[-1] - steps[0])
    sel = steps <= cut
    if sel.sum() < 5:
        raise InsufficientDataError(f"The first {fraction:.0%} of the curve holds {int(sel.sum())} points; 5 are needed.")
    fit = fit_curve(steps[sel], loss[sel], n_boot=n_boot, confidence=confidence)
    pred = predict_curve(fit, steps[-1], steps=steps[sel], loss=loss[sel])
    lo, hi = pred["interval"]
    return {"fraction": fraction, "fit_points": int(sel.sum()), "final_step": float(steps[-1]),
            "final_loss": float(loss[-1]), "predicted": pred["loss"], "interval": [lo, hi],
            "rel_error": float(pred["loss"] / loss[-1] - 1), "inside": bool(lo <= loss[-1] <= hi)}
