"""A user's workload in a user's package: least squares on a tiny linear model, AdamW with a
warm-up and clipping; plus things that are not workloads, for the error messages."""

from __future__ import annotations

import torch

from batchlaw.workloads import Workload


class TinyRegression(Workload):
    """y = w* . x + noise; a linear model trained with AdamW, warm-up and clipping."""

    name = "tiny_regression"
    default_lr = 0.05
    default_micro_batch = 8
    clip_grad_norm = 5.0

    def __init__(self, dim: int = 4, noise: float = 0.5, warmup: int = 3):
        if dim < 1:
            raise ValueError(f"The 'dim' parameter must be >= 1. Got {dim!r} instead.")
        self.dim, self.noise, self.warmup = dim, noise, warmup
        self.w_star = torch.linspace(-1.0, 1.0, dim)
        self.multipliers: list[float] = []

    def make_model(self, seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return torch.nn.Linear(self.dim, 1)

    def sample_batch(self, batch_size: int, generator: torch.Generator):
        x = torch.randn(batch_size, self.dim, generator=generator)
        return x, x @ self.w_star + self.noise * torch.randn(batch_size, generator=generator)

    def loss(self, model, batch):
        x, y = batch
        return 0.5 * (model(x).squeeze(-1) - y).square().mean()

    def make_optimizer(self, model, lr):
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)

    def lr_multiplier(self, step: int) -> float:
        m = min(1.0, (step + 1) / self.warmup)
        self.multipliers.append(m)
        return m

    @torch.no_grad()
    def eval_loss(self, model) -> float:
        x, y = self.sample_batch(2048, torch.Generator().manual_seed(123))
        return float(self.loss(model, (x, y)))


class NotAWorkload:
    """A class that does not subclass Workload."""


def not_a_class():
    return TinyRegression()
