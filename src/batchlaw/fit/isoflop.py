"""Approach 2 (isoFLOP profiles) of Hoffmann et al. 2022, fitted per budget, beside Approach 3.

Two ways to find each compute budget's optimum ``N_opt(C)`` (``method``):

- ``"parabola"`` (default): a parabola of the loss in ``log N`` fitted to the 3 to 5 runs around the
  profile's lowest loss (``window`` runs on each side), not to the whole profile: real profiles are
  wide and lopsided (more sizes on one side, unevenly spaced model families), and one parabola
  through all of them puts its vertex off the minimum (Czech et al. 2026 on Approach 2's bias).
  Its vertex, kept within those runs, is ``N_opt(C)``. The power laws are fitted to the optima
  by (Huber) least squares; their intervals are the union of three: the bootstrap of the budgets
  (shared engine), the classical least-squares t interval (a few budgets make a bootstrap narrow),
  and a bootstrap of the runs within each budget (each resample re-finds every optimum).
- ``"akima"``: the estimator of Porian et al. 2024 ("Resolving Discrepancies in Compute-Optimal
  Scaling of Language Models", arXiv:2406.19146, Sec. 2 and App. on the isoFLOP fits; reimplemented
  from the description and the released analysis code, github.com/formll/resolving-scaling-law-
  discrepancies). Per budget: an Akima spline of ``log loss`` in ``log N`` through every size of
  the profile (the lowest loss where a size was run more than once), minimised on a grid of 25
  points per gap between sizes; the runs' losses are perturbed ``n_boot`` times by Gaussian seed
  noise of standard deviation ``loss_noise`` and the minimum re-found. ``N_opt(C)`` is the median
  of the perturbed minima that fall inside the profile; its standard error in ``log N`` is their
  standard deviation, floored at 0.33 times the mean gap between the sizes in ``log N`` and
  inflated by ``n_boot / (minima inside)``. The power law is weighted least squares of
  ``log N_opt`` on ``log C`` with weights ``1 / se^2``; the published interval is the percentile
  interval of the same fit to the ``k``-th perturbed minimum of every budget (``noise_ci``). The
  reported interval is its union with the weighted least-squares t interval (seed noise alone
  does not see how far the budgets scatter about the line).

Either way ``D_opt = C / (6 N_opt)``, and a budget whose minimum is at its smallest or largest model
(or, for ``"parabola"``, whose runs do not curve upwards; for ``"akima"``, whose perturbed minima
fall at an edge in half the resamples) is skipped with a warning that names it; the fit goes on
with the others.

The same runs are fitted by Approach 3 with variable projection (:func:`fit_chinchilla_vp`);
``comparison`` sets the two side by side.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats
from scipy.interpolate import Akima1DInterpolator

from .._validation import check_choice, check_positive_float, check_positive_int, check_probability
from ..errors import InsufficientDataError
from .chinchilla import compute_optimal
from .engine import validate_xy
from .laws import fit_power_law, t_intervals
from .varpro import fit_chinchilla_vp

__all__ = ["akima_optimum", "fit_isoflop", "profile_optimum"]

#: Ways to find each budget's optimum (``fit_isoflop(method=...)``).
METHODS = ("parabola", "akima")
#: Akima grid points per gap between consecutive sizes, and the floor on the standard error of
#: ``log N_opt`` in mean gaps (Porian et al. 2024's settings).
AKIMA_POINTS_PER_GAP, AKIMA_SE_FLOOR = 25, 0.33


def profile_optimum(log_n, loss, window: int = 2):
    """The local minimum of one isoFLOP profile (a parabola in ``log N`` through the runs around it).

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
        return _edge_reason("the lowest loss", x[i], x[i] == x[0])
    lo, hi = max(i - window, 0), min(i + window, x.size - 1)
    xs, ys = x[lo:hi + 1], y[lo:hi + 1]
    if np.unique(xs).size < 3:
        return "fewer than 3 model sizes around the minimum"
    a2, a1, a0 = np.polyfit(xs - x[i], ys, 2)
    if a2 <= 0:
        return "the runs around the minimum do not curve upwards in log N (noise larger than the curvature)"
    v = float(np.clip(-a1 / (2 * a2), xs[0] - x[i], xs[-1] - x[i]))
    return x[i] + v, float(a0 + a1 * v + a2 * v * v), int(xs.size)


