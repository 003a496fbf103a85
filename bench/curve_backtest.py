"""Backtests of learning-curve extrapolation on realistic curves: error and interval coverage.

    PYTHONPATH=src python bench/curve_backtest.py [--seeds 20] [--bootstrap 200]

Curves come from tests/realistic.py (:func:`realistic_curve`): the multi-power law (Luo et al.
2025) under constant, cosine and WSD schedules (8,000 steps, 300 warmup, logged every 25),
AR(1) noise (coefficient 0.9, 0.4% relative) as an EMA-smoothed loss has. Each law is fitted on
the first 25% or 50% of the steps and predicts the final loss; printed: the median signed and
mean absolute relative error, the coverage of the 95% predictive interval, its mean half-width,
and how often the schedule-aware law refused (no LR decay in the fitted part).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from realistic import realistic_curve  # noqa: E402

from batchlaw.errors import InsufficientDataError  # noqa: E402
from batchlaw.fit.curves import backtest_curve  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--bootstrap", type=int, default=200)
    args = ap.parse_args()
    print("| schedule | law | fitted on | median error | mean abs error | coverage | mean half-width | refused |")
    print("|---|---|---|---|---|---|---|---|")
    for kind in ("constant", "cosine", "wsd"):
        for law in ("power", "schedule"):
            for frac in (0.25, 0.5):
                errs, inside, width, refused = [], 0, [], 0
                for seed in range(args.seeds):
                    st, lr, loss = realistic_curve(np.random.default_rng(seed), kind)
                    try:
                        bt = backtest_curve(st, loss, lr=lr if law == "schedule" else None, fraction=frac,
                                            n_boot=args.bootstrap)
                    except InsufficientDataError:
                        refused += 1
                        continue
                    errs.append(bt["rel_error"])
                    inside += bt["inside"]
                    width.append((bt["interval"][1] - bt["interval"][0]) / 2 / bt["predicted"])
                k = len(errs)
                if k:
                    e = np.array(errs)
                    print(f"| {kind} | {law} | first {frac:.0%} | {np.median(e):+.2%} | {np.mean(np.abs(e)):.2%} | "
                          f"{inside / k:.0%} | {np.mean(width):.2%} | {refused} |")
                else:
                    print(f"| {kind} | {law} | first {frac:.0%} | - | - | - | - | {refused} |")


if __name__ == "__main__":
    main()
