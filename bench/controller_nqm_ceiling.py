"""The best two-stage ramp on the issue-21 NQM, against the same sampled frontier as the controller.

Ramps 128 -> 256 or 512, switching after 2,000 to 13,000 examples, trained by ``batchlaw schedule
compare``'s loop (same seeds, data streams, LR rule and cap as ``bench/controller_bench.py nqm``);
the mean over seeds of the Pareto gain against each seed's own frontier. It bounds, in sampled runs,
what a schedule that starts at 128 on step 0 can gain here (``bench/nqm_exact_frontier.py`` does the
same without sampling, for every greedy schedule).

Usage: ``PYTHONPATH=src python bench/controller_nqm_ceiling.py [--seeds 0,1,2]`` (trains the frontier
the first time, cached by ``controller_bench.py``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

from batchlaw.schedule import FixedRamp
from batchlaw.schedule.compare import train_to_target
from batchlaw.schedule.frontier import Frontier, pareto_gain

sys.path.insert(0, str(Path(__file__).parent))
from controller_bench import context, frontier  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", default="0,1,2")
    seeds = [int(s) for s in p.parse_args().seeds.split(",")]
    torch.set_num_threads(1)
    doc = frontier("nqm", seeds)
    ctx = context("nqm", doc, seeds)
    cfg = ctx.cfg
    fronts = {}
    for s in seeds:
        runs = [next(r for r in pt["runs"] if r["seed"] == s) for pt in doc["frontier"]["points"]]
        fronts[s] = Frontier([r["examples"] for r in runs], [r["steps"] for r in runs])
    rows = []
    for switch in range(2000, 14000, 1000):
        for second in (256, 512):
            stages = [(0, 128), (switch, second)]
            runs = [train_to_target(ctx.workload, FixedRamp(stages, base_batch=cfg.small_batch, lr=ctx.lr_schedule(),
                                                            **ctx.common()),
                                    seed=s, target_loss=cfg.target_loss, max_examples=cfg.max_examples,
                                    eval_every=cfg.eval_every, max_lr=ctx.lr_cap) for s in seeds]
            gain = statistics.mean(pareto_gain(r["steps"], r["examples"], fronts[s]).value for r, s in zip(runs, seeds))
            rows.append((gain, stages, [round(r["steps"]) for r in runs], [round(r["examples"]) for r in runs]))
    rows.sort(key=lambda r: -r[0])
    for gain, stages, steps, examples in rows[:5]:
        print(f"gain {gain:.3f}: {stages}, steps {steps}, examples {examples}")


if __name__ == "__main__":
    main()