def akima_optimum(log_n, loss, *, loss_noise: float, n_boot: int = 1000, rng=None):
    """The minimum of one isoFLOP profile by Porian et al. 2024's estimator (arXiv:2406.19146).

    An Akima spline of ``log loss`` in ``log N`` through every size of the profile is minimised on
    a grid of 25 points per gap between sizes; the losses are perturbed ``n_boot`` times by
    Gaussian noise of standard deviation ``loss_noise`` (seed-to-seed noise of the final loss) and
    the minimum re-found each time.

    Args:
        log_n: log model sizes of the profile's runs (a size run more than once keeps its lowest
            loss, as in the paper: the best of an LR sweep at that size).
        loss: their losses.
        loss_noise: standard deviation of the final loss between seeds, in loss units.
        n_boot: noise resamples (0: the minimum of the unperturbed spline, no interval).
        rng: ``numpy.random.Generator`` for the noise.

    Returns:
        ``{"log_n", "loss", "se", "draws", "n_sizes"}``: ``log_n`` is the median of the perturbed
        minima inside the profile (the unperturbed one when ``n_boot`` is 0), ``loss`` the
        unperturbed spline's loss there, ``se`` the standard error of ``log_n`` (their standard
        deviation floored at 0.33 mean gaps in ``log N``, times ``n_boot / minima inside``),
        ``draws`` those minima; or a string saying why there is none.
    """
    x, inv = np.unique(np.asarray(log_n, float), return_inverse=True)
    y = np.full(x.size, np.inf)
    np.minimum.at(y, inv, np.asarray(loss, float))
    if x.size < 3:
        return f"{x.size} model size(s); 3 are needed"
    grid = np.linspace(x[0], x[-1], (x.size - 1) * AKIMA_POINTS_PER_GAP)

    spline = Akima1DInterpolator(x, np.log(y))
    i0 = int(np.argmin(spline(grid)))
    if i0 in (0, grid.size - 1):
        return _edge_reason("the interpolated loss", grid[i0], i0 == 0)
    floor = AKIMA_SE_FLOOR * (x[-1] - x[0]) / (x.size - 1)
    if not n_boot:
        return {"log_n": float(grid[i0]), "loss": float(np.exp(spline(grid[i0]))), "se": floor, "draws": np.empty(0),
                "n_sizes": x.size}
    rng = np.random.default_rng(rng)
    noisy = y[:, None] + loss_noise * rng.standard_normal((x.size, n_boot))  # (sizes, n_boot)
    noisy = np.maximum(noisy, 1e-3 * y.min())  # the log needs positive losses (loss_noise < min loss / 5)
    idx = np.argmin(Akima1DInterpolator(x, np.log(noisy), axis=0)(grid), axis=0)  # (n_boot,) grid indices
    draws = grid[idx[(idx > 0) & (idx < grid.size - 1)]]
    if 2 * draws.size < n_boot:
        return (f"the minimum falls at an edge of the profile in {n_boot - draws.size} of {n_boot} seed-noise "
                f"resamples (loss_noise {loss_noise:.3g}): extend the profile on both sides")
    point = float(np.median(draws))
    se = max(float(np.std(draws)), floor) * n_boot / draws.size
    return {"log_n": point, "loss": float(np.exp(spline(point))), "se": se, "draws": draws, "n_sizes": x.size}


def _edge_reason(what: str, log_n: float, smallest: bool) -> str:
    side, more = ("smallest", "smaller") if smallest else ("largest", "larger")
    return f"{what} is at the {side} model (N = {math.exp(log_n):.3g}): extend the profile towards {more} models"


