"""How well each way of finding the optimal LR and batch recovers a known optimum on lopsided grids.

    PYTHONPATH=src python bench/optimum_methods.py [--seeds 30] [--group-seeds 6] [--group-boot 60]

Grids come from tests/realistic.py (:func:`lopsided_grid`): loss rising 5x faster above the optimal
LR than below (2.5x for batch), divergence above 2.5-5x the optimal LR, 10% missing cells,
heteroscedastic noise, grids laid around a guess off by up to 1.65x, Step Law optima. Printed per
method: the bias and median absolute error of log(lr_opt) and log(B_opt) per group, the coverage
of the per-group 95% bootstrap interval (resampling the group's runs), and the coverage of the
95% intervals of the fitted law exponents (lr ~ N^a D^b, B ~ D^c).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from realistic import GRID_TRUTH, lopsided_grid, optimum  # noqa: E402

from batchlaw.fit.hparams import find_optima, fit_hparam_laws  # noqa: E402

METHODS = ("raw", "global", "quadratic", "local")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=30, help="grids for the errors and the law coverage")
    ap.add_argument("--group-seeds", type=int, default=6, help="grids (x 9 groups) for the per-group interval coverage")
    ap.add_argument("--group-boot", type=int, default=60, help="bootstrap resamples per group")
    args = ap.parse_args()
    t0 = time.time()
    print(f"| method | bias log lr | median abs err log lr | bias log B | median abs err log B | "
          f"group LR CI coverage | group B CI coverage | law exponent CI coverage (lr N, lr D, B D) |")
    print("|---|---|---|---|---|---|---|---|")
    for m in METHODS:
        el, eb, hits = [], [], np.zeros(3)
        for seed in range(args.seeds):
            n, d, lr, b, loss = lopsided_grid(np.random.default_rng(seed))
            opt = find_optima(n, d, lr, b, loss, method=m)
            for o in opt:
                lo, bo = optimum(o["params"], o["tokens"])
                el.append(math.log(o["lr"] / lo))
                eb.append(math.log(o["batch"] / bo))
            laws = fit_hparam_laws(opt, n_boot=200, seed=seed)
            ci = laws["lr_law"]["ci"]
            hits += [ci["exp_params"][0] <= GRID_TRUTH["lr_exp_params"] <= ci["exp_params"][1],
                     ci["exp_tokens"][0] <= GRID_TRUTH["lr_exp_tokens"] <= ci["exp_tokens"][1],
                     laws["batch_law"]["ci"]["exp_tokens"][0] <= GRID_TRUTH["batch_exp_tokens"]
                     <= laws["batch_law"]["ci"]["exp_tokens"][1]]
        cov_l = cov_b = total = 0
        for seed in range(args.group_seeds):
            n, d, lr, b, loss = lopsided_grid(np.random.default_rng(1000 + seed))
            for o in find_optima(n, d, lr, b, loss, method=m, n_boot=args.group_boot, seed=seed):
                lo, bo = optimum(o["params"], o["tokens"])
                cov_l += o["lr_ci"][0] <= lo <= o["lr_ci"][1]
                cov_b += o["batch_ci"][0] <= bo <= o["batch_ci"][1]
                total += 1
        el, eb = np.array(el), np.array(eb)
        print(f"| {m} | {el.mean():+.3f} | {np.median(np.abs(el)):.3f} | {eb.mean():+.3f} | {np.median(np.abs(eb)):.3f} "
              f"| {cov_l / total:.0%} | {cov_b / total:.0%} | "
              + ", ".join(f"{h / args.seeds:.0%}" for h in hits) + " |")
    print(f"\n{args.seeds} grids x 9 groups for errors and law coverage; {args.group_seeds} x 9 groups with "
          f"{args.group_boot} resamples for group coverage; {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
