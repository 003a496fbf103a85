"""Coverage of the ``B_simple`` interval on short, autocorrelated windows of steps.

    PYTHONPATH=src python bench/interval_coverage.py [--seeds 300] [--confidence 0.95]

Per-step estimates come from ``_synthetic_steps`` in tests/test_estimators.py: ``|G|^2`` (true 1,
noise 0.6) and ``tr(Sigma)`` (true 80, noise 16), each an AR(1) series with correlation ``rho``,
so the true ``B_simple`` is 80 examples. Two more kinds of window: ``drift``, what a training
run looks like, independent noise on ``|G|^2`` and ``tr(Sigma)`` that both fall 4x over the
window (as they do while the loss falls), so the ratio of their window means is still 80; and
``wander``, independent noise plus a slow AR(1) component (lag-1 correlation 0.95) carrying 30%
of the variance: correlation longer than short windows can see.

For each (rho, steps) cell, :func:`estimate_b_simple` runs on ``--seeds`` seeds; printed are how
many windows got an interval (the others were refused with ``InsufficientDataError``), the
coverage of the returned intervals, the share of those with no upper end, and the median and
mean width (examples) of the bounded ones.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_estimators import _synthetic_steps  # noqa: E402

from batchlaw.errors import InsufficientDataError  # noqa: E402
from batchlaw.noise.estimators import estimate_b_simple  # noqa: E402

TRUTH = 80.0  # tr_true / g_true of _synthetic_steps
RHOS = (0.0, 0.5, 0.8, 0.9, "drift", "wander")
STEPS = (20, 30, 50, 100, 200, 400)


def _steps(rng: np.random.Generator, n: int, rho) -> tuple[np.ndarray, np.ndarray]:
    if rho == "drift":
        level = np.exp(-np.log(4.0) * np.arange(n) / (n - 1))  # falls 4x over the window
        g, t = _synthetic_steps(rng, n, rho=0.0)
        return level * g, level * t  # ratio of the window means: 80 on average over seeds
    if rho == "wander":
        fast, slow = _synthetic_steps(rng, n, rho=0.0), _synthetic_steps(rng, n, rho=0.95)
        a, b = np.sqrt(0.7), np.sqrt(0.3)  # 30% of the variance in the slow component
        return tuple(mean + a * (f - mean) + b * (s - mean) for mean, f, s in zip((1.0, TRUTH), fast, slow))
    return _synthetic_steps(rng, n, rho=rho)


def cell(rho, n: int, seeds: int, confidence: float) -> dict:
    returned = covered = unbounded = 0
    widths = []
    for seed in range(seeds):
        g, t = _steps(np.random.default_rng(seed), n, rho)
        try:
            est = estimate_b_simple(g, t, confidence=confidence)
        except InsufficientDataError:
            continue
        lo, hi = est.ci
        returned += 1
        covered += lo <= TRUTH <= hi
        if math.isinf(hi):
            unbounded += 1
        else:
            widths.append(hi - lo)
    return {"returned": returned, "coverage": covered / returned if returned else math.nan,
            "unbounded": unbounded / returned if returned else math.nan,
            "median": float(np.median(widths)) if widths else math.nan,
            "mean": float(np.mean(widths)) if widths else math.nan}


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.1%}"


def _num(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=300)
    parser.add_argument("--confidence", type=float, default=0.95)
    args = parser.parse_args()
    t0 = time.perf_counter()
    print(f"{args.confidence:.0%} interval for B_simple (truth {TRUTH:g} examples), {args.seeds} seeds per cell")
    print("| rho | steps | intervals returned | coverage where returned | no upper end | median width | mean width |")
    print("|---|---|---|---|---|---|---|")
    for rho in RHOS:
        for n in STEPS:
            r = cell(rho, n, args.seeds, args.confidence)
            print(f"| {rho} | {n} | {r['returned']} | {_pct(r['coverage'])} | {_pct(r['unbounded'])} | "
                  f"{_num(r['median'])} | {_num(r['mean'])} |")
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
