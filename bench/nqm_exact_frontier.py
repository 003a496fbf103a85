"""Exact expected frontier and two-stage ramps of the issue-21 NQM setting (no sampling).

The NQM (dim 100, c_exponent 0.5; Zhang et al. 2019) with SGD, LR 0.066 at batch 8 moved by the
linear rule and capped at 0.75 x 2 / h_max = 1.5 (what ``batchlaw schedule compare`` uses), to
the target loss 0.05. The expected loss follows the exact second-moment recursion
``m_i' = (1 - a h_i)^2 m_i + a^2 c_i / B``; steps to the target are read where it crosses, as a
run reads its evaluations. Prints the frontier of constant batches and the Pareto gain of a few
two-stage ramps against it (allowance 1.1), including the issue's 128 -> 512 ramp, and the same
ramp with its first stage at LR 1.8 (above the linear rule's 1.056).

It also searches for the best schedule (every schedule of the search follows the same capped rule):
against the frontier of **every** constant batch from 8 to 1,024 (not only the powers of two), it
scores (a) greedy schedules, which at each step take the batch (57 sizes, geometric from 8 to
1,024) that maximises the expected-loss progress per cost ``1 + lambda B`` (the Lagrangian of
steps plus ``lambda`` examples; ``lambda`` over six decades, progress in loss or in log loss, the
batch free or never shrinking), and (b) every two- and three-stage ramp over the powers of two with
switches on a grid of examples.

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


def dense_frontier() -> Frontier:
    """The exact frontier of every constant batch from 8 to 1,024 under the capped rule."""
    batches = list(range(8, 1025))
    steps = [nqm_steps_to_target(WL.h, WL.c, WL.theta0_sq, rule(b), b, TARGET) for b in batches]
    return Frontier([s * b for s, b in zip(steps, batches)], steps, batches=batches)


def greedy(lam: float, log_progress: bool, monotone: bool, choices: np.ndarray) -> tuple[float, float] | None:
    """Expected (steps, examples) of the greedy schedule: each step the batch with the most progress per
    ``1 + lam B``; ``None`` if it stalls."""
    h, c, lrs = WL.h, WL.c, np.array([rule(int(b)) for b in choices])
    m, lo = WL.theta0_sq.copy(), 0
    loss, steps, seen = 0.5 * float((h * m).sum()), 0, 0
    while steps < 5000:
        nxt = (1 - lrs[lo:, None] * h) ** 2 * m + lrs[lo:, None] ** 2 * c / choices[lo:, None]
        losses = 0.5 * (nxt * h).sum(1)
        progress = np.log(loss) - np.log(losses) if log_progress else loss - losses
        j = int(np.argmax(progress / (1 + lam * choices[lo:])))
        if progress[j] <= 0:
            return None
        b = int(choices[lo + j])
        if losses[j] <= TARGET:
            f = (loss - TARGET) / (loss - losses[j])
            return steps + f, seen + f * b
        lo = lo + j if monotone else 0
        m, loss, steps, seen = nxt[j], float(losses[j]), steps + 1, seen + b
    return None


def best_schedules(front: Frontier) -> None:
    """The best greedy schedule and the best two- and three-stage ramps against ``front``."""
    choices = np.unique(np.round(8 * 2 ** np.linspace(0, 7, 57)).astype(int))
    found = []
    for log_progress in (False, True):
        for monotone in (True, False):
            for lam in np.logspace(-5, 1, 49):
                res = greedy(lam, log_progress, monotone, choices)
                if res is not None:
                    g = pareto_gain(*res, front)
                    found.append((g.value if g.bound is None else -math.inf, res, lam, log_progress, monotone))
    g, (s, e), lam, logp, mono = max(found, key=lambda x: x[0])
    print(f"best greedy schedule of {len(found)}: gain {g:+.3f} ({s:.1f} steps, {e:,.0f} examples; lambda {lam:.3g}, "
          f"progress in {'log ' if logp else ''}loss, {'never shrinking' if mono else 'free'})")
    pow2 = [8 * 2**j for j in range(8)]
    ramps = [[(0, b1), (sw, b2)] for b1 in pow2 for b2 in pow2 if b2 > b1 for sw in range(500, 20_000, 250)]
    ramps += [[(0, b1), (s1, b2), (s2, b3)] for b1 in (64, 128, 256) for b2 in (256, 512) for b3 in (512, 1024)
              if b1 < b2 < b3 for s1 in range(1000, 16_000, 1000) for s2 in range(s1 + 1000, 20_000, 1000)]
    scored = []
    for stages in ramps:
        try:
            s, e = ramp(stages)
        except RuntimeError:
            continue
        g = pareto_gain(s, e, front)
        if g.bound is None:
            scored.append((g.value, s, e, stages))
    scored.sort(key=lambda x: -x[0])
    print(f"best ramps of {len(scored)} (two and three stages, powers of two):")
    for g, s, e, stages in scored[:3]:
        print(f"  {stages}: gain {g:+.3f} ({s:.1f} steps, {e:,.0f} examples)")
    s, e = ramp([(0, 128), (12_250, 512)])
    print(f"  for comparison, constant 128: {front.steps_at(17_261).value:.1f} steps at 17,261 examples; the ramp "
          f"128 -> 512 at 12,250 takes {s:.1f} steps and {e:,.0f} examples, fewer of both")


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
    dense = dense_frontier()
    print(f"\nagainst every constant batch from 8 to 1,024 ({len(dense)} on the frontier):")
    for name, stages, lrs in cases[:3]:
        s, e = ramp(stages, lrs)
        g = pareto_gain(s, e, dense)
        print(f"  {name:<45} {g.value:+.3f}{'' if g.bound is None else ' (' + g.bound + ' bound)'}")
    best_schedules(dense)


if __name__ == "__main__":
    main()
