"""The noisy quadratic model (NQM): a workload whose critical batch size is known exactly.

Zhang, Li, Nado, Martens, Sachdeva, Dahl, Shallue, Grosse 2019, "Which Algorithmic Choices
Matter at Which Batch Sizes? Insights From a Noisy Quadratic Model" (arXiv:1907.04164, sec. 3).

Loss ``L(theta) = 1/2 sum_i h_i theta_i^2`` (diagonal curvature ``H``); a mini-batch of ``B``
examples gives the gradient ``H theta + xi`` with ``xi ~ N(0, C / B)``, ``C = diag(c_i)``. Here
each example ``n`` carries a noise vector ``xi_n ~ N(0, C)`` and its loss is
``l_n = 1/2 sum_i h_i theta_i^2 + xi_n . theta``, so the per-example gradients have mean
``G = H theta`` and covariance ``Sigma = C`` exactly, and any split of the batch into
micro-batches is an honest small batch for the noise monitor.

SGD with learning rate ``a``: ``theta_i' = (1 - a h_i) theta_i - a xi_i``. The paper tracks the
mean and the variance of each coordinate,

    E[theta_i]' = (1 - a h_i) E[theta_i],      V[theta_i]' = (1 - a h_i)^2 V[theta_i] + a^2 c_i / B,

and the expected loss is ``E[L] = 1/2 sum_i h_i (E[theta_i]^2 + V[theta_i])``. Only the second
moment ``m_i = E[theta_i^2] = E[theta_i]^2 + V[theta_i]`` enters the loss, and it obeys the
same recursion as the variance (the noise is independent of ``theta``, with mean zero):

    m_i(t + 1) = (1 - a h_i)^2 m_i(t) + a^2 c_i / B,

    m_i(t) = r_i^t (m_i(0) - s_i) + s_i,   r_i = (1 - a h_i)^2,   s_i = a c_i / (B h_i (2 - a h_i)),

so mean and variance need no separate tracking. It is stable for ``0 < a < 2 / max h_i`` and
floors at ``L_inf = 1/2 sum_i h_i s_i``. From it: the expected steps to a target loss for each
(batch, learning rate) pair; the fewest over the learning rate, ``S(B)``; and the law
``S(B) = S_min (1 + B_crit / B)`` (McCandlish et al. 2018, eq. 2.11) fitted to ``S(B)`` with
the 20% critical batch size ``CBS = 1.2 B0 + B_crit / 5`` (Zhang et al. 2024, arXiv:2410.21676).
The limits are exact too: ``S_min`` of noiseless gradient descent (``B -> inf``) and ``E_min``
of the small-batch limit (``a = k B``, ``B -> 0``: ``dm_i/dtau = -2 h_i m_i + k c_i`` in
``tau = a t``, examples ``tau / k``).

The simple noise scale at weights ``theta`` is ``B_simple = tr(C) / |H theta|^2`` (examples).
Batch sizes are in examples.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import optimize

from .._validation import check_positive_float, check_positive_int
from .base import Workload

__all__ = ["NoisyQuadratic", "nqm_expected_loss", "nqm_expected_g_sq", "nqm_steps_to_target", "nqm_best_steps",
           "nqm_exact_cbs"]


class NoisyQuadratic(Workload):
    """Noisy quadratic model with power-law spectra (Zhang et al. 2019).

    ``h_i = h_max i^(-h_exponent)`` and ``c_i = c_max i^(-c_exponent)`` for ``i = 1..dim``;
    the model starts at ``theta_i = init`` for every coordinate, whatever the seed (the seed
    drives the gradient noise only). Zhang et al. use ``h_i = 1/i`` and ``C = H``
    (``h_exponent = c_exponent = 1``).

    Args:
        dim: number of coordinates ``d``.
        h_exponent: exponent of the curvature spectrum.
        c_exponent: exponent of the noise spectrum.
        h_max: largest curvature ``h_1``.
        c_max: largest per-example gradient variance ``c_1``.
        init: initial value of every coordinate.

    Examples:
        >>> wl = NoisyQuadratic(dim=4)
        >>> model = wl.make_model(0)
        >>> round(wl.eval_loss(model), 4)  # 1/2 (1 + 1/2 + 1/3 + 1/4)
        1.0417
        >>> round(wl.b_simple(model), 4)  # tr(C) / |H theta|^2 = 2.0833 / 1.4236
        1.4634

    References:
        Zhang et al. 2019, arXiv:1907.04164, sec. 3; McCandlish et al. 2018, arXiv:1812.06162.
    """

    name = "nqm"
    default_lr = 0.5
    default_micro_batch = 8
    lr_scaling = 0.5  # the best learning rate saturates below the stability limit 2 / max h

    def __init__(self, dim: int = 32, h_exponent: float = 1.0, c_exponent: float = 1.0, h_max: float = 1.0,
                 c_max: float = 1.0, init: float = 1.0):
        self.dim = check_positive_int("dim", dim)
        self.h_exponent = check_positive_float("h_exponent", h_exponent, allow_zero=True)
        self.c_exponent = check_positive_float("c_exponent", c_exponent, allow_zero=True)
        self.h_max = check_positive_float("h_max", h_max)
        self.c_max = check_positive_float("c_max", c_max)
        self.init = check_positive_float("init", init)
        i = np.arange(1, self.dim + 1, dtype=np.float64)
        self.h = self.h_max * i ** -self.h_exponent  # (d,) curvatures
        self.c = self.c_max * i ** -self.c_exponent  # (d,) per-example gradient variances
        self._h = torch.tensor(self.h, dtype=torch.float32)
        self._c_sqrt = torch.tensor(np.sqrt(self.c), dtype=torch.float32)

    def make_model(self, seed: int) -> torch.nn.Module:
        model = torch.nn.Module()
        model.theta = torch.nn.Parameter(torch.full((self.dim,), self.init))  # (d,)
        return model

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(batch_size, self.dim, generator=generator) * self._c_sqrt  # (B, d) noise per example

    def loss(self, model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
        theta = model.theta
        return 0.5 * (self._h * theta.square()).sum() + (batch @ theta).mean()

    @torch.no_grad()
    def eval_loss(self, model: torch.nn.Module) -> float:
        """The exact loss ``1/2 sum h_i theta_i^2`` at the current weights (no noise)."""
        theta = model.theta.detach().double().cpu().numpy()
        return float(0.5 * (self.h * theta**2).sum())

    def b_simple(self, model: torch.nn.Module) -> float:
        """Exact ``B_simple = tr(C) / |H theta|^2`` (examples) at the model's current weights."""
        theta = model.theta.detach().double().cpu().numpy()
        g_sq = float(((self.h * theta) ** 2).sum())
        return math.inf if g_sq <= 0 else float(self.c.sum()) / g_sq

    @property
    def max_stable_lr(self) -> float:
        """``2 / max h_i``: above it SGD's sharpest direction grows (``|1 - a h_1| > 1``)."""
        return 2.0 / float(self.h.max())

    @property
    def theta0_sq(self) -> np.ndarray:
        """``m_i(0) = theta_i(0)^2`` (the start is deterministic)."""
        return np.full(self.dim, self.init**2)

    def exact_cbs(self, batch_sizes, target_loss: float, reference_batch: float | None = None) -> dict:
        """:func:`nqm_exact_cbs` for this workload's spectra and start."""
        return nqm_exact_cbs(self.h, self.c, self.theta0_sq, batch_sizes, target_loss, reference_batch)

    def describe(self) -> dict:
        return {"name": self.name, "tokens_per_example": None, "dim": self.dim, "h_exponent": self.h_exponent,
                "c_exponent": self.c_exponent, "h_max": self.h_max, "c_max": self.c_max, "init": self.init,
                "loss": "1/2 sum h_i theta_i^2, gradient noise N(0, C/B)"}


