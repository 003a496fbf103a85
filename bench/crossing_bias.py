"""Bias of the rules that read a target crossing between evaluations, on exact learning curves.

    PYTHONPATH=src python bench/crossing_bias.py

For each curve and evaluation spacing, 60 targets are placed so that the true crossing falls at
log-uniform steps from 20 to 2,000; each rule reads the crossing from the evaluations up to the
first at or below the target (crossings in the first interval after step 0 are left out: every
rule is linear there). Printed as a Markdown table, per rule: the mean relative error (positive:
the crossing is read late), the mean absolute relative error and the largest one.

Rules: linear in steps; linear in log-steps (batchlaw's trials before 2026-12); log-loss linear
in log-steps (a power law without offset through two points); ``a + b t^p`` through three
points (:func:`batchlaw._crossing.crossing_step`, the rule batchlaw uses everywhere).
"""

from __future__ import annotations

import math

import numpy as np

from batchlaw._crossing import crossing_step


def linear(t, y, target):
    (t0, t1), (l0, l1) = t[-2:], y[-2:]
    return t0 + (l0 - target) / (l0 - l1) * (t1 - t0)


def log_step(t, y, target):
    (t0, t1), (l0, l1) = t[-2:], y[-2:]
    if t0 <= 0:
        return linear(t, y, target)
    return math.exp(math.log(t0) + (l0 - target) / (l0 - l1) * math.log(t1 / t0))


def log_log(t, y, target):
    (t0, t1), (l0, l1) = t[-2:], y[-2:]
    if t0 <= 0 or l1 <= 0:
        return log_step(t, y, target)
    f = math.log(l0 / target) / math.log(l0 / l1)
    return math.exp(math.log(t0) + f * math.log(t1 / t0))


RULES = {"linear in steps": linear, "linear in log-steps": log_step, "log-log (no offset)": log_log,
         "a + b t^p, 3 points": crossing_step}

CURVES = {
    "t^-0.5": lambda t: t**-0.5,
    "t^-1": lambda t: 1.0 / t,
    "1 + 2 t^-0.5": lambda t: 1 + 2 * t**-0.5,
    "1 + 3 / (1 + t/20)": lambda t: 1 + 3 / (1 + t / 20),
    "exp(-t/100)": lambda t: math.exp(-t / 100),
    "0.5 + exp(-t/100)": lambda t: 0.5 + math.exp(-t / 100),
    "NQM-like: sum_i exp(-t/(25 i)) / (5 i), i <= 64":
        lambda t: sum(math.exp(-t / 25 / i) / i for i in range(1, 65)) / 5,
}


def schedule(kind: str, t_max: int = 20_000) -> list[int]:
    if kind == "relative":  # batchlaw's default: every max(1, step // 10) steps
        s = [0]
        while s[-1] < t_max:
            s.append(s[-1] + max(1, s[-1] // 10))
        return s
    if kind == "doubling":
        s = [0, 1]
        while s[-1] < t_max:
            s.append(2 * s[-1])
        return s
    every = int(kind.split()[1])
    return list(range(0, t_max + every, every))


SPACINGS = ("relative", "every 10", "every 50", "doubling")


def errors(curve, kind: str) -> dict[str, np.ndarray]:
    steps = schedule(kind)
    loss = [curve(s) if s > 0 else math.inf for s in steps]
    out = {name: [] for name in RULES}
    for t_true in np.geomspace(20, 2000, 60):
        target = curve(t_true)
        i = next(k for k, v in enumerate(loss) if v <= target)
        if steps[i - 1] == 0:
            continue
        for name, rule in RULES.items():
            lo = max(0, i - 2)
            t, y = steps[lo:i + 1], loss[lo:i + 1]
            out[name].append(rule(t, y, target) / t_true - 1)
    return {k: np.array(v) for k, v in out.items()}


def main() -> None:
    print("| curve | spacing | " + " | ".join(RULES) + " |")
    print("|---|---|" + "---|" * len(RULES))
    for cname, curve in CURVES.items():
        for kind in SPACINGS:
            e = errors(curve, kind)
            print(f"| {cname} | {kind} | " + " | ".join(
                f"{v.mean():+.2%} / {np.abs(v).mean():.2%} / {np.abs(v).max():.1%}" for v in e.values()) + " |")


if __name__ == "__main__":
    main()
