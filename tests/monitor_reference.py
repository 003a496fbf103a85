"""The reference the framework integrations are checked against: the monitor stepped by hand in a
plain PyTorch loop on a linear regression with a known noise scale (B_simple = 33 examples at init)."""

from __future__ import annotations

import torch

from batchlaw.noise import GradientNoiseMonitor
from batchlaw.workloads import LinearRegression

WL = LinearRegression(dim=16, noise_std=1.0, init_distance=1.0)


def sample(n: int, seed: int = 0):
    """``n`` examples of :data:`WL`: ``x (n, 16), y (n,)``."""
    return WL.sample_batch(n, torch.Generator().manual_seed(seed))


def plain_loop(x, y, b: int, k: int, steps: int) -> GradientNoiseMonitor:
    """The monitor on a plain loop over ``steps`` optimizer steps of ``k`` micro-batches of ``b``
    rows of ``x, y`` in order, at fixed weights (no optimizer); its hooks removed at the end."""
    model = WL.make_model(0)
    monitor = GradientNoiseMonitor(model, micro_batch_size=b)
    for s in range(steps):
        for j in range(k):
            i = (s * k + j) * b
            (WL.loss(model, (x[i:i + b], y[i:i + b])) / k).backward()
        monitor.step()
        model.zero_grad(set_to_none=True)
    monitor.remove()
    return monitor
