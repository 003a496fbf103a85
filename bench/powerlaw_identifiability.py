"""Where `fit powerlaw` stops fitting two inputs that move together, and what the intervals do before that.

    PYTHONPATH=src python bench/powerlaw_identifiability.py [--seeds 40] [--points 12] [--bootstrap 300]

Runs along a Chinchilla-like frontier: N log-spaced over 1e8..1e10, D = 20 N times a log-normal
scatter (the printed `scatter`), y = 0.02 D^0.45 N^0.1 with 5% log-normal noise. Per scatter: the
median condition number of the standardised log design, how many fits
:func:`batchlaw.fit.laws.check_identifiable` refuses (above ``MAX_CONDITION``), and for the rest the
coverage of the 95% interval of the exponent of N and its median width.
"""

from __future__ import annotations

import argparse

import numpy as np

from batchlaw.errors import InsufficientDataError
from batchlaw.fit import fit_power_law


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=40)
    p.add_argument("--points", type=int, default=12)
    p.add_argument("--bootstrap", type=int, default=300)
    p.add_argument("--scatters", default="0.3,0.1,0.03,0.01")
    args = p.parse_args()
    print(f"{'scatter':>8} {'cond':>7} {'refused':>8} {'coverage':>9} {'CI width':>9}")
    for scatter in map(float, args.scatters.split(",")):
        conds, refused, inside, widths = [], 0, 0, []
        for seed in range(args.seeds):
            rng = np.random.default_rng(seed)
            n = np.geomspace(1e8, 1e10, args.points)
            d = 20 * n * np.exp(scatter * rng.standard_normal(args.points))
            y = 0.02 * d**0.45 * n**0.1 * np.exp(0.05 * rng.standard_normal(args.points))
            X = np.log(np.column_stack([d, n]))
            Z = (X - X.mean(0)) / X.std(0)
            sv = np.linalg.svd(Z, compute_uv=False)
            conds.append(sv[0] / sv[-1])
            try:
                fit = fit_power_law(y, inputs={"tokens": d, "params": n}, n_boot=args.bootstrap, seed=seed)
            except InsufficientDataError:
                refused += 1
                continue
            lo, hi = fit.ci["exp_params"]
            inside += lo <= 0.1 <= hi
            widths.append(hi - lo)
        fitted = args.seeds - refused
        cover = f"{inside}/{fitted}" if fitted else "-"
        width = f"{np.median(widths):.2f}" if widths else "-"
        print(f"{scatter:>8g} {np.median(conds):>7.3g} {refused:>5}/{args.seeds:<2} {cover:>9} {width:>9}")


if __name__ == "__main__":
    main()
