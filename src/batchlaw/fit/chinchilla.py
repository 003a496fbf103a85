"""``L(N, D) = E + A/N^alpha + B/D^beta``: Approach 3 and 2 of Hoffmann et al. 2022, and allocation.

Approach 3 is fitted as the Epoch AI replication did (Besiroglu et al. 2024, arXiv:2404.10102):
minimise ``sum_i Huber_1e-3(LSE(a - alpha log N_i, b - beta log D_i, e) - log L_i)`` with L-BFGS
from the grid ``alpha, beta in {0, 0.5, ..., 2}``, ``e in {-1, -0.5, ..., 1}``,
``a, b in {0, 5, ..., 25}``; ``A = exp(a)``, ``B = exp(b)``, ``E = exp(e)``. Intervals: bootstrap
over runs.

Compute-optimal allocation for ``C = 6 N D`` FLOPs (Hoffmann et al. 2022, Appendix D.2):
``N_opt = G (C/6)^(beta/(alpha+beta))``, ``D_opt = (1/G) (C/6)^(alpha/(alpha+beta))``,
``G = (alpha A / (beta B))^(1/(alpha+beta))``.

Inference-aware allocation (Sardana et al. 2023, arXiv:2401.00448): the model reaching the loss
of the compute-optimal model that minimises ``6 N D_train + 2 N D_inference``.

Approach 2 (isoFLOP profiles) is in :mod:`batchlaw.fit.isoflop`; Approach 3 by variable
projection in :mod:`batchlaw.fit.varpro`.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy import optimize
from scipy.special import softmax

from .._validation import check_positive_float
from ..errors import InsufficientDataError
from .engine import Law, LawFit, fit_law, validate_xy

__all__ = ["chinchilla_law", "fit_chinchilla", "chinchilla_loss", "compute_optimal", "inference_optimal",
           "EPOCH_2024", "HOFFMANN_2022"]

#: Published Approach-3 parameters: Hoffmann et al. 2022 and the Epoch AI refit (Besiroglu et al. 2024).
HOFFMANN_2022 = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
EPOCH_2024 = {"E": 1.82, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}


def _terms(theta, X):  # (m, n, 3)
    m, n = theta.shape[0], X.shape[0]
    return np.stack([theta[:, :1] - theta[:, 3:4] * X[:, 0][None, :],
                     theta[:, 1:2] - theta[:, 4:5] * X[:, 1][None, :],
                     np.broadcast_to(theta[:, 2:3], (m, n))], axis=-1)


def chinchilla_law() -> Law:
    """Raw parameters ``(a, b, e, alpha, beta)``; inputs ``(log N, log D)``."""

    def predict(theta, X):
        return np.logaddexp.reduce(_terms(theta, X), axis=-1)

    def jac(theta, X):
        s = softmax(_terms(theta, X), axis=-1)
        return np.stack([s[..., 0], s[..., 1], s[..., 2], -s[..., 0] * X[:, 0][None, :],
                         -s[..., 1] * X[:, 1][None, :]], axis=-1)

    def report(theta):
        return {"E": np.exp(theta[:, 2]), "A": np.exp(theta[:, 0]), "B": np.exp(theta[:, 1]),
                "alpha": theta[:, 3], "beta": theta[:, 4]}

    return Law("chinchilla", ("a", "b", "e", "alpha", "beta"), predict, jac, report,
               ((None, None), (None, None), (None, None), (0.0, 3.0), (0.0, 3.0)))


EPOCH_GRID = np.array(list(itertools.product(
    np.arange(0, 30, 5.0), np.arange(0, 30, 5.0), np.arange(-1, 1.5, 0.5), np.arange(0, 2.5, 0.5), np.arange(0, 2.5, 0.5))))


def chinchilla_loss(params, tokens, p: dict):
    """``E + A/N^alpha + B/D^beta`` for parameters ``p`` (keys E, A, B, alpha, beta)."""
    return p["E"] + p["A"] / np.asarray(params, float) ** p["alpha"] + p["B"] / np.asarray(tokens, float) ** p["beta"]


def fit_chinchilla(params, tokens, loss, *, n_boot: int = 1000, confidence: float = 0.95, seed: int | None = 0,
                   delta: float = 1e-3) -> LawFit:
    """Approach 3 on runs ``(N, D, L)``, with bootstrap intervals and a leave-largest-compute-out check.

    Raises:
        ValueError: non-positive or non-finite values, lengths that differ.
        InsufficientDataError: fewer than 10 runs, or only one model size or one data size.
    """
    X, logy = validate_xy({"params": params, "tokens": tokens}, loss, y_name="loss", min_points=10)
    for j, name in enumerate(("params", "tokens")):
        if np.unique(X[:, j]).size < 2:
            raise InsufficientDataError(f"All runs have the same '{name}': the law cannot separate N from D.")
    if np.ptp(logy) <= 1e-12 * max(1.0, float(np.abs(logy).max())):
        raise InsufficientDataError(
            f"The 'loss' is the same in every run ({math.exp(logy[0]):.6g}): there is nothing to fit. Check that the "
            "loss column holds each run's final loss.")
    Xc = np.column_stack([X, X[:, 0] + X[:, 1]])  # log(N D) ~ log compute, for the extrapolation check
    law = chinchilla_law()
    wrapped = Law(law.name, law.params, lambda t, Z: law.predict_log(t, Z[:, :2]),
                  lambda t, Z: law.jac_log(t, Z[:, :2]), law.report, law.bounds)
    return fit_law(wrapped, Xc, logy, starts=EPOCH_GRID, delta=delta, n_boot=n_boot, confidence=confidence,
                   seed=seed, keep_starts=24, extrapolation_col=2)


def compute_optimal(compute, p: dict) -> dict:
    """Compute-optimal ``N`` and ``D`` for ``C = 6 N D`` FLOPs (Hoffmann et al. 2022, App. D.2).

    Examples:
        >>> r = compute_optimal(5.88e23, EPOCH_2024)
        >>> 15 < r["tokens_per_param"] < 25
        True
    """
    c = check_positive_float("compute", float(compute))
    a, b = p["alpha"], p["beta"]
    if not (a > 1e-6 and b > 1e-6 and p["A"] > 0 and p["B"] > 0 and all(map(math.isfinite, (a, b, p["A"], p["B"])))):
        raise ValueError(
            f"The law has alpha = {a:.3g}, beta = {b:.3g}, A = {p['A']:.3g}, B = {p['B']:.3g}: the loss does not fall "
            "with both N and D, so no compute-optimal allocation exists. Check the runs (do they span model and data "
            "sizes, is the loss column right?).")
    try:
        g = (a * p["A"] / (b * p["B"])) ** (1.0 / (a + b))
        n = g * (c / 6.0) ** (b / (a + b))
        d = (c / 6.0) ** (a / (a + b)) / g
    except (OverflowError, ZeroDivisionError):
        n = d = math.inf
    if not (math.isfinite(n) and math.isfinite(d) and n > 0 and d > 0):
        raise ValueError(
            f"The compute-optimal allocation at C = {c:.3g} FLOPs overflows for this law (alpha = {a:.3g}, "
            f"beta = {b:.3g}): the fit is degenerate. Check the runs span model and data sizes.")
    return {"compute": c, "params": n, "tokens": d, "tokens_per_param": d / n,
            "loss": float(chinchilla_loss(n, d, p))}


def inference_optimal(compute, inference_tokens, p: dict) -> dict:
    """Sardana et al. 2023: the ``(N, D_train)`` reaching the compute-optimal loss at ``compute``
    that minimises ``6 N D_train + 2 N D_inference``."""
    opt = compute_optimal(compute, p)
    d_inf = check_positive_float("inference_tokens", float(inference_tokens), allow_zero=True)
    target = opt["loss"]

    def d_train(log_n):
        gap = target - p["E"] - p["A"] / math.exp(log_n) ** p["alpha"]
        return (p["B"] / gap) ** (1.0 / p["beta"]) if gap > 0 else math.inf

    def total(log_n):
        d = d_train(log_n)
        return math.log(6 * math.exp(log_n) * d + 2 * math.exp(log_n) * d_inf) if math.isfinite(d) else 1e300

    ln0 = math.log(opt["params"])
    # the feasible N are those whose A/N^alpha leaves room below the target: bracket above that floor
    n_floor = (p["A"] / (target - p["E"])) ** (1.0 / p["alpha"])
    res = optimize.minimize_scalar(total, bounds=(math.log(n_floor) + 1e-9, ln0 + 1e-9), method="bounded",
                                   options={"xatol": 1e-10})
    n = math.exp(res.x)
    d = d_train(res.x)
    return {"params": n, "tokens": d, "tokens_per_param": d / n, "loss": target, "inference_tokens": d_inf,
            "training_compute": 6 * n * d, "total_compute": 6 * n * d + 2 * n * d_inf,
            "chinchilla_total_compute": 6 * opt["params"] * opt["tokens"] + 2 * opt["params"] * d_inf}
