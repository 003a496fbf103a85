"""Backtests of learning-curve extrapolation on realistic curves: error and interval coverage.

    PYTHONPATH=src python bench/curve_backtest.py [--seeds 20] [--bootstrap 200] [--multipower-seeds 10]
        [--laws power,tissue,multipower]

Curves come from tests/realistic.py: the multi-power law (Luo et al. 2025) under constant, cosine
and WSD schedules (8,000 steps, 300 warmup, logged every 25), AR(1) noise (coefficient 0.9, 0.4%
relative) as an EMA-smoothed loss has.

- Single runs (:func:`realistic_curve`): each law is fitted on the first 25% or 50% of the steps
  and predicts the final loss. Points before twice the warmup are left out (the power law is told
  the warmup's length; the others read it from the schedule).
- Stable phase plus a cooldown (:func:`cooldown_fit_inputs`): a WSD run logged to step 4,000
  (stable phase only) and an 800-step cooldown branched from its step-2,000 checkpoint, fitted
  together; predicted: the final loss of the full WSD run (decay over its last 1,600 steps).

Printed: the median signed and mean absolute relative error, the coverage of the 95% predictive
interval, its mean half-width, how often the law refused (no LR decay in the fitted part), and
the seconds per fit. The multi-power law is slower (seven parameters, a sum over every LR drop,
profiled over its shape parameters and its prediction), so it runs on ``--multipower-seeds`` seeds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from realistic import cooldown_fit_inputs, realistic_curve  # noqa: E402

from batchlaw.errors import InsufficientDataError  # noqa: E402
from batchlaw.fit.curves import Schedule, backtest_curve, fit_curve, predict_curve  # noqa: E402

WARMUP = 300  # realistic_curve's warmup (tests/realistic.py lr_schedule)


def _cooldown(seed: int, law: str, n_boot: int) -> dict:
    steps, loss, run, lrs, final = cooldown_fit_inputs(np.random.default_rng(seed))
    schedules = {k: Schedule(np.arange(1, v.size + 1), v) for k, v in lrs.items()}
    fit = fit_curve(steps, loss, law=law, run=run, schedules=schedules, n_boot=n_boot)
    pred = predict_curve(fit, lrs["wsd"].size, run="wsd")
    lo, hi = pred["interval"]
    return {"rel_error": pred["loss"] / final - 1, "inside": lo <= final <= hi, "interval": [lo, hi],
            "predicted": pred["loss"]}


def _row(label: str, results: list, refused: int, seconds: float) -> str:
    if not results:
        return f"| {label} | - | - | - | - | {refused} | - |"
    e = np.array([r["rel_error"] for r in results])
    cover = np.mean([r["inside"] for r in results])
    width = np.mean([(r["interval"][1] - r["interval"][0]) / 2 / r["predicted"] for r in results])
    return (f"| {label} | {np.median(e):+.2%} | {np.mean(np.abs(e)):.2%} | {cover:.0%} ({len(results)}) | "
            f"{width:.2%} | {refused} | {seconds / (len(results) + refused):.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--multipower-seeds", type=int, default=10)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--laws", default="power,tissue,multipower", help="comma-separated laws to run")
    args = ap.parse_args()
    laws = args.laws.split(",")
    print("| schedule | law | fitted on | median error | mean abs error | coverage (curves) | mean half-width | "
          "refused | s per fit |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind in ("constant", "cosine", "wsd"):
        for law in laws:
            for frac in (0.25, 0.5):
                if law == "multipower" and (kind == "constant" or frac == 0.25):
                    continue  # no decay to learn from (constant), or refused like tissue (first quarter)
                seeds = args.multipower_seeds if law == "multipower" else args.seeds
                results, refused, t0 = [], 0, time.perf_counter()
                for seed in range(seeds):
                    st, lr, loss = realistic_curve(np.random.default_rng(seed), kind)
                    try:
                        # the power law gets no LR column, only the warmup's length (as --warmup-steps)
                        results.append(backtest_curve(st, loss, lr=None if law == "power" else lr, law=law,
                                                      fraction=frac, n_boot=args.bootstrap,
                                                      warmup_steps=WARMUP if law == "power" else None))
                    except InsufficientDataError:
                        refused += 1
                print(_row(f"{kind} | {law} | first {frac:.0%}", results, refused, time.perf_counter() - t0),
                      flush=True)
    for law in [w for w in laws if w != "power"]:
        seeds = args.multipower_seeds if law == "multipower" else args.seeds
        t0 = time.perf_counter()
        results = [_cooldown(seed, law, args.bootstrap) for seed in range(seeds)]
        print(_row(f"wsd | {law} | stable half + 800-step cooldown", results, 0, time.perf_counter() - t0), flush=True)


if __name__ == "__main__":
    main()