# ------------------------------------------------------------------ exact expected dynamics (numpy)
def _stationary(h: np.ndarray, c: np.ndarray, lr: float, batch_size: float) -> np.ndarray:
    return lr * c / (batch_size * h * (2.0 - lr * h))


def _second_moment(h, c, theta0_sq, lr: float, batch_size: float, steps) -> np.ndarray:
    """``m_i(t) = r_i^t m_i(0) + (a^2 c_i / B) (1 - r_i^t) / (1 - r_i)``, ``r_i = (1 - a h_i)^2``: the
    recursion summed, valid at any learning rate (``r_i = 1``: the sum is ``t``; ``r_i > 1``: growth)."""
    h, c, m0 = (np.asarray(v, dtype=np.float64) for v in (h, c, theta0_sq))
    t = np.asarray(steps, dtype=np.float64)[..., None]  # (..., 1)
    r = (1.0 - lr * h) ** 2  # (d,)
    rt = r**t  # (..., d)
    one = np.abs(1.0 - r) < 1e-12
    geom = np.where(one, t, (1.0 - rt) / np.where(one, 1.0, 1.0 - r))
    return rt * m0 + lr**2 * c / batch_size * geom


def nqm_expected_loss(h, c, theta0_sq, lr: float, batch_size: float, steps) -> np.ndarray:
    """Exact ``E[L(theta_t)] = 1/2 sum_i h_i m_i(t)`` of SGD on the NQM after each of ``steps``.

    Args:
        h: (d,) curvatures.
        c: (d,) per-example gradient variances (the noise of a batch is ``C / B``).
        theta0_sq: (d,) ``E[theta_i(0)^2]``.
        lr: learning rate ``a`` (any positive value; above ``2 / max h`` the loss eventually grows).
        batch_size: examples per step.
        steps: step counts ``t`` (array-like of non-negative integers).

    Returns:
        The expected loss at each ``t``, same shape as ``steps``.

    Examples:
        >>> float(nqm_expected_loss([1.0], [0.0], [1.0], 0.5, 1, 1))  # 1/2 (1 - 0.5)^2
        0.125
    """
    return 0.5 * (_second_moment(h, c, theta0_sq, lr, batch_size, steps) * np.asarray(h, dtype=np.float64)).sum(-1)


