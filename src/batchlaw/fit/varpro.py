"""Approach 3 by variable projection: ``L = E + A/N^alpha + B/D^beta`` solved linearly for ``E, A, B``.

For fixed ``(alpha, beta)`` the Chinchilla law is linear in ``(E, A, B)``, so the fit reduces
to a search over two exponents with a 3 x 3 least-squares solve at each (variable projection,
Golub and Pereyra 1973; recommended for this law by Czech et al. 2026, who show Approach 2's
isoFLOP parabolas are biased on lopsided profiles). The objective is the sum of squared
relative errors ``((E + A x_i + B z_i) - L_i)^2 / L_i^2`` (close to squared log errors at the
few-percent level), with ``E, A, B >= 0``. The search is a coarse grid over ``alpha, beta in
[0.02, 2]`` then a fine grid around each best cell, vectorised over bootstrap resamples of the
runs (multinomial weights), so there are no starting points to choose and no local minima to
fall into.
"""

from __future__ import annotations

import numpy as np

from .._validation import check_positive_int, check_probability
from ..errors import InsufficientDataError
from .engine import validate_xy, widened_interval

__all__ = ["fit_chinchilla_vp"]

_COARSE = np.arange(0.02, 2.0001, 0.04)
#: Which of (E, A, B) are free in each sub-problem of the non-negative solve (the others are 0).
_SUBSETS = [(0, 1, 1), (1, 0, 1), (1, 1, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)]


def _best(lx, ld, L, W, alphas, betas):
    """For each resample ``m`` (weights ``W[m]``) and its own grids ``alphas[m]``, ``betas[m]``: the
    cell with the least weighted squared relative error. Returns ``(alpha, beta, E, A, B, sse)``."""
    m = W.shape[0]
    w = W / L[None, :] ** 2  # (m, n)
    P = np.exp(-alphas[:, :, None] * lx[None, None, :])  # (m, ga, n)
    Q = np.exp(-betas[:, :, None] * ld[None, None, :])  # (m, gb, n)
    wP, wQ = w[:, None, :] * P, w[:, None, :] * Q
    s11 = w.sum(1)[:, None, None]
    s1p = wP.sum(2)[:, :, None]
    s1q = wQ.sum(2)[:, None, :]
    spp = (wP * P).sum(2)[:, :, None]
    sqq = (wQ * Q).sum(2)[:, None, :]
    spq = np.einsum("man,mbn->mab", wP, Q)
    r1 = (w * L).sum(1)[:, None, None]
    rp = (wP * L).sum(2)[:, :, None]
    rq = (wQ * L).sum(2)[:, None, :]
    yy = (w * L * L).sum(1)[:, None, None]
    shape = spq.shape
    S = np.empty((*shape, 3, 3))
    S[..., 0, 0] = s11
    S[..., 0, 1] = S[..., 1, 0] = np.broadcast_to(s1p, shape)
    S[..., 0, 2] = S[..., 2, 0] = np.broadcast_to(s1q, shape)
    S[..., 1, 1] = np.broadcast_to(spp, shape)
    S[..., 2, 2] = np.broadcast_to(sqq, shape)
    S[..., 1, 2] = S[..., 2, 1] = spq
    r = np.stack(np.broadcast_arrays(r1, rp, rq), axis=-1)
    scale = np.sqrt(np.einsum("...ii->...i", S)) + 1e-300
    Sn = S / scale[..., :, None] / scale[..., None, :] + 1e-12 * np.eye(3)
    rn = r / scale
    theta = np.linalg.solve(Sn, rn[..., None])[..., 0] / scale
    sse = _sse(np.broadcast_to(yy, shape), r, S, theta)
    bad = ~np.all(theta >= 0, axis=-1)
    if bad.any():
        # Non-negative least squares, exactly, where the unconstrained solution has a negative coefficient: the
        # optimum of a convex quadratic over E, A, B >= 0 is the unconstrained solution on some subset of them with
        # the rest at 0, the best feasible one of the 6 proper subsets. (Taking only feasible full solutions left no
        # cell on some resamples, and the search then returned a negative E or A.)
        Sb, Snb, rb, rnb, scb = S[bad], Sn[bad], r[bad], rn[bad], scale[bad]
        yb = np.broadcast_to(yy, shape)[bad]
        best_t, best_e = np.zeros((Sb.shape[0], 3)), np.full(Sb.shape[0], np.inf)
        for free in _SUBSETS:
            keep = np.asarray(free, dtype=float)
            # the left-out coefficients' rows and columns become the identity with a zero right-hand side: they
            # solve to 0
            Sf = Snb * keep[:, None] * keep[None, :] + np.diag(1.0 - keep)
            th = np.linalg.solve(Sf, (rnb * keep)[..., None])[..., 0] / scb * keep
            e = _sse(yb, rb, Sb, th)
            better = np.all(th >= 0, axis=-1) & (e < best_e)
            best_t[better], best_e[better] = th[better], e[better]
        theta[bad], sse[bad] = best_t, best_e
    flat = sse.reshape(m, -1)
    j = np.argmin(flat, axis=1)
    ia, ib = np.unravel_index(j, shape[1:])
    rows = np.arange(m)
    th = theta[rows, ia, ib]
    return alphas[rows, ia], betas[rows, ib], th[:, 0], th[:, 1], th[:, 2], flat[rows, j]


