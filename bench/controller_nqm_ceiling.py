"""The best two-stage ramp on the issue-21 NQM, against the same sampled frontier as the controller.

Ramps 128 -> 256 or 512, switching after 2,000 to 13,000 examples, trained like the controller's runs
(``bench/controller_bench.py nqm``: same seeds, data streams, LR rule and cap); the mean Pareto gain over
seeds against the mean frontier. It bounds what any schedule starting at 128 on step 0 can gain here.

Usage: ``PYTHONPATH=src python bench/controller_nqm_ceiling.py`` (after ``controller_bench.py nqm``, whose
frontier cache it reads).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch

from batchlaw.schedule import FixedRamp
from batchlaw.schedule.controller_run import train_with_controller
from batchlaw.workloads import NoisyQuadratic

sys.path.insert(0, str(Path(__file__).parent))
from controller_bench import WORKLOADS, _CappedConstant, frontier_points, run_frontier, steps_at  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    cfg, seeds = WORKLOADS["nqm"], [0, 1, 2]
    wl = NoisyQuadratic(**cfg["kwargs"])
    front = frontier_points(run_frontier("nqm", cfg, seeds, wl))
    rows = []
    for switch in range(2000, 14000, 1000):
        for second in (256, 512):
            stages = [(0, 128), (switch, second)]
            runs = []
            for seed in seeds:
                ramp = FixedRamp(stages, base_batch=cfg["small"], lr=cfg["lr"], lr_rule=cfg["rule"], max_micro_batch=1024)
                runs.append(train_with_controller(wl, _CappedConstant(ramp, cfg["max_lr"]), seed=seed,
                                                  target_loss=cfg["target"], max_examples=cfg["max_examples"],
                                                  eval_every=cfg["eval_every"], branch=False))
            gain = statistics.mean(1 - r["steps"] / steps_at(front, 1.1 * r["examples"])[0] for r in runs)
            rows.append((gain, stages, [round(r["steps"]) for r in runs], [round(r["examples"]) for r in runs]))
    rows.sort(key=lambda r: -r[0])
    for gain, stages, steps, examples in rows[:5]:
        print(f"gain {gain:.3f}: {stages}, steps {steps}, examples {examples}")


if __name__ == "__main__":
    main()
