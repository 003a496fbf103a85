"""The steps-vs-batch law and the critical batch size, with bootstrap intervals. No torch.

McCandlish et al. 2018 (arXiv:1812.06162, eq. 2.11): the number of optimizer steps ``S`` and of
training examples ``E = B S`` needed to reach a given loss trade off as
``(S/S_min - 1)(E/E_min - 1) = 1``, i.e.

    S(B) = S_min (1 + B_crit / B),        E(B) = E_min (1 + B / B_crit),       B_crit = E_min / S_min.

Below ``B_crit`` doubling the batch nearly halves the steps; above it, it barely helps.

Zhang et al. 2024 ("How Does Critical Batch Size Scale in Pre-training?", arXiv:2410.21676)
define the critical batch size as the batch at which reaching the target takes 20% more steps
than linear scaling from a small reference batch ``B0`` predicts. With ``S(B) = a + b/B``
(``a = S_min``, ``b = S_min B_crit``), solving ``a + b/B = 1.2 (a + b/B0) B0 / B`` gives

    CBS = 1.2 B0 + b / (5 a) = 1.2 B0 + B_crit / 5.

The fit minimises a Huber loss (``delta = 0.1``, i.e. 10% relative error) of the residuals
``log S_i - log S_min - log(1 + B_crit/B_i)``. ``log S_min`` is profiled out by iteratively
reweighted means on a fine grid of ``log B_crit``, which is vectorised over bootstrap
resamples; the point estimate is then polished with ``scipy.optimize.least_squares``.
Intervals: residual bootstrap (residuals rescaled by ``sqrt(n / (n - 2))``), percentiles in log
space widened about the estimate by ``t_{n-2} / z`` for small samples, and never excluding the
estimate itself. On 8 batch sizes with 5-15% noise the 95% intervals covered the true
``S_min`` and ``B_crit`` in >= 90% of seeds (tests/test_fit_steps.py).

Outliers: the Huber loss keeps the point estimate near the bulk, but a residual bootstrap
resamples the outlier's residual onto every point, and one cell of 1e308 steps put the
intervals 60 orders of magnitude away from the estimate. So a point whose log residual exceeds
``max(5 sigma, log 2)`` (``sigma`` = 1.4826 MAD of the residuals) is excluded and named in
``StepsFit.outliers`` (the fit is repeated until the set is stable); when that would leave
fewer than 3 batch sizes or under half the points, the fit is refused by name.

Lower bounds: a batch size whose runs did not reach the target within the budget (the median
over seeds is censored, science: "Censored runs") gives only ``S(B) > bound``. Passed with
``censored=True``, such a point has a one-sided residual ``max(0, log bound - log S(B))``: it
costs nothing while the law lies above the bound and pulls the law up when it would pass below.
Leaving it out would lose that information; entering the bound as a measurement would bias
``S(B)`` low exactly where the batch struggles. Lower bounds keep their value in every bootstrap
resample (the budget is fixed), residual scale and resampled residuals come from the measured
points, and the fit needs 3 measured batch sizes; a bound far above the law (by the outlier
rule above) is excluded as an outlier like any point.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize, stats

from .._format import fmt_num
from .._validation import check_positive_float, check_positive_int, check_positive_values, check_probability
from ..errors import InsufficientDataError
from .engine import huber, widened_interval

__all__ = ["StepsFit", "fit_steps_law", "zhang_cbs", "steps_law", "HUBER_DELTA", "OUTLIER_LOG_FACTOR"]

#: Huber threshold on log-steps residuals.
HUBER_DELTA = 0.1
#: a point further than this (in log steps) and 5 robust sigmas from the law is an outlier.
OUTLIER_LOG_FACTOR = math.log(2.0)
_GRID_DECADES = 2.0  # the B_crit grid extends this many decades beyond the measured batches
_GRID_POINTS = 401


def steps_law(batch_size, s_min: float, b_crit: float):
    """``S(B) = S_min (1 + B_crit / B)`` (McCandlish et al. 2018, eq. 2.11).

    Examples:
        >>> float(steps_law(100.0, s_min=1000.0, b_crit=100.0))
        2000.0
    """
    with np.errstate(over="ignore"):  # B_crit / B beyond the largest float is the law's infinite limit
        return s_min * (1.0 + b_crit / np.asarray(batch_size, dtype=np.float64))


def zhang_cbs(b_crit, reference_batch):
    """Zhang et al. 2024's critical batch size ``1.2 B0 + B_crit / 5`` (see the module docstring).

    Examples:
        >>> float(zhang_cbs(1000.0, 256.0))
        507.2
    """
    return 1.2 * reference_batch + np.asarray(b_crit) / 5.0


@dataclass(frozen=True)
class StepsFit:
    """A fitted steps-vs-batch law with intervals (all batch sizes in ``unit``).

    Attributes:
        s_min: fewest steps to the target (infinite batch).
        b_crit: ``E_min / S_min``, the McCandlish critical batch size.
        e_min: fewest examples (or tokens) to the target (batch -> 0).
        cbs: Zhang et al.'s 20%-over-linear critical batch size from ``reference_batch``.
        *_ci: ``(lo, hi)`` bootstrap intervals at level ``confidence``.
        n_points: number of (batch, steps) points fitted.
        residual_std: robust scale (1.4826 MAD) of the log-steps residuals.
        batch_range: smallest and largest batch size fitted.
        outliers: ``(batch_size, steps, factor)`` of each point excluded as an outlier, where
            ``factor`` is its steps over the law's prediction.
        lower_bounds: ``(batch_size, steps)`` of each point given as a lower bound
            (``censored``), outliers among them included; ``n_points`` counts the others.
    """

    s_min: float
    b_crit: float
    e_min: float
    cbs: float
    s_min_ci: tuple[float, float]
    b_crit_ci: tuple[float, float]
    e_min_ci: tuple[float, float]
    cbs_ci: tuple[float, float]
    reference_batch: float
    n_points: int
    residual_std: float
    batch_range: tuple[float, float]
    unit: str
    confidence: float
    n_boot: int
    outliers: tuple = ()
    lower_bounds: tuple = ()

    def predict_steps(self, batch_size):
        return steps_law(batch_size, self.s_min, self.b_crit)

    def predict_examples(self, batch_size):
        return np.asarray(batch_size, dtype=np.float64) * self.predict_steps(batch_size)

    def to_dict(self) -> dict:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = [list(x) if isinstance(x, tuple) else x for x in v]
        return d

    def __str__(self) -> str:
        def iv(v, ci):
            return f"{fmt_num(v)} ({self.confidence:.0%} CI {fmt_num(ci[0])} to {fmt_num(ci[1])})"

        return (
            f"B_crit = {iv(self.b_crit, self.b_crit_ci)} {self.unit}; S_min = {iv(self.s_min, self.s_min_ci)} steps; "
            f"E_min = {iv(self.e_min, self.e_min_ci)} {self.unit}; "
            f"CBS (20% over linear from B0 = {fmt_num(self.reference_batch)}) = {iv(self.cbs, self.cbs_ci)} {self.unit}"
            + (f"; lower bounds (the median over seeds did not reach the target): "
               f"{_bound_text(self.lower_bounds, self.unit)}"
               if self.lower_bounds else "")
            + (f"; excluded as outliers: {_outlier_text(self.outliers, self.unit, self.lower_bounds)}"
               if self.outliers else "")
        )


def _bound_text(bounds, unit: str) -> str:
    return ", ".join(f"batch {fmt_num(b)} {unit} > {fmt_num(s)} steps" for b, s in bounds)


def _outlier_text(outliers, unit: str, bounds=()) -> str:
    bound = {(float(b), float(s)) for b, s in bounds}
    return ", ".join(f"batch {fmt_num(b)} {unit} ({'> ' if (b, s) in bound else ''}{fmt_num(s)} steps, "
                     f"{fmt_num(f)}x the law)" for b, s, f in outliers)


def _one_sided(r: np.ndarray, cens: np.ndarray) -> np.ndarray:
    """Residuals with those of lower bounds (``cens``, last axis) kept only where positive."""
    return np.where(cens, np.maximum(r, 0.0), r)


def _weights(r: np.ndarray, cens: np.ndarray, delta: float) -> np.ndarray:
    """IRLS weights ``psi(r) / r`` of the Huber loss; a lower bound the law lies above weighs nothing."""
    w = np.minimum(1.0, delta / np.maximum(np.abs(r), 1e-12))
    return np.where(cens & (r <= 0.0), 0.0, w)


def _profile_fit(log_b: np.ndarray, y: np.ndarray, grid: np.ndarray, delta: float,
                 cens: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Huber fit of ``y = c + log(1 + exp(g - log_b))`` for many datasets at once.

    Args:
        log_b: (n,) log batch sizes.
        y: (m, n) log steps, one row per dataset.
        grid: (G,) candidate ``log B_crit``.
        cens: (n,) ``True`` where ``y`` is a lower bound (one-sided residual); default none.

    Returns:
        ``(log_s_min, log_b_crit)``, each (m,), refined by a parabola through the grid minimum.
    """
    cens = np.zeros(log_b.size, dtype=bool) if cens is None else cens
    f = np.logaddexp(0.0, grid[:, None] - log_b[None, :])  # (G, n): log(1 + B_crit/B)
    r0 = y[:, None, :] - f[None, :, :]  # (m, G, n) = log S_min + residual
    c = np.median(r0[..., ~cens], axis=2)  # (m, G)
    for _ in range(8 if not cens.any() else 20):  # IRLS for the Huber location
        w = _weights(r0 - c[..., None], cens, delta)
        c = (w * r0).sum(2) / w.sum(2)
    loss = huber(_one_sided(r0 - c[..., None], cens), delta).sum(2)  # (m, G)
    j = np.clip(loss.argmin(axis=1), 1, grid.size - 2)
    rows = np.arange(y.shape[0])
    l0, l1, l2 = loss[rows, j - 1], loss[rows, j], loss[rows, j + 1]
    denom = l0 - 2 * l1 + l2
    shift = np.where(denom > 0, 0.5 * (l0 - l2) / np.where(denom > 0, denom, 1.0), 0.0)
    step = grid[1] - grid[0]
    g_best = grid[j] + np.clip(shift, -1.0, 1.0) * step
    f_best = np.logaddexp(0.0, g_best[:, None] - log_b[None, :])
    c_best = c[rows, j]
    for _ in range(20):
        w = _weights(y - f_best - c_best[:, None], cens, delta)
        c_best = (w * (y - f_best)).sum(1) / w.sum(1)
    return c_best, g_best


