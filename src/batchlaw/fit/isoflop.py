"""Approach 2 (isoFLOP profiles) of Hoffmann et al. 2022, fitted locally, beside Approach 3.

For each compute budget ``C`` a parabola of the loss in ``log N`` is fitted to the 3 to 5 runs
around the profile's lowest loss (``window`` runs on each side), not to the whole profile:
real profiles are wide and lopsided (more sizes on one side, unevenly spaced model families),
and one parabola through all of them puts its vertex off the minimum (Czech et al. 2026 on
Approach 2's bias). Its vertex, kept within those runs, is ``N_opt(C)``; ``D_opt = C / (6 N_opt)``.
A budget whose lowest loss is its smallest or largest model, or whose runs do not curve upwards,
is skipped with a warning that names it; the fit goes on with the others.

The power laws ``N_opt = k C^a`` and ``D_opt = k' C^(1-a)`` are fitted to the optima; their
intervals are the union of three: the bootstrap of the budgets (shared engine), the classical
least-squares t interval (a few budgets make a bootstrap narrow), and a bootstrap of the runs
within each budget (each resample re-finds every optimum).

The same runs are fitted by Approach 3 with variable projection (:func:`fit_chinchilla_vp`);
``comparison`` sets the two side by side.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from .._validation import check_positive_int, check_probability
from ..errors import InsufficientDataError
from .chinchilla import compute_optimal
from .engine import validate_xy
from .laws import fit_power_law, t_intervals
from .varpro import fit_chinchilla_vp

__all__ = ["fit_isoflop", "profile_optimum"]


def profile_optimum(log_n, loss, window: int = 2):
    """The local minimum of one isoFLOP profile.

    Args:
        log_n: log model sizes of the profile's runs.
        loss: their losses.
        window: runs on each side of the lowest one that the parabola uses.

    Returns:
        ``(log N_opt, loss at N_opt, runs used)``, or a string saying why there is none.
    """
    order = np.argsort(log_n)
    x, y = np.asarray(log_n, float)[order], np.asarray(loss, float)[order]
    if np.unique(x).size < 3:
        return f"{np.unique(x).size} model size(s); 3 are needed"
    i = int(np.argmin(y))
    if x[i] == x[0] or x[i] == x[-1]:
        side = "smallest" if x[i] == x[0] else "largest"
        more = "smaller" if side == "smallest" else "larger"
        return (f"the lowest loss is at the {side} model (N = {math.exp(x[i]):.3g}): extend the profile towards "
                f"{more} models")
    lo, hi = max(i - window, 0), min(i + window, x.size - 1)
    xs, ys = x[lo:hi + 1], y[lo:hi + 1]
    if np.unique(xs).size < 3:
        return "fewer than 3 model sizes around the minimum"
    a2, a1, a0 = np.polyfit(xs - x[i], ys, 2)
    if a2 <= 0:
        return "the runs around the minimum do not curve upwards in log N (noise larger than the curvature)"
    v = float(np.clip(-a1 / (2 * a2), xs[0] - x[i], xs[-1] - x[i]))
    return x[i] + v, float(a0 + a1 * v + a2 * v * v), int(xs.size)


def fit_isoflop(params, tokens, budget, loss, *, window: int = 2, n_boot: int = 1000, confidence: float = 0.95,
                seed: int | None = 0, approach3: bool = True) -> dict:
    """Approach 2 with local parabolas per budget; power laws ``N_opt(C)``, ``D_opt(C)``; Approach 3 beside it.

    Args:
        params: model size ``N`` of each run.
        tokens: training tokens ``D`` of each run.
        budget: compute budget of each run's isoFLOP profile (FLOPs).
        loss: final loss of each run.
        window: runs on each side of each profile's lowest loss used by its parabola.
        n_boot: bootstrap resamples (0: none).
        confidence: interval level.
        seed: bootstrap seed.
        approach3: also fit Approach 3 by variable projection and compare.

    Returns:
        ``{"optima": [{"compute", "params", "tokens", "loss", "n_runs", "n_used", "params_ci"}],
        "skipped": [{"compute", "reason"}], "params_law": {...}, "tokens_law": {...},
        "approach3": {...}, "comparison": {...}}``; each law has ``coef``, ``exponent`` and ``ci``.

    Warns:
        UserWarning: once per skipped budget, naming it and why.

    Raises:
        ValueError: non-positive or non-finite values, lengths that differ.
        InsufficientDataError: fewer than 3 budgets with a local minimum (the message lists why
            each was skipped).
    """
    confidence = check_probability("confidence", confidence)
    n_boot = check_positive_int("n_boot", n_boot, minimum=0)
    window = check_positive_int("window", window)
    X, logl = validate_xy({"params": params, "tokens": tokens, "budget": budget}, loss, y_name="loss", min_points=6)
    L = np.exp(logl)
    Bv = np.asarray(budget, dtype=np.float64).ravel()
    optima, skipped = [], []
    for c in np.unique(Bv):
        c = float(c)
        sel = Bv == c
        got = profile_optimum(X[sel, 0], L[sel], window)
        if isinstance(got, str):
            skipped.append({"compute": c, "reason": got})
            warnings.warn(f"isoFLOP budget {c:.3g} FLOPs skipped: {got}.", UserWarning, stacklevel=2)
            continue
        n = math.exp(got[0])
        optima.append({"compute": c, "params": n, "tokens": c / (6 * n), "loss": got[1],
                       "n_runs": int(sel.sum()), "n_used": got[2]})
    if len(optima) < 3:
        why = "; ".join(f"{s['compute']:.3g} FLOPs: {s['reason']}" for s in skipped) or "none"
        raise InsufficientDataError(
            f"Approach 2 needs at least 3 compute budgets with a minimum inside their profile; got {len(optima)} "
            f"(skipped: {why}).")
    cs = np.array([o["compute"] for o in optima])
    a = (1 - confidence) / 2
    boot_opt = _run_bootstrap(X, L, Bv, cs, window, n_boot, seed)
    for k, o in enumerate(optima):
        col = boot_opt[:, k] if boot_opt.size else np.array([])
        col = col[np.isfinite(col)]
        o["params_ci"] = ([float(np.exp(np.quantile(col, a))), float(np.exp(np.quantile(col, 1 - a)))]
                          if col.size >= 20 else [None, None])
    out = {"optima": optima, "skipped": skipped, "window": window}
    for key in ("params", "tokens"):
        y = [o[key] for o in optima]
        fit = fit_power_law(y, inputs={"compute": cs}, y_name=key, n_boot=n_boot,
                            confidence=confidence, seed=seed)
        ci = {k: list(v) for k, v in fit.ci.items()}
        if n_boot:
            for k, (lo, hi) in t_intervals({"compute": cs}, y, confidence).items():
                ci[k] = [float(min(ci.get(k, [lo])[0], lo)), float(max(ci.get(k, [hi])[1], hi))]
            slopes = _boot_slopes(np.log(cs), boot_opt if key == "params" else np.log(cs)[None, :] - math.log(6)
                                  - boot_opt)
            if slopes.size >= 20:
                lo, hi = np.quantile(slopes, [a, 1 - a])
                ci["exp_compute"] = [float(min(ci.get("exp_compute", [lo])[0], lo)),
                                     float(max(ci.get("exp_compute", [hi])[1], hi))]
        out[f"{key}_law"] = {"coef": fit.values["coef"], "exponent": fit.values["exp_compute"], "ci": ci}
    if approach3:
        out.update(_approach3(params, tokens, loss, optima, out, n_boot=n_boot, confidence=confidence, seed=seed))
    return out


def _run_bootstrap(X, L, Bv, cs, window, n_boot, seed) -> np.ndarray:
    """(n_boot, budgets) log N_opt re-found on runs resampled within each budget (NaN: none found)."""
    if not n_boot:
        return np.empty((0, len(cs)))
    rng = np.random.default_rng(seed)
    out = np.full((n_boot, len(cs)), np.nan)
    for k, c in enumerate(cs):
        idx = np.flatnonzero(Bv == c)
        for r in range(n_boot):
            j = rng.choice(idx, idx.size)
            got = profile_optimum(X[j, 0], L[j], window)
            if not isinstance(got, str):
                out[r, k] = got[0]
    return out


def _boot_slopes(log_c, log_y) -> np.ndarray:
    """Least-squares slopes of each bootstrap row of ``log_y`` on ``log_c`` (rows with < 2 finite skipped)."""
    out = []
    for row in np.atleast_2d(log_y):
        ok = np.isfinite(row)
        if ok.sum() >= 2 and np.ptp(log_c[ok]) > 0:
            out.append(np.polyfit(log_c[ok], row[ok], 1)[0])
    return np.array(out)


def _approach3(params, tokens, loss, optima, a2, *, n_boot, confidence, seed) -> dict:
    try:
        vp = fit_chinchilla_vp(params, tokens, loss, n_boot=n_boot, confidence=confidence, seed=seed)
    except InsufficientDataError as err:
        return {"approach3": {"error": str(err)}}
    keys = ("E", "A", "B", "alpha", "beta", "params_exponent", "tokens_exponent")
    budgets = []
    for o in optima:
        n3 = compute_optimal(o["compute"], vp)["params"]
        budgets.append({"compute": o["compute"], "approach2_params": o["params"], "approach3_params": n3,
                        "ratio": o["params"] / n3})
    return {"approach3": {**{k: vp[k] for k in keys}, "ci": vp["ci"], "n_points": vp["n_points"],
                          "rmse_log": vp["rmse_log"], "method": "variable projection"},
            "comparison": {"params_exponent": {"approach2": a2["params_law"]["exponent"],
                                               "approach2_ci": a2["params_law"]["ci"].get("exp_compute"),
                                               "approach3": vp["params_exponent"],
                                               "approach3_ci": vp["ci"].get("params_exponent")},
                           "budgets": budgets}}