def fit_isoflop(params, tokens, budget, loss, *, method: str = "parabola", window: int | None = None,
                loss_noise: float | None = None, n_boot: int = 1000, confidence: float = 0.95,
                seed: int | None = 0, approach3: bool = True) -> dict:
    """Approach 2 per budget; power laws ``N_opt(C)``, ``D_opt(C)``; Approach 3 beside it.

    Args:
        params: model size ``N`` of each run.
        tokens: training tokens ``D`` of each run.
        budget: compute budget of each run's isoFLOP profile (FLOPs).
        loss: final loss of each run.
        method: ``"parabola"`` (local parabolas) or ``"akima"`` (Porian et al. 2024: Akima spline
            per profile, seed-noise bootstrap, weighted power-law fit); see the module docstring.
        window: ``"parabola"`` only: runs on each side of each profile's lowest loss used by its
            parabola (default 2).
        loss_noise: ``"akima"`` (required there): standard deviation of the final loss between
            seeds, in loss units (Porian et al. measured 0.002 on RefinedWeb).
        n_boot: bootstrap resamples (``"akima"``: seed-noise resamples per budget; 0: none).
        confidence: interval level.
        seed: bootstrap seed.
        approach3: also fit Approach 3 by variable projection and compare.

    Returns:
        ``{"method", "optima": [{"compute", "params", "tokens", "loss", "n_runs", "n_used",
        "params_ci"}], "skipped": [{"compute", "reason"}], "params_law": {...}, "tokens_law": {...},
        "window", "loss_noise", "approach3": {...}, "comparison": {...}}``; ``window`` is None with
        ``"akima"``, ``loss_noise`` None with ``"parabola"``; with ``"akima"`` the optima also carry
        ``log_params_se`` and the laws ``noise_ci`` (the published interval). Each law has
        ``coef``, ``exponent`` and ``ci``.

    Warns:
        UserWarning: once per skipped budget, naming it and why; once when the ``N_opt(C)``
            exponent is outside (0, 1) (model or data not growing with compute: the optima are
            not resolved).

    Raises:
        ValueError: an unknown method, ``"akima"`` without a positive ``loss_noise`` or with a
            ``window``, ``"parabola"`` with a ``loss_noise``, non-positive or non-finite values,
            lengths that differ.
        InsufficientDataError: fewer than 3 budgets with a local minimum (the message lists why
            each was skipped).
    """
    method = check_choice("method", method, METHODS)
    confidence = check_probability("confidence", confidence)
    n_boot = check_positive_int("n_boot", n_boot, minimum=0)
    if method == "parabola":
        if loss_noise is not None:
            raise ValueError(f"The 'loss_noise' parameter applies to method 'akima' only. Got {loss_noise!r} with "
                             "method 'parabola'.")
        window = check_positive_int("window", 2 if window is None else window)
    else:
        if window is not None:
            raise ValueError(f"The 'window' parameter applies to method 'parabola' only. Got {window!r} with "
                             "method 'akima'.")
        if loss_noise is None:
            raise ValueError("The 'loss_noise' parameter is required with method 'akima': the standard deviation of "
                             "the final loss between seeds, in loss units (Porian et al. 2024 measured 0.002 on "
                             "RefinedWeb). Got None instead.")
        loss_noise = check_positive_float("loss_noise", loss_noise)
    X, logl = validate_xy({"params": params, "tokens": tokens, "budget": budget}, loss, y_name="loss", min_points=6)
    L = np.exp(logl)
    if method == "akima" and loss_noise >= L.min() / 5:
        raise ValueError(f"The 'loss_noise' parameter must be below a fifth of the lowest loss ({L.min() / 5:.3g}): "
                         f"it is the seed-to-seed standard deviation of the loss. Got {loss_noise!r} instead.")
    Bv = np.asarray(budget, dtype=np.float64).ravel()
    if method == "parabola":
        out = _fit_parabolas(X, L, Bv, window, n_boot, confidence, seed)
    else:
        out = _fit_akima(X, L, Bv, loss_noise, n_boot, confidence, seed)
    out = {"method": method, **out, "window": window, "loss_noise": loss_noise}
    _warn_unphysical(out["params_law"])
    if approach3:
        out.update(_approach3(params, tokens, loss, out["optima"], out, n_boot=n_boot, confidence=confidence,
                              seed=seed))
    return out


def _warn_unphysical(law: dict) -> None:
    """Warn when ``N_opt ~ C^a`` has ``a`` outside (0, 1): then the compute-optimal model (a <= 0) or its
    tokens ``D_opt = C / (6 N_opt)`` (a >= 1) would shrink as compute grows, which no published isoFLOP
    study found (Hoffmann et al. 2022: a = 0.49 to 0.50); the profiles' minima are noise or edge effects."""
    a = law["exponent"]
    if 0 < a < 1:
        return
    ci = law["ci"].get("exp_compute")
    what = "the model size" if a <= 0 else "the tokens D_opt = C / (6 N_opt)"
    warnings.warn(f"N_opt ~ C^{a:.3g}" + (f" (95% CI {ci[0]:.3g} to {ci[1]:.3g})" if ci else "")
                  + f": {what} would shrink as compute grows, so the profiles' minima are not resolved; do not use "
                  "this law. Add runs around each profile's minimum (or more seeds) and more compute budgets.",
                  UserWarning, stacklevel=3)


def _skip_and_check(skipped: list, n_found: int) -> None:
    for s in skipped:
        warnings.warn(f"isoFLOP budget {s['compute']:.3g} FLOPs skipped: {s['reason']}.", UserWarning, stacklevel=4)
    if n_found < 3:
        why = "; ".join(f"{s['compute']:.3g} FLOPs: {s['reason']}" for s in skipped) or "none"
        raise InsufficientDataError(
            f"Approach 2 needs at least 3 compute budgets with a minimum inside their profile; got {n_found} "
            f"(skipped: {why}).")


