"""Bias of B_simple when micro-batches differ in size, with and without telling the monitor.

Linear regression at fixed weights (analytic B_simple = 33 examples, dim 16). Every optimizer
step accumulates K = 4 micro-batches of sizes round(m (1 + cv z)) (at least 1), each loss the
sum over its examples divided by the step's total (as the Hugging Face Trainer and most
language-model loops normalise), so micro-batch i weighs n_i / N. Two monitors watch the same
backward passes: one told the sizes (``loss_normalisation="step"``, ``step(sizes=...)``), one
told only the mean size (every micro-batch taken as m examples weighing 1/K, the only estimator
before). Reported: mean and spread over seeds of B_simple / truth - 1.

    PYTHONPATH=src python bench/unequal_micro_batches.py --seeds 5 --steps 1500

Results go in bench/RESULTS.md with the machine and date.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from batchlaw.noise import GradientNoiseMonitor
from batchlaw.workloads import LinearRegression


def run(seed: int, steps: int, mean: int, cv: float, k: int = 4) -> tuple[float, float]:
    """(error with sizes, error without) of one run."""
    wl = LinearRegression(dim=16, noise_std=1.0, init_distance=1.0)
    model = wl.make_model(0)
    truth = wl.b_simple(model)
    told = GradientNoiseMonitor(model, loss_normalisation="step")
    naive = GradientNoiseMonitor(model, micro_batch_size=mean)
    gen, rng = torch.Generator().manual_seed(seed), np.random.default_rng(seed)
    for _ in range(steps):
        sizes = np.maximum(1, np.round(mean * (1 + cv * rng.standard_normal(k)))).astype(int).tolist()
        for n in sizes:
            x, y = wl.sample_batch(n, gen)
            (0.5 * (model(x).squeeze(-1) - y).square().sum() / sum(sizes)).backward()
        told.step(sizes=sizes)
        naive.step()
        model.zero_grad(set_to_none=True)
    return told.estimate().b_simple / truth - 1, naive.estimate().b_simple / truth - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=1500)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{'mean size':>9} {'cv':>5}  {'with sizes':>16}  {'without':>16}")
    for mean in (8, 32):
        for cv in (0.17, 0.3):
            t0 = time.perf_counter()
            errs = [run(s, args.steps, mean, cv) for s in range(args.seeds)]
            told, naive = zip(*errs)
            fmt = lambda e: f"{100 * statistics.mean(e):+.1f}% +- {100 * statistics.stdev(e):.1f}"  # noqa: E731
            print(f"{mean:>9} {cv:>5}  {fmt(told):>16}  {fmt(naive):>16}   ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
