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

from .._format import fmt_num
from .._validation import check_positive_int, check_probability
from ..errors import InsufficientDataError

__all__ = [
    "unbiased_g_sq",
    "unbiased_trace_sigma",
    "BiasCorrectedEMA",
    "NoiseScaleEstimate",
    "estimate_b_simple",
    "MIN_STEPS",
    "windowed_estimates",
]

#: Fewest usable steps behind an estimate with an interval. Below this the bootstrap has too
#: little to resample and the interval would be a fiction.
MIN_STEPS = 10


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
        return (
            f"B_simple = {fmt_num(self.b_simple)} {self.unit} "
            f"({self.confidence:.0%} CI {fmt_num(lo)} to {fmt_num(hi)}; {self.n_steps} steps, {self.method})"
        )


def _json_float(x: float) -> float | None:
    return None if not math.isfinite(x) else float(x)


def _block_indices(n: int, block_len: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Moving-block bootstrap: ``(n_boot, n)`` indices made of random contiguous blocks."""
    n_blocks = -(-n // block_len)
    starts = rng.integers(0, n - block_len + 1, size=(n_boot, n_blocks))
    idx = starts[:, :, None] + np.arange(block_len)[None, None, :]
    return idx.reshape(n_boot, -1)[:, :n]


def estimate_b_simple(
    g_sq,
    trace_sigma,
    *,
    unit: str = "examples",
    confidence: float = 0.95,
    n_boot: int = 2000,
    block_len: int | None = None,
    min_steps: int = MIN_STEPS,
    seed: int | None = 0,
) -> NoiseScaleEstimate:
    """``B_simple`` over a window of steps, with a moving-block bootstrap interval.

    The point estimate is ``mean(trace_sigma) / mean(g_sq)``: numerator and denominator are
    averaged separately, then divided (McCandlish et al. 2018, App. A.1). The interval resamples
    whole steps in contiguous blocks of ``block_len`` (default ``ceil(n^(1/3))``), which keeps
    the correlation between neighbouring steps of a training run, recomputes the ratio of means
    for each resample and takes percentiles. Resamples whose mean ``|G|^2`` is not positive
    count as ``B_simple = inf``, so the upper end is ``inf`` when the gradient is not resolved.

    Args:
        g_sq: per-step unbiased ``|G|^2`` estimates (see :func:`unbiased_g_sq`).
        trace_sigma: per-step unbiased ``tr(Sigma)`` estimates, same length.
        unit: unit of the batch sizes the estimates were made with.
        confidence: interval level in (0, 1).
        n_boot: number of bootstrap resamples.
        block_len: bootstrap block length in steps.
        min_steps: fewest steps accepted.
        seed: seed of the bootstrap's random generator (results are reproducible).

    Returns:
        A :class:`NoiseScaleEstimate`.

    Raises:
        ValueError: bad arguments (lengths differ, non-finite values).
        InsufficientDataError: fewer than ``min_steps`` steps, or a mean ``|G|^2`` that is not
            positive (the gradient is buried in noise); ``provisional`` holds the estimate
            that could be made (``b_simple = inf`` in the second case).

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> g = 1.0 + 0.1 * rng.standard_normal(200)
        >>> tr = 50.0 + 5.0 * rng.standard_normal(200)
        >>> est = estimate_b_simple(g, tr)
        >>> 45 < est.b_simple < 55 and est.ci[0] < est.b_simple < est.ci[1]
        True
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
    n_boot = check_positive_int("n_boot", n_boot, minimum=100)
    min_steps = check_positive_int("min_steps", min_steps, minimum=2)
    n = g.size
    method = "moving-block bootstrap"
    if n == 0:
        raise InsufficientDataError("No usable steps: B_simple needs at least one measured step.")
    g_mean, t_mean = float(g.mean()), float(t.mean())
    point = t_mean / g_mean if g_mean > 0 else math.inf
    provisional = NoiseScaleEstimate(
        point, (math.nan, math.nan), g_mean, t_mean, n, unit, confidence, "none (provisional)"
    )
    if n < min_steps:
        raise InsufficientDataError(
            f"B_simple rests on {n} step(s); at least {min_steps} are needed for an interval. "
            f"Provisional value: {fmt_num(point)} {unit}. Measure more steps.",
            provisional,
        )
    if g_mean <= 0:
        raise InsufficientDataError(
            f"The mean |G|^2 estimate over {n} steps is {g_mean:.3g} <= 0: the true gradient is "
            "buried in noise at these batch sizes, so B_simple is unbounded. Measure more steps, "
            "use larger micro-batches, or more of them per step.",
            provisional,
        )
    if block_len is None:
        block_len = max(1, math.ceil(n ** (1.0 / 3.0)))
    block_len = min(check_positive_int("block_len", block_len), n)
    rng = np.random.default_rng(seed)
    idx = _block_indices(n, block_len, n_boot, rng)
    g_b = g[idx].mean(axis=1)
    t_b = t[idx].mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(g_b > 0, t_b / g_b, np.inf)
    alpha = 1.0 - confidence
    lo = float(np.quantile(ratio, alpha / 2, method="lower"))
    hi = float(np.quantile(ratio, 1 - alpha / 2, method="higher"))
    method = f"{method}, {n_boot} resamples, blocks of {block_len} steps"
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
    ``None`` and a ``note`` saying why, with the provisional value where one exists.

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
        except InsufficientDataError as err:
            prov = err.provisional
            row["note"] = "too few steps" if chunk.size < min_steps else "|G|^2 not resolved"
            if prov is not None:
                row["provisional"] = _json_float(prov.b_simple)
        out.append(row)
    return out
