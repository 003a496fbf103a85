"""Gradient noise scale from squared gradient norms: pure NumPy, no torch.

Everything here works on squared norms measured at two batch sizes taken at the *same*
weights (McCandlish et al. 2018, "An Empirical Model of Large-Batch Training",
arXiv:1812.06162, Appendix A.1). With ``G`` the true gradient and ``Sigma`` the per-example
gradient covariance, the mean gradient over an i.i.d. batch of size ``B`` satisfies

    E |G_B|^2 = |G|^2 + tr(Sigma) / B.

Two batch sizes ``B_small < B_big`` give two equations and so the unbiased estimates

    |G|^2     ~ (B_big |G_big|^2 - B_small |G_small|^2) / (B_big - B_small)      (A.1)
    tr(Sigma) ~ (|G_small|^2 - |G_big|^2) / (1/B_small - 1/B_big)               (A.1)

and the simple noise scale ``B_simple = tr(Sigma) / |G|^2`` (eq. 2.9). Each per-step estimate
is unbiased but very noisy (it is often negative); the ratio of two noisy numbers is biased, so
numerator and denominator are smoothed *separately* (a bias-corrected EMA, or means over a window)
and only then divided. Averaging per-step ratios, or clipping negative per-step values, biases the
result and is never done here.

Batch sizes may be in examples or in tokens; ``B_simple`` comes out in the same unit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import special

from .._format import fmt_num
from .._validation import check_positive_int, check_probability
from ..errors import InsufficientDataError
from .autocorrelation import _ar1_time, _detrend, _lag1_autocorrelation, integrated_time, lag1_upper_bound

__all__ = [
    "unbiased_g_sq",
    "unbiased_trace_sigma",
    "BiasCorrectedEMA",
    "NoiseScaleEstimate",
    "estimate_b_simple",
    "fieller_interval",
    "integrated_time",
    "lag1_upper_bound",
    "MIN_EFFECTIVE_STEPS",
    "MIN_STEPS",
    "windowed_estimates",
]

#: Fewest usable steps behind an estimate with an interval.
MIN_STEPS = 10
#: Fewest effectively independent steps (``n / tau``) behind an interval: a window shorter than
#: this many autocorrelation times (at their upper bound) is refused.
MIN_EFFECTIVE_STEPS = 4
#: One-sided levels of the upper bounds on the lag-1 autocorrelation of the steps: the first
#: decides whether a window supports an interval at all, the second sets the interval's width.
_SUPPORT_LEVEL = 0.95
_WIDTH_LEVEL = 0.84
#: ``method`` of a provisional estimate starts with this, followed by the reason.
_PROVISIONAL = "none (provisional): "
_TOO_FEW = "too few steps"
_TRACE_NOT_POSITIVE = "tr(Sigma) not positive"
_G_NOT_RESOLVED = "|G|^2 not resolved"
_CORRELATED = "steps too correlated for an interval"


def _check_batches(b_small, b_big) -> tuple[np.ndarray, np.ndarray]:
    b_small = np.asarray(b_small, dtype=np.float64)
    b_big = np.asarray(b_big, dtype=np.float64)
    if np.any(~np.isfinite(b_small)) or np.any(b_small <= 0):
        raise ValueError(f"The 'b_small' parameter must be positive. Got {b_small!r} instead.")
    if np.any(~np.isfinite(b_big)) or np.any(b_big <= b_small):
        raise ValueError(
            "The 'b_big' parameter must be larger than 'b_small' (two distinct batch sizes are "
            f"needed). Got b_small={b_small!r}, b_big={b_big!r} instead."
        )
    return b_small, b_big


def unbiased_g_sq(small_sq, big_sq, b_small, b_big):
    """Unbiased estimate of ``|G|^2`` from squared gradient norms at two batch sizes.

    ``(B_big |G_big|^2 - B_small |G_small|^2) / (B_big - B_small)``, McCandlish et al. 2018,
    Appendix A.1. Works elementwise on arrays (one entry per step).

    Args:
        small_sq: ``|G_small|^2``, the squared norm of a gradient averaged over ``b_small``
            examples (or the mean of several such squared norms).
        big_sq: ``|G_big|^2`` for a batch of ``b_big`` examples at the same weights.
        b_small: small batch size (examples or tokens).
        b_big: big batch size, same unit, ``> b_small``.

    Returns:
        The estimate; may be negative for a single step.

    Examples:
        >>> # |G|^2 = 1, tr(Sigma) = 8: E|G_2|^2 = 1 + 8/2 = 5, E|G_8|^2 = 1 + 8/8 = 2
        >>> float(unbiased_g_sq(5.0, 2.0, 2, 8))
        1.0
    """
    b_small, b_big = _check_batches(b_small, b_big)
    return (b_big * np.asarray(big_sq) - b_small * np.asarray(small_sq)) / (b_big - b_small)


def unbiased_trace_sigma(small_sq, big_sq, b_small, b_big):
    """Unbiased estimate of ``tr(Sigma)`` from squared gradient norms at two batch sizes.

    ``(|G_small|^2 - |G_big|^2) / (1/B_small - 1/B_big)``, McCandlish et al. 2018, Appendix A.1.

    Examples:
        >>> float(unbiased_trace_sigma(5.0, 2.0, 2, 8))
        8.0
    """
    b_small, b_big = _check_batches(b_small, b_big)
    return (np.asarray(small_sq) - np.asarray(big_sq)) / (1.0 / b_small - 1.0 / b_big)


class BiasCorrectedEMA:
    """Exponential moving average with Adam-style bias correction.

    ``m_t = beta m_{t-1} + (1 - beta) x_t``; the value is ``m_t / (1 - beta^t)``, so early
    values are not pulled towards zero. Used on the numerator and the denominator of
    ``B_simple`` separately.

    Examples:
        >>> ema = BiasCorrectedEMA(0.9)
        >>> ema.update(2.0)
        2.0
    """

    def __init__(self, beta: float) -> None:
        self.beta = check_probability("beta", beta, open_low=False)
        self.mean = 0.0
        self.count = 0

    def update(self, x: float) -> float:
        self.mean = self.beta * self.mean + (1.0 - self.beta) * float(x)
        self.count += 1
        return self.value

    @property
    def value(self) -> float:
        if self.count == 0:
            return math.nan
        return self.mean / (1.0 - self.beta**self.count)

    def state_dict(self) -> dict:
        return {"beta": self.beta, "mean": self.mean, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.beta = float(state["beta"])
        self.mean = float(state["mean"])
        self.count = int(state["count"])


@dataclass(frozen=True)
class NoiseScaleEstimate:
    """A gradient noise scale with its interval, its unit and what it rests on.

    Attributes:
        b_simple: ``tr(Sigma) / |G|^2`` = ratio of the window means of the per-step estimates.
        ci: ``(lo, hi)`` interval for ``b_simple`` at level ``confidence``; ``hi`` is ``inf``
            when the data cannot rule out ``|G|^2 = 0``.
        g_sq: mean of the per-step unbiased ``|G|^2`` estimates.
        trace_sigma: mean of the per-step unbiased ``tr(Sigma)`` estimates (per ``unit``).
        n_steps: number of steps the estimate rests on.
        unit: ``"examples"`` or ``"tokens"``: the unit of ``b_simple``.
        confidence: level of ``ci``.
        method: how ``ci`` was computed.
    """

    b_simple: float
    ci: tuple[float, float]
    g_sq: float
    trace_sigma: float
    n_steps: int
    unit: str
    confidence: float
    method: str

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ci"] = [_json_float(self.ci[0]), _json_float(self.ci[1])]
        return d

    def __str__(self) -> str:
        lo, hi = self.ci
        if math.isnan(lo):  # a provisional value: the reason stands in for the interval
            reason = self.method.removeprefix(_PROVISIONAL)
            return (f"B_simple = {fmt_num(self.b_simple)} {self.unit} "
                    f"(provisional, no interval: {reason}; {self.n_steps} steps)")
        return (
            f"B_simple = {fmt_num(self.b_simple)} {self.unit} "
            f"({self.confidence:.0%} CI {fmt_num(lo)} to {fmt_num(hi)}; {self.n_steps} steps, {self.method})"
        )


def _json_float(x: float) -> float | None:
    return None if not math.isfinite(x) else float(x)


def _fieller_set(n_bar: float, d_bar: float, cov: np.ndarray, q: float) -> tuple[float, float, str]:
    """The Fieller confidence set for ``n_bar / d_bar`` among ratios ``>= 0``: ``(lo, hi, note)``.

    ``cov`` is ``[[V_dd, V_dn], [V_nd, V_nn]]`` (covariance of the two means) and ``q`` the
    squared quantile. The set is ``{R >= 0 : a R^2 - 2 b R + c <= 0}``. For ``a > 0`` it is an
    interval and ``note`` is empty. For ``a <= 0`` (the denominator is not significantly
    positive) it is the outside of the roots: all of ``[0, inf)``, ``[r2, inf)`` (one root
    negative), or two pieces ``[0, r1]`` and ``[r2, inf)``, which are reported as their hull
    ``[0, inf)``; ``note`` says which.
    """
    a = float(d_bar * d_bar - q * cov[0, 0])
    b = float(n_bar * d_bar - q * cov[0, 1])
    c = float(n_bar * n_bar - q * cov[1, 1])
    disc = b * b - a * c
    if a > 0:
        root = math.sqrt(max(disc, 0.0))
        return max((b - root) / a, 0.0), (b + root) / a, ""
    why = "|G|^2 is not significantly positive"
    everything = (0.0, math.inf, f"no bounds: {why}, so every B_simple >= 0 is consistent with the data")
    if a == 0.0:  # the quadratic is linear: -2 b R + c <= 0
        if b > 0:
            return max(c / (2.0 * b), 0.0), math.inf, f"no upper end: {why}"
        return everything if b == 0 else (0.0, max(c / (2.0 * b), 0.0), "")
    if disc <= 0:
        return everything
    root = math.sqrt(disc)
    r1, r2 = sorted(((b - root) / a, (b + root) / a))
    if r2 <= 0:
        return everything
    if r1 < 0:
        return r2, math.inf, f"no upper end: {why}"
    return 0.0, math.inf, (f"no bounds: {why}; the set is [0, {fmt_num(r1)}] and [{fmt_num(r2)}, inf), "
                           "reported as [0, inf)")


def fieller_interval(
    num_means, den_means, confidence: float, *, inflation: float = 1.0
) -> tuple[float, float]:
    """Fieller interval for ``mean(num) / mean(den)`` from ``m`` (nearly) independent batch means.

    The set of ratios ``R`` that a t-test on ``mean(num) - R mean(den)`` cannot reject is
    ``{R : a R^2 - 2 b R + c <= 0}`` with ``a = D^2 - q V_dd``, ``b = N D - q V_nd``,
    ``c = N^2 - q V_nn``, ``q = t_{m-1}^2`` and ``V`` the covariance of the batch means divided
    by ``m`` (Fieller 1954). Ratios are clipped at 0 (a noise scale is not negative). When
    ``a <= 0`` the denominator is not significantly positive and the set is the outside of the
    roots: ``(r2, inf)`` when the numerator is significantly positive (one root is negative),
    otherwise ``(0, inf)``, which also stands for a set of two pieces ``[0, r1]`` and
    ``[r2, inf)``. ``inflation`` multiplies the covariance ``V``.

    Examples:
        >>> lo, hi = fieller_interval([9.0, 12.0, 10.0, 8.5], [0.8, 1.1, 1.0, 1.05], 0.95)
        >>> round(lo, 1), round(hi, 1)
        (7.8, 12.5)
    """
    num = np.asarray(num_means, dtype=np.float64)
    den = np.asarray(den_means, dtype=np.float64)
    m = num.size
    cov = inflation * np.cov(np.vstack([den, num])) / m  # [[V_dd, V_dn], [V_nd, V_nn]]
    q = float(special.stdtrit(m - 1, 0.5 + confidence / 2.0)) ** 2
    lo, hi, _ = _fieller_set(float(num.mean()), float(den.mean()), cov, q)
    return lo, hi


def _batch_means(x: np.ndarray, n_batches: int) -> np.ndarray:
    """Means of ``min(n_batches, x.size)`` contiguous batches of (nearly) equal size."""
    edges = np.linspace(0, x.size, min(n_batches, x.size) + 1).astype(int)
    return np.add.reduceat(x, edges[:-1]) / np.diff(edges)


def _autocorrelation_times(g: np.ndarray, t: np.ndarray, z: np.ndarray) -> tuple[float, float, str]:
    """``(tau_max, tau, why)`` for a window of per-step estimates ``g``, ``t`` and its pivot ``z``.

    ``tau_max`` is the largest autocorrelation time the window cannot rule out: the larger of
    Sokal's estimate for ``z`` and the AR(1) time at the ``_SUPPORT_LEVEL`` upper bound of the
    lag-1 autocorrelation of ``z`` and of ``g`` and ``t`` less their linear drift (``|G|^2`` and
    ``tr(Sigma)`` fall together as the loss falls; a common drift cancels in the pivot, and one
    that does not shows in the pivot). ``why`` says, in words, what set ``tau_max``. ``tau``,
    for the width, is the same from ``z`` alone at ``_WIDTH_LEVEL``.
    """
    n = g.size
    tau_sokal = integrated_time(z)
    r1 = {"pivot": _lag1_autocorrelation(z), "|G|^2": _lag1_autocorrelation(_detrend(g)),
          "tr(Sigma)": _lag1_autocorrelation(_detrend(t))}
    r1 = {k: r for k, r in r1.items() if r is not None}  # a constant series carries no noise
    bounds = {k: float(lag1_upper_bound(r, n, _SUPPORT_LEVEL, detrended=k != "pivot")) for k, r in r1.items()}
    tau = tau_sokal
    if "pivot" in r1:
        tau = max(tau, _ar1_time(float(lag1_upper_bound(r1["pivot"], n, _WIDTH_LEVEL))))
    worst = max(bounds, key=bounds.get, default=None)
    if worst is None or tau_sokal >= _ar1_time(bounds[worst]):
        return tau_sokal, tau, f"Sokal's estimate of the steps' autocorrelation time is {fmt_num(tau_sokal)} steps"
    drift = "" if worst == "pivot" else " (less its linear drift)"
    if bounds[worst] >= 0.999:
        cannot = "correlation across the whole window"
    else:
        cannot = (f"{bounds[worst]:.2f} ({_SUPPORT_LEVEL:.0%} upper bound), an autocorrelation time of "
                  f"{fmt_num(_ar1_time(bounds[worst]))} steps")
    why = (f"the lag-1 autocorrelation of the per-step {worst} estimates{drift} is {r1[worst]:.2f}, and {n} "
           f"steps cannot rule out {cannot}")
    return _ar1_time(bounds[worst]), tau, why


def _pivot_interval(g: np.ndarray, t: np.ndarray, z: np.ndarray, confidence: float, n_batches: int,
                    tau_max: float, tau: float) -> tuple[float, float, str]:
    """``(lo, hi, method)``: the Fieller interval of :func:`estimate_b_simple` for a window that
    supports one; ``z`` is the pivot ``t - point g``, the times from :func:`_autocorrelation_times`."""
    n = g.size
    n_bar, d_bar = float(t.mean()), float(g.mean())
    point = n_bar / d_bar
    # Covariance of the two means: the sample covariance made unbiased for correlated steps
    # (E sum (x - xbar)^2 = (n - tau) var), times tau / n.
    cov = np.cov(np.vstack([g, t])) * (n - 1) / (n - tau) * tau / n  # [[V_dd, V_dn], [V_nd, V_nn]]
    dof = n / tau_max - 1.0  # what the most correlated steps the window allows would leave
    method = (f"Fieller interval, {fmt_num(n / tau)} effective steps (autocorrelation time {fmt_num(tau)}, "
              f"up to {fmt_num(tau_max)})")
    # Guard: batch means see correlation beyond lag 1 that the estimates of tau can miss.
    z_b = _batch_means(z, n_batches)
    v_batch = float(np.var(z_b, ddof=1)) / z_b.size
    v_pivot = cov[1, 1] - 2.0 * point * cov[0, 1] + point * point * cov[0, 0]
    if v_batch > v_pivot > 0:
        cov = cov * (v_batch / v_pivot)
        dof = min(dof, z_b.size - 1.0)
        method = f"Fieller interval over {z_b.size} batch means (wider than autocorrelation time {fmt_num(tau)} gives)"
    q = float(special.stdtrit(dof, 0.5 + confidence / 2.0)) ** 2
    lo, hi, note = _fieller_set(n_bar, d_bar, cov, q)
    return lo, hi, method + (f"; {note}" if note else "")


def estimate_b_simple(
    g_sq,
    trace_sigma,
    *,
    unit: str = "examples",
    confidence: float = 0.95,
    n_batches: int = 10,
    min_steps: int = MIN_STEPS,
) -> NoiseScaleEstimate:
    """``B_simple`` over a window of steps, with a Fieller interval that allows for correlated steps.

    The point estimate is ``mean(trace_sigma) / mean(g_sq)``: numerator and denominator are
    averaged separately, then divided (McCandlish et al. 2018, App. A.1). The interval is
    Fieller's (Fieller 1954): the ratios ``R`` that a t-test on the mean of the pivot
    ``trace_sigma - R g_sq`` cannot reject. Neighbouring steps of a training run can be
    correlated, which shrinks the information in ``n`` steps to ``n / tau`` effectively
    independent ones (``tau`` the integrated autocorrelation time), and a short window cannot
    tell how large ``tau`` is. So:

    - ``tau_max`` is the largest ``tau`` the window cannot rule out: the larger of Sokal's
      estimate for the pivot (:func:`integrated_time`) and the AR(1) time
      ``(1 + rho) / (1 - rho)`` at the one-sided 95% upper bound (:func:`lag1_upper_bound`) of
      the lag-1 autocorrelation ``rho`` of the pivot, and of ``g_sq`` and ``trace_sigma`` less
      their linear drift (both fall as the loss falls; a drift they share cancels in the
      pivot). A window shorter than ``MIN_EFFECTIVE_STEPS`` (4) times ``tau_max`` has no honest
      interval: :class:`~batchlaw.errors.InsufficientDataError` says so, with the provisional
      value. In practice that takes about 30 steps even when the steps are independent.
    - ``tau``, for the width, is the same from the pivot alone at the 84% bound. The means'
      covariance is the sample covariance (made unbiased for correlated steps) times
      ``tau / n``; the quantile is Student's t with ``n / tau_max - 1`` degrees of freedom.
    - The batch-means variance over ``n_batches`` contiguous batches guards against correlation
      beyond lag 1: when it is the larger, it is used, with ``n_batches - 1`` degrees of freedom.

    The interval is asymmetric, as a ratio's should be; it has no upper end when the mean
    ``|G|^2`` is not significantly positive, and is all of ``[0, inf)`` (``method`` says why) when
    no ratio can be excluded or the set is two pieces ``[0, r1]`` and ``[r2, inf)``.

    Measured on AR(1) steps (``_synthetic_steps`` of tests/test_estimators.py, true ``B_simple``
    80, 300 seeds per cell; bench/interval_coverage.py): coverage of the 95% interval where one
    was returned, and how many of the 300 windows got one.

    | correlation (tau) | 20 steps | 50 steps | 100 steps | 200 steps | 400 steps |
    |---|---|---|---|---|---|
    | 0 (1) | 100% (126) | 99.0% (300) | 97.7% (300) | 97.3% (300) | 97.0% (300) |
    | 0.5 (3) | 1 of 1 (1) | 98.1% (157) | 98.0% (300) | 98.3% (300) | 96.7% (300) |
    | 0.9 (19) | none (0) | none (0) | none (0) | 97.8% (45) | 97.6% (295) |

    Batch means widened by Sokal's estimate, used before, returned every window and covered
    46%, 68%, 80% and 90% at correlation 0.9 and 20 to 200 steps, and 86% at correlation 0.5
    and 20 steps. For independent steps the median width (examples) is 87 (was 55) at 20 steps,
    37 (33) at 50, 24 (23) at 100 and 11 (12) at 400. Independent steps whose ``|G|^2`` and
    ``tr(Sigma)`` both fall 4x over the window are refused in 217, 71 and 1 of 300 windows at
    20, 30 and 50 steps, never from 100 on, and covered in 97% to 100%. Not solved: a slow
    component hidden under independent noise barely shows at lag 1, and short windows cannot
    see its long correlation (a lag-1 correlation 0.95 carrying 30% of the variance: 74% to 90%
    from 20 to 400 steps; 65% to 92% before).

    Args:
        g_sq: per-step unbiased ``|G|^2`` estimates (see :func:`unbiased_g_sq`).
        trace_sigma: per-step unbiased ``tr(Sigma)`` estimates, same length.
        unit: unit of the batch sizes the estimates were made with.
        confidence: interval level in (0, 1).
        n_batches: number of batch means of the guard (fewer when there are fewer steps).
        min_steps: fewest steps accepted.

    Returns:
        A :class:`NoiseScaleEstimate`.

    Raises:
        ValueError: bad arguments (lengths differ, non-finite values).
        InsufficientDataError: fewer than ``min_steps`` steps; a mean ``tr(Sigma)`` or ``|G|^2``
            that is not positive (the gradient is buried in noise); or steps too correlated for
            the window to support an interval. ``provisional`` holds the estimate that could be
            made (``b_simple = inf`` when the mean ``|G|^2`` is not positive), with the reason in
            its ``method``.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> g = 1.0 + 0.1 * rng.standard_normal(200)
        >>> tr = 50.0 + 5.0 * rng.standard_normal(200)
        >>> est = estimate_b_simple(g, tr)
        >>> bool(45 < est.b_simple < 55 and est.ci[0] < est.b_simple < est.ci[1])
        True

    References:
        Fieller 1954, "Some problems in interval estimation", JRSS B 16(2);
        Sokal 1997 (see :func:`integrated_time`); Bartlett 1946 and Marriott & Pope 1954 (see
        :func:`lag1_upper_bound`).
    """
    g = np.asarray(g_sq, dtype=np.float64).ravel()
    t = np.asarray(trace_sigma, dtype=np.float64).ravel()
    if g.shape != t.shape:
        raise ValueError(
            f"'g_sq' and 'trace_sigma' must have the same length. Got {g.size} and {t.size} instead."
        )
    if not (np.all(np.isfinite(g)) and np.all(np.isfinite(t))):
        raise ValueError("'g_sq' and 'trace_sigma' must be finite (drop skipped steps first).")
    confidence = check_probability("confidence", confidence)
    n_batches = check_positive_int("n_batches", n_batches, minimum=3)
    min_steps = check_positive_int("min_steps", min_steps, minimum=3)
    n = g.size
    if n == 0:
        raise InsufficientDataError("No usable steps: B_simple needs at least one measured step.")
    g_mean, t_mean = float(g.mean()), float(t.mean())
    point = t_mean / g_mean if g_mean > 0 else math.inf

    def provisional(reason: str) -> NoiseScaleEstimate:
        return NoiseScaleEstimate(point, (math.nan, math.nan), g_mean, t_mean, n, unit, confidence,
                                  f"{_PROVISIONAL}{reason}")

    if n < min_steps:
        raise InsufficientDataError(
            f"B_simple rests on {n} step(s); at least {min_steps} are needed for an interval. "
            f"Provisional value: {fmt_num(point)} {unit}. Measure more steps.",
            provisional(_TOO_FEW),
        )
    if t_mean <= 0:
        raise InsufficientDataError(
            f"The mean tr(Sigma) estimate over {n} steps is {t_mean:.3g} <= 0: the big-batch gradient is on "
            "average no smaller than the micro-batch gradients, which independent micro-batches rule out. "
            "Likely causes: the same examples in every micro-batch; .grad holding gradients from earlier steps "
            "(a missing optimizer.zero_grad()) or added outside backward; or a noise scale far below the "
            "micro-batch size (then use smaller micro-batches).",
            provisional(_TRACE_NOT_POSITIVE),
        )
    if g_mean <= 0:
        g_b = _batch_means(g, n_batches)
        t_stat = g_b.mean() / (g_b.std(ddof=1) / math.sqrt(g_b.size)) if g_b.std(ddof=1) > 0 else 0.0
        if t_stat < -3.0:
            raise InsufficientDataError(
                f"The mean |G|^2 estimate over {n} steps is {g_mean:.3g}, significantly below 0 (t = {t_stat:.1f}): "
                "the big-batch gradient is systematically smaller than its micro-batches allow, so .grad was "
                "shrunk after the micro-batch gradients were taken (gradient clipping or GradScaler.unscale_ "
                "before the measurement, or a loss scaler used in backward but not given to the monitor). "
                "Measure right after the last backward, and pass scaler= when using a GradScaler.",
                provisional(_G_NOT_RESOLVED),
            )
        raise InsufficientDataError(
            f"The mean |G|^2 estimate over {n} steps is {g_mean:.3g} <= 0: the true gradient is "
            "buried in noise at these batch sizes, so B_simple is unbounded. Measure more steps, "
            "use larger micro-batches, or more of them per step.",
            provisional(_G_NOT_RESOLVED),
        )
    z = t - point * g  # the Fieller pivot at the estimate; its mean is 0 at the true ratio
    tau_max, tau, why = _autocorrelation_times(g, t, z)
    if n < MIN_EFFECTIVE_STEPS * tau_max:
        raise InsufficientDataError(
            f"B_simple over {n} steps has no honest interval: {why}, which would leave fewer than "
            f"{MIN_EFFECTIVE_STEPS} effectively independent steps. Provisional value: {fmt_num(point)} {unit}. "
            "Measure more steps (independent steps need about 30; correlated ones, 4 autocorrelation times).",
            provisional(_CORRELATED),
        )
    lo, hi, method = _pivot_interval(g, t, z, confidence, n_batches, tau_max, tau)
    return NoiseScaleEstimate(point, (lo, hi), g_mean, t_mean, n, unit, confidence, method)


def windowed_estimates(
    steps,
    g_sq,
    trace_sigma,
    *,
    n_windows: int,
    unit: str = "examples",
    confidence: float = 0.95,
    min_steps: int = MIN_STEPS,
) -> list[dict]:
    """``B_simple`` over consecutive windows of steps: a noise-scale trace with intervals.

    The steps are cut into ``n_windows`` windows of (nearly) equal numbers of measured steps;
    each gets :func:`estimate_b_simple`. A window the data cannot support gets ``b_simple``
    ``None``, a ``note`` saying why (``"too few steps"``, ``"steps too correlated for an
    interval"``, ``"|G|^2 not resolved"``, ``"tr(Sigma) not positive"``) and the provisional
    value where one exists. A window whose interval has no upper end, or no bounds at all, says
    why in its ``note``.

    Returns:
        A list of dicts with ``step_start``, ``step_end`` (inclusive), ``n_steps``, ``b_simple``,
        ``ci`` (``[lo, hi]``, ``hi`` ``None`` when unbounded), ``unit`` and ``note``.
    """
    n_windows = check_positive_int("n_windows", n_windows)
    steps = np.asarray(steps)
    g = np.asarray(g_sq, dtype=np.float64)
    t = np.asarray(trace_sigma, dtype=np.float64)
    out = []
    for chunk in np.array_split(np.arange(steps.size), min(n_windows, max(steps.size, 1))):
        if chunk.size == 0:
            continue
        row = {"step_start": int(steps[chunk[0]]), "step_end": int(steps[chunk[-1]]),
               "n_steps": int(chunk.size), "unit": unit, "b_simple": None, "ci": [None, None], "note": ""}
        try:
            est = estimate_b_simple(g[chunk], t[chunk], unit=unit, confidence=confidence, min_steps=min_steps)
            row.update(b_simple=est.b_simple, ci=[_json_float(est.ci[0]), _json_float(est.ci[1])])
            row["note"] = est.method.partition("; ")[2]
        except InsufficientDataError as err:
            prov = err.provisional
            row["note"] = prov.method.removeprefix(_PROVISIONAL) if prov is not None else str(err)
            if prov is not None:
                row["provisional"] = _json_float(prov.b_simple)
        out.append(row)
    return out