def nqm_expected_g_sq(h, c, theta0_sq, lr: float, batch_size: float, steps) -> np.ndarray:
    """Exact ``E[|G(theta_t)|^2] = sum_i h_i^2 m_i(t)`` along SGD (the true gradient is ``H theta``).

    With ``tr(Sigma) = sum_i c_i`` constant, a noise monitor's ratio of means over steps
    ``t_1..t_n`` has the exact counterpart ``sum(c) / mean_t E[|G(theta_t)|^2]``.

    Examples:
        >>> float(nqm_expected_g_sq([2.0], [0.0], [1.0], 0.25, 1, 1))  # (2 * 0.5)^2
        1.0
    """
    h = np.asarray(h, dtype=np.float64)
    return (_second_moment(h, c, theta0_sq, lr, batch_size, steps) * h**2).sum(-1)


def _interpolate(t0: int, l0: float, l1: float, target: float) -> float:
    return float(t0 + (l0 - target) / (l0 - l1))


def nqm_steps_to_target(h, c, theta0_sq, lr: float, batch_size: float, target: float,
                        max_steps: int = 10_000_000) -> float:
    """Expected steps to ``target``: the first step ``t`` with ``E[L(t)] <= target``, interpolated
    linearly between steps ``t - 1`` and ``t`` (how a trial evaluated every step reads it).

    Learning rates above the stability limit ``2 / max h`` are allowed: a few steps may reach
    the target before the top coordinates blow up. Returns ``inf`` when the target is never
    reached: a stable learning rate whose floor ``L_inf`` is at or above it, an unstable one
    whose loss grows past ``1e6`` times the initial loss first, or ``max_steps`` reached.
    """
    h, c, m0 = (np.asarray(v, dtype=np.float64) for v in (h, c, theta0_sq))
    if not lr > 0:
        return math.inf
    initial = float(nqm_expected_loss(h, c, m0, lr, batch_size, 0))
    if initial <= target:
        return 0.0
    stable = lr * h.max() < 2.0
    if stable and 0.5 * float((h * _stationary(h, c, lr, batch_size)).sum()) >= target:
        return math.inf
    start, chunk = 0, 64
    while start < min(max_steps, 4096):  # scan: an unstable or non-monotone loss may cross early only
        ts = np.arange(start, min(start + chunk, max_steps) + 1)
        loss = nqm_expected_loss(h, c, m0, lr, batch_size, ts)
        hit = np.flatnonzero(loss <= target)
        if hit.size:
            k = hit[0]  # >= 1: loss[0] > target
            return _interpolate(ts[k - 1], loss[k - 1], loss[k], target)
        if not stable and (not np.isfinite(loss[-1]) or loss[-1] > 1e6 * initial):
            return math.inf
        start, chunk = int(ts[-1]), chunk * 2
    if not stable:
        return math.inf
    # stable and still above the target: it decays monotonically towards the floor; bracket, bisect
    lo, hi = start, start
    while nqm_expected_loss(h, c, m0, lr, batch_size, hi) > target:
        if hi >= max_steps:
            return math.inf
        lo, hi = hi, min(2 * hi, max_steps)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if nqm_expected_loss(h, c, m0, lr, batch_size, mid) > target:
            lo = mid
        else:
            hi = mid
    l0, l1 = nqm_expected_loss(h, c, m0, lr, batch_size, [hi - 1, hi])
    return _interpolate(hi - 1, l0, l1, target)


