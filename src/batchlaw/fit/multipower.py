"""The multi-power law of Luo et al. 2025 for the loss under any learning-rate schedule.

"A Multi-Power Law for Loss Curve Prediction Across Learning Rate Schedules" (arXiv:2503.12811),
eq. 1:

    L(t) = L0 + A S1(t)^-alpha - LD(t),
    LD(t) = B sum_{k<=t} (eta_{k-1} - eta_k) G(eta_k^-gamma S_k(t)),   G(x) = 1 - (C x + 1)^-beta,
    S1(t) = sum_{tau<=t} eta_tau,   S_k(t) = sum_{tau=k..t} eta_tau.

Each decrease of the learning rate at step ``k`` buys a loss reduction that grows, as a power
law saturating at ``B (eta_{k-1} - eta_k)``, with the area run at the lower rate since. Here
``eta`` is the learning rate divided by its peak (so ``S1`` counts peak-LR steps and ``B`` and
``C`` are in those units: ``B = B_abs * peak``, ``C = C_abs * peak^(1 - gamma)``); the warmup's
area is in ``S1`` and its increases are not drops. Parameters: ``L0, A, alpha, B, C, beta,
gamma``, fitted in log space with raw ``(log L0, log A, alpha, log B, log C, beta, gamma)``.

Evaluation. The sum over drops is over every step of a decay (thousands for a cosine), for every
logged step and every parameter vector the engine tries at once. Drops are merged into at most
:data:`DROP_BINS` bins between knots that include every evaluated step (so a bin lies wholly
before or after each of them), each bin at its drop-weighted mean step and learning rate; the
error of this is second order in the bin width (tested against the exact sum). Only the (point,
bin) pairs with the bin before the point are evaluated, and summed per point by one sparse
product.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from .engine import Law

__all__ = ["MultiPowerKernel", "multipower_law", "MULTIPOWER_PARAMS", "DROP_BINS", "BETA_RANGE", "GAMMA_RANGE"]

#: Reported parameters, in order.
MULTIPOWER_PARAMS = ("L0", "A", "alpha", "B", "C", "beta", "gamma")
#: Ranges of ``beta`` and ``gamma`` searched: around what Luo et al. fitted (about 0.6 for both, at
#: 25M to 400M parameters), wide enough that the data, not the bound, decides.
BETA_RANGE, GAMMA_RANGE = (0.2, 1.5), (0.2, 1.2)
#: Bins the learning-rate drops are merged into, besides one knot per evaluated step.
DROP_BINS = 96
#: The smallest normalised learning rate in ``eta_k^-gamma``: a schedule that ends at 0 (a cosine
#: to zero) has a last drop to ``eta = 0``, whose ``eta^-gamma S_k(t)`` is ``inf * 0``; as if it
#: ended at ``1e-9`` of the peak, its gain is that of the limit (tested against a schedule ending at
#: 1e-12 of the peak).
ETA_FLOOR = 1e-9


def _one_run(eta: np.ndarray, steps: np.ndarray):
    """``(S1 (n,), drop per bin (K,), log eta per bin (K,), bin ended by each step (n, K), S_k(t) (n, K))``."""
    last = eta.size
    t = np.clip(np.floor(steps).astype(np.int64), 1, last)
    cum = np.concatenate([[0.0], np.cumsum(eta)])  # cum[j] = sum of eta over steps 1..j
    drop = np.maximum(np.concatenate([[0.0], eta[:-1] - eta[1:]]), 0.0)  # at step k = 1..T
    knots = np.unique(np.concatenate([[0], t, np.linspace(0, last, DROP_BINS + 1).round().astype(np.int64)]))
    k = np.arange(1, last + 1)
    which = np.searchsorted(knots, k, side="left") - 1  # bin (knots[i], knots[i+1]] holds step k
    w = np.bincount(which, drop, minlength=knots.size - 1)
    used = w > 0
    safe = np.where(used, w, 1.0)
    k_mid = (np.bincount(which, drop * k, minlength=knots.size - 1) / safe)[used]
    eta_mid = (np.bincount(which, drop * eta, minlength=knots.size - 1) / safe)[used]
    mask = knots[1:][used][None, :] <= t[:, None]
    cum_before = np.interp(k_mid - 1, np.arange(last + 1), cum)  # S_k(t) = cum[t] - cum[k - 1]
    area = np.where(mask, cum[t][:, None] - cum_before[None, :], 0.0)
    return cum[t], w[used], np.log(np.maximum(eta_mid, ETA_FLOOR)), mask, area


class MultiPowerKernel:
    """The schedules' sums at given steps, ready for many parameter vectors.

    Args:
        etas: per run, the normalised learning rate at steps ``1..T`` (``eta[0]`` is step 1).
        run: the run (index into ``etas``) of each point.
        steps: the step of each point (within its run's ``1..T``; rounded down to whole steps).
    """

    def __init__(self, etas, run, steps) -> None:
        run = np.asarray(run, dtype=np.int64).ravel()
        steps = np.asarray(steps, dtype=np.float64).ravel()
        n = steps.size
        self.s1 = np.empty(n)
        deltas, log_etas, masks, areas = [], [], [], []
        for r, eta in enumerate(etas):
            at = np.flatnonzero(run == r)
            if at.size == 0:
                continue
            s1, delta, log_eta, mask, area = _one_run(np.asarray(eta, dtype=np.float64), steps[at])
            self.s1[at] = s1
            full_mask, full_area = np.zeros((n, delta.size), bool), np.zeros((n, delta.size))
            full_mask[at], full_area[at] = mask, area
            deltas.append(delta), log_etas.append(log_eta), masks.append(full_mask), areas.append(full_area)
        delta = np.concatenate(deltas) if deltas else np.zeros(0)
        log_eta = np.concatenate(log_etas) if deltas else np.zeros(0)
        mask = np.concatenate(masks, axis=1) if deltas else np.zeros((n, 0), bool)
        area = np.concatenate(areas, axis=1) if deltas else np.zeros((n, 0))
        # only the (point, bin) pairs where the bin's drops came before the point enter the sums:
        # kept as flat lists, and the sums over bins as one sparse (n, pairs) matrix product
        rows, cols = np.nonzero(mask)
        self.cols, self.log_eta, self.area = cols, log_eta, area[rows, cols]
        self.delta = delta[cols]
        self.delta_log_eta = self.delta * log_eta[cols]
        self.by_point = sparse.csr_matrix((np.ones(rows.size), (rows, np.arange(rows.size))), shape=(n, rows.size))

    def per_point(self, values: np.ndarray) -> np.ndarray:
        """Sums of ``values (m, pairs)`` over each point's pairs: ``(m, n)``."""
        return np.asarray(self.by_point @ values.T).T

    def parts(self, L0, A, alpha, B, C, beta, gamma):
        """The law's pieces for ``m`` parameter vectors (each argument shape ``(m,)``): the loss
        ``(m, n)``, and what the derivatives need (the power term, the loss drop, and per (point,
        bin) pair ``x``, ``u = 1 + x``, ``u^-beta``, ``log u``: ``(m, pairs)``)."""
        col = [np.asarray(v, dtype=np.float64).reshape(-1, 1) for v in (L0, A, alpha, B, C, beta, gamma)]
        L0, A, alpha, B, C, beta, gamma = col
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return self._parts(L0, A, alpha, B, C, beta, gamma)

    def _parts(self, L0, A, alpha, B, C, beta, gamma):
        power = A * self.s1[None, :] ** -alpha  # (m, n)
        x = (C * np.exp(-gamma * self.log_eta[None, :]))[:, self.cols] * self.area[None, :]  # (m, pairs)
        log_u = np.log1p(x)
        G = -np.expm1(-beta * log_u)  # 1 - u^-beta, accurate where the drop is still linear (x << 1)
        ld = B * self.per_point(G * self.delta)
        return L0 + power - ld, power, ld, x, 1.0 + x, 1.0 - G, log_u

    def saturation(self, values: dict) -> float:
        """The largest ``x = C eta_k^-gamma S_k(t)`` among the points' drops, for reported
        ``values``: where it stays small (a few units at most), ``G`` is still close to linear over
        what was fitted (the decay seen shows little saturation of its gain, and a longer one is
        extrapolated from that; ``batchlaw.fit.curves.MULTIPOWER_SATURATION`` flags it)."""
        x = self.parts(*(values[k] for k in MULTIPOWER_PARAMS))[3]
        return float(np.max(x, initial=0.0))

    def loss(self, values: dict) -> np.ndarray:
        """The loss ``(m, n)`` for reported values (scalars or arrays of ``m``)."""
        return self.parts(*(values[k] for k in MULTIPOWER_PARAMS))[0]


def multipower_law(etas, *, fixed: dict | None = None) -> Law:
    """The multi-power law on the engine, for the runs' schedules ``etas`` (each normalised, steps
    ``1..T``); the inputs are ``X[:, 0]`` the run (index into ``etas``) and ``X[:, 1]`` the step.
    Raw parameters ``(l0, a, alpha, b, c, beta, gamma)``; ``fixed`` pins some of ``beta`` and
    ``gamma`` (their bounds collapse to the value), for profiling the prediction over them."""
    cache: dict = {}

    def kernel(X):
        key = X.tobytes()
        if key not in cache:
            if len(cache) > 8:
                cache.clear()
            cache[key] = MultiPowerKernel(etas, X[:, 0], X[:, 1])
        return cache[key]

    def unpack(theta):
        with np.errstate(over="ignore"):
            return (np.exp(theta[:, 0]), np.exp(theta[:, 1]), theta[:, 2], np.exp(theta[:, 3]), np.exp(theta[:, 4]),
                    theta[:, 5], theta[:, 6])

    last: dict = {}

    def parts(theta, X):
        """The kernel's parts at ``theta``; the last result is kept, as the engine asks for the
        prediction and then the Jacobian at the same parameters."""
        key = (theta.tobytes(), theta.shape, X.tobytes())
        if last.get("key") != key:
            last["key"], last["value"] = key, kernel(X).parts(*unpack(theta))
        return last["value"]

    def predict(theta, X):
        L = parts(theta, X)[0]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(L > 0, np.log(np.maximum(L, 1e-300)), np.nan)

    def jac(theta, X):
        kn = kernel(X)
        L0, A, alpha, B, C, beta, gamma = unpack(theta)
        L, power, ld, x, u, u_beta, log_u = parts(theta, X)
        L = np.maximum(L, 1e-300)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            dG_dlogx = beta[:, None] * u_beta / u * x  # dG/dlog C; times -log eta for gamma
            Bc = B[:, None]
            cols = [L0[:, None] + 0 * L, power, -power * np.log(kn.s1)[None, :], -ld,
                    -Bc * kn.per_point(dG_dlogx * kn.delta), -Bc * kn.per_point(u_beta * log_u * kn.delta),
                    Bc * kn.per_point(dG_dlogx * kn.delta_log_eta)]
            return np.stack(cols, axis=-1) / L[..., None]

    def report(theta):
        return dict(zip(MULTIPOWER_PARAMS, unpack(theta)))

    bounds = {"beta": BETA_RANGE, "gamma": GAMMA_RANGE}
    for k, v in (fixed or {}).items():
        bounds[k] = (v, v)
    return Law("multi-power", ("l0", "a", "alpha", "b", "c", "beta", "gamma"), predict, jac, report,
               ((None, None), (None, None), (0.0, 5.0), (None, None), (-15.0, 10.0), bounds["beta"], bounds["gamma"]))