def _validate(batch_sizes, steps, censored) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    b = np.asarray(batch_sizes, dtype=np.float64).ravel()
    s = np.asarray(steps, dtype=np.float64).ravel()
    if b.shape != s.shape:
        raise ValueError(f"'batch_sizes' and 'steps' must have the same length. Got {b.size} and {s.size}.")
    if censored is None:
        cens = np.zeros(b.size, dtype=bool)
    else:
        cens = np.asarray(censored).ravel()
        if cens.shape != b.shape or cens.dtype != bool:
            raise ValueError(f"The 'censored' parameter must hold one boolean per batch size ({b.size}). "
                             f"Got {censored!r} instead.")
    for name, arr in (("batch_sizes", b), ("steps", s)):
        check_positive_values(name, arr)
    n_distinct = np.unique(b[~cens]).size
    if n_distinct < 3:
        bounds = (f" besides {int(cens.sum())} lower bound(s), which cannot fix the law alone: raise --max-steps "
                  "so that more batch sizes reach the target" if cens.any() else "")
        raise InsufficientDataError(
            f"The steps-vs-batch law needs at least 3 distinct batch sizes that reached the target; got {n_distinct} "
            f"({sorted(set(b[~cens].tolist()))}){bounds}. Add batch sizes to the sweep."
        )
    bm, sm = b[~cens], s[~cens]  # measured points: a bound far off the law is judged as an outlier later
    rho = stats.spearmanr(bm, sm).statistic if np.ptp(sm) > 0 else 0.0
    if not rho < 0:
        raise InsufficientDataError(
            f"Steps to target do not decrease with batch size (Spearman correlation {rho:.2f}): "
            "every batch measured is past the critical batch size, or the runs did not reach a "
            "comparable target. Measure smaller batch sizes or check the target loss."
        )
    return b, s, cens


