"""Coverage of the profile-likelihood interval of a prediction (:func:`batchlaw.fit.engine.profile_prediction`).

    PYTHONPATH=src python bench/profile_coverage.py [--line-seeds 200] [--power-seeds 100]

Each case is simulated from a known law with Gaussian noise on ``log y``, fitted with the engine's
Huber loss (threshold 1e-3), and the 95% profile interval of the law's value at ``x0`` (t quantile
on ``n - p`` degrees of freedom) is checked against the true value there.

- Straight line ``log y = 0.3 - 0.7 x``, 25 points with ``x`` uniform in [0, 1], predicted inside
  (``x0 = 0.5``) and outside (``x0 = 3``) the data, with noise far below the Huber threshold
  (the loss is the squared error: the interval should be the textbook t interval), about at it,
  and far above it (the loss is close to absolute deviations). "width / t" is the mean
  half-width over the least-squares t interval's on the same points; for absolute deviations
  it should approach ``sqrt(pi / 2) = 1.25`` (the median's efficiency under Gaussian noise).
- The same line with one point moved up by 20 noise standard deviations: "width / t" is then
  over the half-width without the outlier (a robust fit's interval should barely move).
- Power law ``L = 2 + 5 t^-0.3``, 30 points log-spaced on t in [100, 2000], predicted at
  t = 8,000, refitted from the fit's grid of 12 starts.

Printed: coverage (cases), mean half-width in log units, the width ratio, and the mean
asymmetry ``|below - above| / (below + above)``.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from scipy import stats

from batchlaw.fit.engine import Law, fit_law, profile_prediction
from batchlaw.fit.laws import saturating_law

CONFIDENCE = 0.95


def line_law() -> Law:
    """``log y = a + b x`` on the engine."""

    def predict(theta, X):
        return theta[:, :1] + theta[:, 1:2] * X[:, 0][None, :]

    def jac(theta, X):
        return np.broadcast_to(np.stack([np.ones(X.shape[0]), X[:, 0]], -1), (theta.shape[0], X.shape[0], 2)).copy()

    return Law("line", ("a", "b"), predict, jac, lambda th: {"a": th[:, 0], "b": th[:, 1]}, ((None, None),) * 2)


def _t(dof: int) -> float:
    return float(stats.t.ppf(1 - (1 - CONFIDENCE) / 2, dof))


def line_case(seed: int, sigma: float, x0: float, outlier: float = 0.0, n: int = 25) -> dict:
    """One simulated line: inside or not, the sides, and the least-squares t half-width."""
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(0, 1, n))
    logy = 0.3 - 0.7 * x + sigma * rng.standard_normal(n)
    if outlier:
        logy[n // 2] += outlier
    law, X, at = line_law(), x[:, None], np.array([[x0]])
    fit = fit_law(law, X, logy, starts=np.zeros((1, 2)), n_boot=0)
    t = _t(n - 2)
    below, above = profile_prediction(law, X, logy, fit.theta, at, critical=t * t)
    lp = float(law.predict_log(fit.theta[None, :], at)[0, 0])
    D = np.column_stack([np.ones(n), x])
    resid = logy - D @ np.linalg.lstsq(D, logy, rcond=None)[0]
    c = np.array([1.0, x0])
    t_half = t * math.sqrt(resid @ resid / (n - 2) * c @ np.linalg.inv(D.T @ D) @ c)
    truth = 0.3 - 0.7 * x0
    return {"inside": lp - below <= truth <= lp + above, "below": below, "above": above, "t_half": t_half}


def power_case(seed: int, sigma: float, n: int = 30) -> dict:
    """One simulated power-law curve, predicted at t = 8,000."""
    rng = np.random.default_rng(seed)
    steps = np.geomspace(100, 2000, n)

    def truth(s):
        return np.log(2.0 + 5.0 * s**-0.3)

    logy = truth(steps) + sigma * rng.standard_normal(n)
    law, X, at = saturating_law(), np.log(steps)[:, None], np.array([[math.log(8000.0)]])
    ymin = float(np.exp(logy.min()))
    starts = np.array([(math.log(ymin * f), math.log(ymin) + al * X[:, 0].mean(), al)
                       for f in (0.2, 0.5, 0.8, 0.95) for al in (0.2, 0.5, 1.0)])
    fit = fit_law(law, X, logy, starts=starts, n_boot=0)
    t = _t(n - 3)
    below, above = profile_prediction(law, X, logy, fit.theta, at, critical=t * t, starts=starts)
    lp = float(law.predict_log(fit.theta[None, :], at)[0, 0])
    return {"inside": lp - below <= float(truth(8000.0)) <= lp + above, "below": below, "above": above}


def _row(label: str, res: list, ref: list | None = None) -> str:
    b, a = np.array([r["below"] for r in res]), np.array([r["above"] for r in res])
    half = (b + a) / 2
    ratio = "-"
    if ref is not None:
        ratio = f"{np.mean(half / np.array(ref)):.2f}"
    asym = np.mean(np.abs(b - a) / np.maximum(b + a, 1e-300))
    cover = np.mean([r["inside"] for r in res])
    return f"| {label} | {cover:.1%} ({len(res)}) | {half.mean():.3g} | {ratio} | {asym:.2f} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--line-seeds", type=int, default=200)
    ap.add_argument("--power-seeds", type=int, default=100)
    args = ap.parse_args()
    t0 = time.perf_counter()
    print("| case | coverage (cases) | mean half-width (log) | width / t | asymmetry |")
    print("|---|---|---|---|---|")
    seeds = range(args.line_seeds)
    for sigma in (2e-5, 1e-3, 1e-2):
        for x0 in (0.5, 3.0):
            res = [line_case(s, sigma, x0) for s in seeds]
            print(_row(f"line, noise {sigma:g}, x0 = {x0:g}", res, [r["t_half"] for r in res]), flush=True)
    clean = [line_case(s, 1e-2, 3.0) for s in seeds]
    dirty = [line_case(s, 1e-2, 3.0, outlier=0.2) for s in seeds]
    print(_row("line, noise 0.01, x0 = 3, one outlier +0.2 (width / without it)", dirty,
               [(r["below"] + r["above"]) / 2 for r in clean]), flush=True)
    for sigma in (1e-3, 5e-3, 2e-2):
        res = [power_case(s, sigma) for s in range(args.power_seeds)]
        print(_row(f"power law, noise {sigma:g}, t = 8,000", res), flush=True)
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
