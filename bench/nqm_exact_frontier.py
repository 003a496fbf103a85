"""Exact expected frontier and two-stage ramps of the issue-21 NQM setting (no sampling).

The NQM (dim 100, c_exponent 0.5; Zhang et al. 2019) with SGD, LR 0.066 at batch 8 moved by the
linear rule and capped at 0.75 x 2 / h_max = 1.5 (what ``batchlaw schedule compare`` uses), to
the target loss 0.05. The expected loss follows the exact second-moment recursion
``m_i' = (1 - a h_i)^2 m_i + a^2 c_i / B``; steps to the target are read where it crosses, as a
run reads its evaluations. Prints the frontier of constant batches and the Pareto gain of a few
two-stage ramps against it (allowance 1.1), including the issue's 128 -> 512 ramp, and the same
ramp with its first stage at LR 1.8 (above the linear rule's 1.056).

Usage: ``PYTHONPATH=src python bench/nqm_exact_frontier.py``
"""

from __future__ import annotations

import math

import numpy as np

from batchlaw.schedule.frontier import Frontier, pareto_gain
from batchlaw.workloads import NoisyQuadratic
from batchlaw.workloads.nqm import nqm_steps_to_target

WL = NoisyQuadratic(dim=100, c_exponent=0.5)
TARGET, CAP = 0.05, 0.75 * WL.max_stable_lr


def rule(batch: int) -> float:
    return min(0.066 * batch / 8, CAP)


def ramp(stages, lrs=None) -> tuple[float, float]:
    """Exact expected (steps, examples) of a staged ramp ``[(start examples, batch), ...]``."""
    h, c = WL.h, WL.c
    m = WL.theta0_sq.copy()
    steps, seen, prev = 0, 0, 0.5 * float((h * m).sum())
    for j, (_, batch) in enumerate(stages):
        end = stages[j + 1][0] if j + 1 < len(stages) else math.inf
        a = rule(batch) if lrs is None else lrs[j]
        while seen < end:
            m = (1 - a * h) ** 2 * m + a**2 * c / batch
            steps, seen = steps + 1, seen + batch
            loss = 0.5 * float((h * m).sum())
            if loss <= TARGET:
                f = (prev - TARGET) / (prev - loss)
                return steps - 1 + f, seen - batch + f * batch
            prev = loss
    raise RuntimeError("not reached")


def main() -> None:
    grid = [8 * 2**j for j in range(8)]
    steps = [nqm_steps_to_target(WL.h, WL.c, WL.theta0_sq, rule(b), b, TARGET) for b in grid]
    front = Frontier([s * b for s, b in zip(steps, grid)], steps, batches=grid)
    print(f"LR cap {CAP:g}; noise floor of LR/B = 0.00825: "
          f"{0.5 * float((WL.h * 0.066 * WL.c / (8 * WL.h * (2 - 0.066 * WL.h))).sum()):.4f}")
    print("exact frontier (batch, LR, steps, examples, on the frontier):")
    for b, s in zip(grid, steps):
        print(f"  {b:5d} {rule(b):6.3f} {s:8.1f} {s * b:9.0f} {'*' if b in front.batches else ''}")
    cases = [("128 -> 512 at 7,808 (issue 21)", [(0, 128), (7808, 512)], None),
             ("128 -> 512 at 7,808, first stage at LR 1.8", [(0, 128), (7808, 512)], [1.8, CAP]),
             ("128 -> 256 at 10,000", [(0, 128), (10_000, 256)], None),
             ("8 -> 128 at 4,000 -> 512 at 8,000", [(0, 8), (4000, 128), (8000, 512)], None)]
    print("two-stage ramps (steps, examples, Pareto gain at 1.1 x examples):")
    for name, stages, lrs in cases:
        s, e = ramp(stages, lrs)
        g = pareto_gain(s, e, front)
        print(f"  {name:<45} {s:6.1f} {e:8.0f} {g.value:+.3f}{'' if g.bound is None else ' (' + g.bound + ' bound)'}")
    print("constant batches at 1.1 x their examples:",
          [round(pareto_gain(s, s * b, front).value, 3) for s, b in zip(steps, grid)])
    assert np.isfinite(steps).all()


if __name__ == "__main__":
    main()