def nqm_best_steps(h, c, theta0_sq, batch_size: float, target: float, lr_grid_points: int = 60) -> tuple[float, float]:
    """Fewest expected steps to ``target`` over constant learning rates, and that learning rate.

    A log grid of learning rates up to twice the stability limit ``2 / max h`` (a few steps can
    reach the target before an unstable learning rate blows up) brackets the optimum, which is
    then refined with Brent's method on ``log a``.

    Returns:
        ``(steps, lr)``; ``(inf, nan)`` when no learning rate reaches the target.
    """
    h = np.asarray(h, dtype=np.float64)
    a_max = 2.0 / h.max()
    log_grid = np.linspace(math.log(a_max) - 12.0, math.log(2.0 * a_max), lr_grid_points + 1)

    def f(log_a: float) -> float:
        steps = nqm_steps_to_target(h, c, theta0_sq, math.exp(log_a), batch_size, target)
        return steps if math.isfinite(steps) else 1e300  # finite, so Brent's parabolas stay defined

    values = np.array([f(x) for x in log_grid])
    if not (values < 1e300).any():
        return math.inf, math.nan
    j = int(np.argmin(values))
    lo, hi = log_grid[max(j - 1, 0)], log_grid[min(j + 1, log_grid.size - 1)]
    res = optimize.minimize_scalar(f, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    if res.fun <= values[j]:
        return float(res.fun), math.exp(float(res.x))
    return float(values[j]), math.exp(float(log_grid[j]))


def _gd_steps(h, theta0_sq, target: float) -> float:
    """``S_min``: fewest steps of noiseless gradient descent (``B -> inf``), continuous in ``t``."""
    return nqm_best_steps(h, np.zeros_like(h), theta0_sq, 1.0, target)[0]


def _small_batch_examples(h, c, theta0_sq, target: float) -> float:
    """``E_min``: fewest examples in the limit ``B -> 0`` with ``a = k B`` (module docstring)."""
    h, c, m0 = (np.asarray(v, dtype=np.float64) for v in (h, c, theta0_sq))

    def loss(tau: float, k: float) -> float:
        s = k * c / (2.0 * h)
        return 0.5 * float((h * (np.exp(-2.0 * h * tau) * (m0 - s) + s)).sum())

    def examples(log_k: float) -> float:
        k = math.exp(log_k)
        if 0.5 * float((h * k * c / (2.0 * h)).sum()) >= target:
            return math.inf
        if loss(0.0, k) <= target:
            return 0.0
        hi = 1.0
        while loss(hi, k) > target:
            hi *= 2.0
        tau = optimize.brentq(lambda x: loss(x, k) - target, 0.0, hi, xtol=1e-12, rtol=1e-12)
        return tau / k

    def examples_finite(log_k: float) -> float:
        e = examples(log_k)
        return e if math.isfinite(e) else 1e300

    k_max = 4.0 * target / float(c.sum())  # beyond this the floor sum k c_i / 4 exceeds the target
    grid = np.linspace(math.log(k_max) - 12.0, math.log(k_max), 121)
    values = np.array([examples_finite(x) for x in grid])
    j = int(np.argmin(values))
    lo, hi = grid[max(j - 1, 0)], grid[min(j + 1, grid.size - 1)]
    res = optimize.minimize_scalar(examples_finite, bounds=(lo, hi), method="bounded", options={"xatol": 1e-8})
    return float(min(res.fun, values[j]))


def nqm_exact_cbs(h, c, theta0_sq, batch_sizes, target_loss: float, reference_batch: float | None = None) -> dict:
    """The exact steps-vs-batch curve of the NQM and its critical batch sizes.

    ``S(B)`` is :func:`nqm_best_steps` at each batch size; ``S(B) = S_min (1 + B_crit / B)`` is
    fitted to it by least squares on log steps (the curve is not exactly of this form, so the
    fit depends on the batch sizes: compare a sweep with the fit over the same batch sizes);
    ``cbs = 1.2 B0 + B_crit / 5``. The exact limits ``S_min`` (noiseless gradient descent),
    ``E_min`` (``B -> 0``) and their ratio ``E_min / S_min`` are returned beside the fit.

    Args:
        h: (d,) curvatures.
        c: (d,) per-example gradient variances.
        theta0_sq: (d,) ``E[theta_i(0)^2]``.
        batch_sizes: batch sizes (examples), at least 3.
        target_loss: the loss to reach.
        reference_batch: ``B0`` of the CBS (default: the smallest batch size).

    Returns:
        Dict with ``batch_sizes``, ``steps``, ``best_lr`` (lists), ``s_min``, ``b_crit``,
        ``cbs``, ``reference_batch``, ``max_rel_residual`` of the fit, and ``limits``
        (``s_min``, ``e_min``, ``b_crit``), all batch quantities in examples.
    """
    b = np.array(sorted(set(float(x) for x in batch_sizes)))
    if b.size < 3 or (b <= 0).any():
        raise ValueError(f"The 'batch_sizes' parameter must hold at least 3 positive sizes. Got {list(batch_sizes)!r}.")
    target_loss = check_positive_float("target_loss", target_loss)
    runs = [nqm_best_steps(h, c, theta0_sq, x, target_loss) for x in b]
    steps = np.array([s for s, _ in runs])
    if not np.isfinite(steps).all():
        bad = b[~np.isfinite(steps)].tolist()
        raise ValueError(f"The target loss {target_loss:g} is unreachable at batch sizes {bad} (noise floor).")
    y, log_b = np.log(steps), np.log(b)
    # Huber on log steps with delta 0.1, as batchlaw.fit.fit_steps_law: the same estimator as a sweep's
    sol = optimize.least_squares(lambda p: y - p[0] - np.logaddexp(0.0, p[1] - log_b),
                                 x0=[y.min(), float(np.median(log_b))], loss="huber", f_scale=0.1)
    s_min, b_crit = math.exp(sol.x[0]), math.exp(sol.x[1])
    b0 = float(b.min()) if reference_batch is None else check_positive_float("reference_batch", reference_batch)
    s_inf = _gd_steps(np.asarray(h, dtype=np.float64), theta0_sq, target_loss)
    e_min = _small_batch_examples(h, c, theta0_sq, target_loss)
    return {
        "batch_sizes": b.tolist(), "steps": steps.tolist(), "best_lr": [lr for _, lr in runs],
        "s_min": s_min, "b_crit": b_crit, "cbs": 1.2 * b0 + b_crit / 5.0, "reference_batch": b0,
        "max_rel_residual": float(np.abs(np.expm1(sol.fun)).max()),
        "limits": {"s_min": s_inf, "e_min": e_min, "b_crit": e_min / s_inf}, "unit": "examples",
    }