def _fit_parabolas(X, L, Bv, window, n_boot, confidence, seed) -> dict:
    """Local parabola per budget; Huber power laws with the union of three intervals."""
    optima, skipped = [], []
    for c in np.unique(Bv):
        c = float(c)
        sel = Bv == c
        got = profile_optimum(X[sel, 0], L[sel], window)
        if isinstance(got, str):
            skipped.append({"compute": c, "reason": got})
            continue
        n = math.exp(got[0])
        optima.append({"compute": c, "params": n, "tokens": c / (6 * n), "loss": got[1],
                       "n_runs": int(sel.sum()), "n_used": got[2]})
    _skip_and_check(skipped, len(optima))
    cs = np.array([o["compute"] for o in optima])
    a = (1 - confidence) / 2
    boot_opt = _run_bootstrap(X, L, Bv, cs, window, n_boot, seed)
    for k, o in enumerate(optima):
        col = boot_opt[:, k] if boot_opt.size else np.array([])
        col = col[np.isfinite(col)]
        o["params_ci"] = ([float(np.exp(np.quantile(col, a))), float(np.exp(np.quantile(col, 1 - a)))]
                          if col.size >= 20 else [None, None])
    out = {"optima": optima, "skipped": skipped}
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
    return out


def _fit_akima(X, L, Bv, loss_noise, n_boot, confidence, seed) -> dict:
    """Porian et al. 2024: Akima minimum per budget, weighted power laws, seed-noise bootstrap."""
    rng = np.random.default_rng(seed)
    optima, skipped, draws, se = [], [], [], []
    a = (1 - confidence) / 2
    for c in np.unique(Bv):
        c = float(c)
        sel = Bv == c
        got = akima_optimum(X[sel, 0], L[sel], loss_noise=loss_noise, n_boot=n_boot, rng=rng)
        if isinstance(got, str):
            skipped.append({"compute": c, "reason": got})
            continue
        n = math.exp(got["log_n"])
        ci = ([float(np.exp(q)) for q in np.quantile(got["draws"], [a, 1 - a])] if got["draws"].size >= 20
              else [None, None])
        optima.append({"compute": c, "params": n, "tokens": c / (6 * n), "loss": got["loss"],
                       "n_runs": int(sel.sum()), "n_used": got["n_sizes"], "params_ci": ci,
                       "log_params_se": got["se"]})
        draws.append(got["draws"])
        se.append(got["se"])
    _skip_and_check(skipped, len(optima))
    log_c = np.log([o["compute"] for o in optima])
    w = 1 / np.square(se)
    k = min(d.size for d in draws)
    log_n = np.log([o["params"] for o in optima])
    out = {"optima": optima, "skipped": skipped}
    for key, sign, shift in (("params", 1.0, 0.0), ("tokens", -1.0, 1.0)):
        # log D_opt = log C - log 6 - log N_opt: the tokens law is the params law reflected.
        y = sign * log_n + shift * (log_c - math.log(6))
        slope, icpt, cov, dof = _wls(log_c, y, w)
        ci = {}
        if n_boot and dof >= 1:
            t = stats.t.ppf(0.5 + confidence / 2, dof)
            ci = {"coef": [math.exp(icpt - t * math.sqrt(cov[0, 0])), math.exp(icpt + t * math.sqrt(cov[0, 0]))],
                  "exp_compute": [slope - t * math.sqrt(cov[1, 1]), slope + t * math.sqrt(cov[1, 1])]}
        law = {"coef": math.exp(icpt), "exponent": slope, "ci": ci, "noise_ci": {}}
        if k >= 20:
            ys = sign * np.stack([d[:k] for d in draws], axis=1) + shift * (log_c - math.log(6))  # (k, budgets)
            fits = np.array([_wls(log_c, row, w)[:2] for row in ys])  # (k, 2): slope, intercept
            law["noise_ci"] = {"coef": np.exp(np.quantile(fits[:, 1], [a, 1 - a])).tolist(),
                               "exp_compute": np.quantile(fits[:, 0], [a, 1 - a]).tolist()}
            for name, (lo, hi) in law["noise_ci"].items():
                lo0, hi0 = ci.get(name, (lo, hi))
                ci[name] = [float(min(lo, lo0)), float(max(hi, hi0))]
        out[f"{key}_law"] = law
    return out


def _wls(x, y, w):
    """Weighted least squares ``y = b0 + b1 x``: ``(b1, b0, covariance of (b0, b1), dof)``; the
    covariance scales ``(X^T W X)^-1`` by the weighted residual variance."""
    A = np.column_stack([np.ones_like(x), x])
    M = A.T @ (A * w[:, None])
    b = np.linalg.solve(M, A.T @ (w * y))
    dof = x.size - 2
    s2 = float(w @ (y - A @ b) ** 2) / dof if dof > 0 else math.nan
    return float(b[1]), float(b[0]), s2 * np.linalg.inv(M), dof


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