def _sse(yy, r, S, theta):
    """Weighted sum of squares ``y'y - 2 theta'r + theta'S theta`` of each cell's coefficients ``theta``."""
    return yy - 2 * (theta * r).sum(-1) + np.einsum("...i,...ij,...j->...", theta, S, theta)


def _search(lx, ld, L, W, chunk=64):
    out = []
    for k in range(0, W.shape[0], chunk):
        w = W[k:k + chunk]
        m = w.shape[0]
        a0, b0, *_ = _best(lx, ld, L, w, np.tile(_COARSE, (m, 1)), np.tile(_COARSE, (m, 1)))
        fine = np.linspace(-0.05, 0.05, 26)
        a1, b1, *_ = _best(lx, ld, L, w, np.clip(a0[:, None] + fine, 1e-3, None), np.clip(b0[:, None] + fine, 1e-3, None))
        finer = np.linspace(-0.005, 0.005, 21)
        out.append(_best(lx, ld, L, w, np.clip(a1[:, None] + finer, 1e-3, None),
                         np.clip(b1[:, None] + finer, 1e-3, None)))
    return [np.concatenate(v) for v in zip(*out)]


def fit_chinchilla_vp(params, tokens, loss, *, n_boot: int = 1000, confidence: float = 0.95,
                      seed: int | None = 0) -> dict:
    """Approach 3 (``L = E + A/N^alpha + B/D^beta``) by variable projection, with bootstrap intervals.

    Args:
        params: model size ``N`` of each run.
        tokens: training tokens ``D`` of each run.
        loss: final loss of each run.
        n_boot: bootstrap resamples of the runs (0: none).
        confidence: interval level.
        seed: bootstrap seed.

    Returns:
        ``{"E", "A", "B", "alpha", "beta", "params_exponent", "tokens_exponent", "ci", "n_points",
        "rmse_log", "boot"}``: ``params_exponent = beta / (alpha + beta)`` is the exponent of
        ``N_opt`` in compute (Hoffmann et al. 2022, App. D.2), ``tokens_exponent`` that of ``D_opt``;
        ``ci`` maps each to ``[lo, hi]``; ``boot`` holds the resampled values.

    Raises:
        ValueError: non-positive or non-finite values.
        InsufficientDataError: fewer than 6 runs, one model size or one data size, or an exponent
            at the edge of the searched range (the data do not determine it).

    Examples:
        >>> n = np.repeat(np.geomspace(1e7, 1e10, 5), 4)
        >>> d = np.tile(np.geomspace(1e9, 1e12, 4), 5)
        >>> fit = fit_chinchilla_vp(n, d, 1.8 + 500 * n**-0.35 + 2000 * d**-0.37, n_boot=0)
        >>> round(fit["alpha"], 3), round(fit["beta"], 3)
        (0.35, 0.37)
    """
    confidence = check_probability("confidence", confidence)
    n_boot = check_positive_int("n_boot", n_boot, minimum=0)
    X, logy = validate_xy({"params": params, "tokens": tokens}, loss, y_name="loss", min_points=6)
    for j, name in enumerate(("params", "tokens")):
        if np.unique(X[:, j]).size < 2:
            raise InsufficientDataError(f"All runs have the same '{name}': the law cannot separate N from D.")
    lx, ld, L = X[:, 0], X[:, 1], np.exp(logy)
    n = L.size
    a, b, E, A, B, _ = (float(v[0]) for v in _search(lx, ld, L, np.ones((1, n))))
    lo, hi = _COARSE[0], _COARSE[-1] + 0.05
    if not (lo + 0.01 < a < hi - 0.01 and lo + 0.01 < b < hi - 0.01):
        raise InsufficientDataError(
            f"The fitted exponents (alpha = {a:.3g}, beta = {b:.3g}) sit at the edge of the range searched "
            f"({lo:g} to {_COARSE[-1]:g}): the runs do not determine them. Add model and data sizes.")
    pred = E + A * np.exp(-a * lx) + B * np.exp(-b * ld)
    values = {"E": E, "A": A, "B": B, "alpha": a, "beta": b, "params_exponent": b / (a + b),
              "tokens_exponent": a / (a + b)}
    out = {**values, "n_points": n, "rmse_log": float(np.sqrt(np.mean((np.log(pred) - logy) ** 2))),
           "confidence": confidence, "n_boot": n_boot, "ci": {}, "boot": {}}
    if n_boot:
        rng = np.random.default_rng(seed)
        W = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)
        ab, bb, Eb, Ab, Bb, _ = _search(lx, ld, L, W)
        boot = {"E": Eb, "A": Ab, "B": Bb, "alpha": ab, "beta": bb, "params_exponent": bb / (ab + bb),
                "tokens_exponent": ab / (ab + bb)}
        out["boot"] = boot
        out["ci"] = {k: list(widened_interval(v, values[k], confidence, n - 5)) for k, v in boot.items()}
    return out
