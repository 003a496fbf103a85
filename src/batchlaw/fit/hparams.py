"""Optimal learning rate and batch size from LR x batch grids, and their power laws in N, D, C.

Per (N, D) group of runs the optimum is found two ways: the raw argmin of the loss, and a
smoothed estimate, the vertex of a quadratic surface in ``(log lr, log B)`` fitted to the
group's losses (used when the surface is convex and its vertex lies inside the grid, else the
raw argmin). The optima are then fitted as power laws with the shared engine (log-space Huber,
bootstrap over groups): ``lr_opt = c N^a D^b`` and ``B_opt = c D^b`` (Step Law, Li et al. 2025,
arXiv:2503.04715, fitted this way), and both against compute ``C = 6 N D`` (DeepSeek LLM,
arXiv:2401.02954). Published laws for comparison: :data:`STEP_LAW`, :data:`DEEPSEEK`.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InsufficientDataError
from .engine import validate_xy
from .laws import fit_power_law

__all__ = ["find_optima", "fit_hparam_laws", "STEP_LAW", "DEEPSEEK", "step_law", "deepseek_hparams"]

#: Step Law (Li et al. 2025): lr = 1.79 N^-0.713 D^0.307, B = 0.58 D^0.571 (B and D in tokens,
#: N non-embedding parameters).
STEP_LAW = {"lr_coef": 1.79, "lr_exp_params": -0.713, "lr_exp_tokens": 0.307, "batch_coef": 0.58, "batch_exp_tokens": 0.571}
#: DeepSeek LLM (2024): lr = 0.3118 C^-0.125, B = 0.2920 C^0.3271 (B in tokens; C in their
#: non-embedding FLOP convention).
DEEPSEEK = {"lr_coef": 0.3118, "lr_exp": -0.125, "batch_coef": 0.2920, "batch_exp": 0.3271}


def step_law(params: float, tokens: float) -> dict:
    """Step Law's optimal learning rate and batch size (tokens)."""
    s = STEP_LAW
    return {"lr": s["lr_coef"] * params ** s["lr_exp_params"] * tokens ** s["lr_exp_tokens"],
            "batch_tokens": s["batch_coef"] * tokens ** s["batch_exp_tokens"]}


def deepseek_hparams(compute: float) -> dict:
    """DeepSeek LLM's optimal learning rate and batch size (tokens) at compute ``C``.

    Examples:
        >>> h = deepseek_hparams(1e20)
        >>> round(h["lr"], 6), round(h["batch_tokens"] / 1e6, 3)
        (0.000986, 1.017)
    """
    d = DEEPSEEK
    return {"lr": d["lr_coef"] * compute ** d["lr_exp"], "batch_tokens": d["batch_coef"] * compute ** d["batch_exp"]}


def _smoothed(lr, batch, loss):
    x, y = np.log(lr), np.log(batch)
    if np.unique(x).size < 3 or np.unique(y).size < 3:
        return None
    A = np.column_stack([np.ones_like(x), x, y, x * x, y * y, x * y])
    c = np.linalg.lstsq(A, loss, rcond=None)[0]
    H = np.array([[2 * c[3], c[5]], [c[5], 2 * c[4]]])
    if np.any(np.linalg.eigvalsh(H) <= 0):
        return None
    vx, vy = np.linalg.solve(H, -c[1:3])
    if not (x.min() <= vx <= x.max() and y.min() <= vy <= y.max()):
        return None
    return math.exp(vx), math.exp(vy), float(c @ [1, vx, vy, vx * vx, vy * vy, vx * vy])


def find_optima(params, tokens, lr, batch, loss) -> list[dict]:
    """Optimal (lr, batch) per (params, tokens) group: raw argmin and smoothed vertex.

    Returns one dict per group with ``params``, ``tokens``, ``lr``, ``batch``, ``loss`` (the
    smoothed optimum where available, else raw), ``raw`` (``{lr, batch, loss}``), ``method``
    and ``n_runs``.
    """
    X, logl = validate_xy({"params": params, "tokens": tokens, "lr": lr, "batch": batch}, loss, y_name="loss",
                          min_points=3)
    N, D, LR, B = np.exp(X).T
    L = np.exp(logl)
    out = []
    for n, d in sorted({(a, b) for a, b in zip(N, D)}):
        sel = (N == n) & (D == d)
        i = np.argmin(L[sel])
        raw = {"lr": float(LR[sel][i]), "batch": float(B[sel][i]), "loss": float(L[sel][i])}
        sm = _smoothed(LR[sel], B[sel], L[sel])
        row = {"params": float(n), "tokens": float(d), "n_runs": int(sel.sum()), "raw": raw}
        if sm is not None:
            row.update(lr=sm[0], batch=sm[1], loss=sm[2], method="smoothed")
        else:
            row.update(lr=raw["lr"], batch=raw["batch"], loss=raw["loss"], method="raw")
        out.append(row)
    return out


def fit_hparam_laws(optima: list[dict], *, n_boot: int = 1000, confidence: float = 0.95, seed: int | None = 0) -> dict:
    """Power laws of the optima: ``lr = c N^a D^b``, ``B = c D^b``, and both vs ``C = 6 N D``.

    Raises:
        InsufficientDataError: fewer than 4 (N, D) groups, or only one N or one D.
    """
    if len(optima) < 4:
        raise InsufficientDataError(f"Hyperparameter laws need at least 4 (N, D) groups; got {len(optima)}.")
    n = [o["params"] for o in optima]
    d = [o["tokens"] for o in optima]
    if len(set(n)) < 2 or len(set(d)) < 2:
        raise InsufficientDataError("The groups must span at least 2 model sizes and 2 data sizes.")
    c = [6 * a * b for a, b in zip(n, d)]
    kw = dict(n_boot=n_boot, confidence=confidence, seed=seed)
    lr = fit_power_law([o["lr"] for o in optima], inputs={"params": n, "tokens": d}, y_name="lr", **kw)
    b = fit_power_law([o["batch"] for o in optima], inputs={"tokens": d}, y_name="batch", **kw)
    lr_c = fit_power_law([o["lr"] for o in optima], inputs={"compute": c}, y_name="lr", **kw)
    b_c = fit_power_law([o["batch"] for o in optima], inputs={"compute": c}, y_name="batch", **kw)

    def pack(fit, names):
        return {"coef": fit.values["coef"], **{f"exp_{k}": fit.values[f"exp_{k}"] for k in names},
                "ci": {k: list(v) for k, v in fit.ci.items()},
                "goodness": {"rmse_log": fit.rmse_log, "r2_log": fit.r2_log}}

    return {"lr_law": pack(lr, ["params", "tokens"]), "batch_law": pack(b, ["tokens"]),
            "lr_vs_compute": pack(lr_c, ["compute"]), "batch_vs_compute": pack(b_c, ["compute"])}