def _point_fit(b: np.ndarray, s: np.ndarray, cens: np.ndarray, at: np.ndarray | None = None) -> np.ndarray:
    """Huber fit of the law (profile grid only); returns the predicted steps at ``at`` (default ``b``)."""
    log_b = np.log(b)
    grid = np.linspace(log_b.min() - _GRID_DECADES * math.log(10), log_b.max() + _GRID_DECADES * math.log(10),
                       _GRID_POINTS)
    c, g = _profile_fit(log_b, np.log(s)[None, :], grid, HUBER_DELTA, cens)
    at = b if at is None else at
    with np.errstate(over="ignore"):
        return np.exp(c[0] + np.logaddexp(0.0, g[0] - np.log(at)))


def _inliers(b: np.ndarray, s: np.ndarray, cens: np.ndarray) -> np.ndarray:
    """Mask of the points that are not outliers (see the module docstring); a lower bound is one
    only when it lies far above the law."""
    keep = np.ones(b.size, dtype=bool)
    for _ in range(5):
        if np.unique(b[keep & ~cens]).size < 3:
            break
        r = np.log(s) - np.log(_point_fit(b[keep], s[keep], cens[keep], b))
        measured = keep & ~cens
        center = np.median(r[measured])
        sigma = 1.4826 * np.median(np.abs(r[measured] - center))
        r = np.where(cens, np.maximum(r, center), r)
        new = np.abs(r - center) <= max(5.0 * sigma, OUTLIER_LOG_FACTOR)
        if (new == keep).all():
            break
        keep = new
    return keep


def fit_steps_law(
    batch_sizes,
    steps,
    *,
    censored=None,
    reference_batch: float | None = None,
    unit: str = "examples",
    confidence: float = 0.95,
    n_boot: int = 1000,
    seed: int | None = 0,
) -> StepsFit:
    """Fit ``S(B) = S_min (1 + B_crit/B)`` to steps-to-target, with bootstrap intervals.

    Args:
        batch_sizes: batch size of each run (examples or tokens: ``unit``).
        steps: optimizer steps each run took to reach the target.
        censored: one boolean per point, ``True`` where ``steps`` is only a lower bound (the run,
            or the median over seeds, did not reach the target within that many steps); see the
            module docstring. Default: every point measured.
        reference_batch: ``B0`` for Zhang et al.'s CBS (default: the smallest batch size).
        unit: unit of ``batch_sizes``.
        confidence: interval level.
        n_boot: bootstrap resamples.
        seed: bootstrap seed (results are reproducible).

    Returns:
        A :class:`StepsFit`.

    Raises:
        ValueError: non-positive or non-finite values, lengths that differ.
        InsufficientDataError: fewer than 3 measured batch sizes, steps that do not fall with batch, a
            ``B_crit`` outside the measured range by more than a factor of 10 (the data show no
            bend), or outliers that leave too few points; ``provisional`` carries the fit where
            there is one.

    Examples:
        >>> b = np.array([8, 16, 32, 64, 128, 256])
        >>> fit = fit_steps_law(b, steps_law(b, 1000.0, 64.0), n_boot=200)
        >>> round(fit.b_crit), round(fit.s_min)
        (64, 1000)
    """
    b_all, s_all, c_all = _validate(batch_sizes, steps, censored)
    confidence = check_probability("confidence", confidence)
    n_boot = check_positive_int("n_boot", n_boot, minimum=100)
    b0 = float(b_all.min()) if reference_batch is None else check_positive_float("reference_batch", reference_batch)
    if b0 > b_all.max():
        raise ValueError(
            f"The 'reference_batch' (B0 = {fmt_num(b0)}) is above every batch size measured (largest "
            f"{fmt_num(float(b_all.max()))}): the CBS, 20% over linear scaling from B0, would lie beyond the data. "
            "Give a batch size where scaling is still close to linear (the smallest measured, the default).")
    keep = _inliers(b_all, s_all, c_all)
    outliers = tuple((float(bb), float(ss), float(ff)) for bb, ss, ff in zip(
        b_all[~keep], s_all[~keep], s_all[~keep] / _point_fit(b_all[keep], s_all[keep], c_all[keep], b_all[~keep])))
    bounds = tuple((float(bb), float(ss)) for bb, ss in zip(b_all[c_all], s_all[c_all]))
    if outliers and (np.unique(b_all[keep & ~c_all]).size < 3 or 2 * keep.sum() < keep.size):
        raise InsufficientDataError(
            f"Too many points lie far from S(B) = S_min (1 + B_crit/B) to tell outliers from the law: "
            f"{_outlier_text(outliers, unit, bounds)}. Check those runs (a stalled or mis-logged run?) or measure "
            "more batch sizes.")
    b, s, cens = b_all[keep], s_all[keep], c_all[keep]
    log_b, y = np.log(b), np.log(s)
    grid = np.linspace(log_b.min() - _GRID_DECADES * math.log(10), log_b.max() + _GRID_DECADES * math.log(10),
                       _GRID_POINTS)
    c0, g0 = _profile_fit(log_b, y[None, :], grid, HUBER_DELTA, cens)
    sol = optimize.least_squares(
        lambda p: _one_sided(y - p[0] - np.logaddexp(0.0, p[1] - log_b), cens),
        x0=[c0[0], float(np.clip(g0[0], grid[0] + 1e-9, grid[-1] - 1e-9))],
        loss="huber", f_scale=HUBER_DELTA, bounds=([-np.inf, grid[0]], [np.inf, grid[-1]]),
    )
    log_s_min, log_b_crit = sol.x
    s_min, b_crit = math.exp(log_s_min), math.exp(log_b_crit)
    fitted = log_s_min + np.logaddexp(0.0, log_b_crit - log_b)
    resid = (y - fitted)[~cens]
    n = resid.size
    resid_std = float(1.4826 * np.median(np.abs(resid - np.median(resid))))

    def make(ci_s, ci_b, ci_e, ci_c, nb):
        return StepsFit(s_min, b_crit, s_min * b_crit, float(zhang_cbs(b_crit, b0)), ci_s, ci_b, ci_e, ci_c,
                        b0, n, resid_std, (float(b.min()), float(b.max())), unit, confidence, nb, outliers, bounds)

    nan2 = (math.nan, math.nan)
    if b_crit / 10 > b.max() or b_crit < b.min() / 10:
        where = "above the largest" if b_crit > b.max() else "below the smallest"
        raise InsufficientDataError(
            f"The fitted B_crit = {fmt_num(b_crit)} {unit} lies far {where} batch size measured "
            f"({fmt_num(b.min())} to {fmt_num(b.max())}): the data show no bend in steps vs batch, so "
            "B_crit is not determined. Extend the batch sizes towards it.",
            make(nan2, nan2, nan2, nan2, 0),
        )

    rng = np.random.default_rng(seed)
    scaled = (resid - resid.mean()) * math.sqrt(n / max(n - 2, 1))
    y_boot = np.broadcast_to(y, (n_boot, y.size)).copy()  # lower bounds keep their value
    y_boot[:, ~cens] = fitted[~cens][None, :] + rng.choice(scaled, size=(n_boot, n), replace=True)
    c_b, g_b = _profile_fit(log_b, y_boot, grid, HUBER_DELTA, cens)
    s_b, bc_b = np.exp(c_b), np.exp(g_b)

    def ci(x, point):
        lo, hi = widened_interval(x, point, confidence, n - 2)
        return min(lo, point), max(hi, point)  # an estimate never lies outside its own interval

    cbs = float(zhang_cbs(b_crit, b0))
    return make(ci(s_b, s_min), ci(bc_b, b_crit), ci(s_b * bc_b, s_min * b_crit), ci(zhang_cbs(bc_b, b0), cbs), n_boot)
