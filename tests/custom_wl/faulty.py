"""Workloads with bugs of the user's own, one per way a workload can break the contract; plus a
slow one and one that diverges at large batches (the branch tests). Each bug is on a line the
tests find by its marker comment."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from custom_wl.quadratic import TinyRegression


class CtorRaises(TinyRegression):
    def __init__(self, dim: int = 4):
        raise RuntimeError("no GPU found")  # BUG: ctor


class NoModel(TinyRegression):
    def make_model(self, seed):  # BUG: make_model
        torch.nn.Linear(self.dim, 1)  # forgot to return it


class VectorLoss(TinyRegression):
    def loss(self, model, batch):  # BUG: loss
        x, y = batch
        return (model(x).squeeze(-1) - y).square()  # per example, not the mean


class Frozen(TinyRegression):
    def make_model(self, seed):  # BUG: frozen
        return super().make_model(seed).requires_grad_(False)


class _Embedded(torch.nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(16, dim, sparse=True)
        self.out = torch.nn.Linear(dim, 1)

    def forward(self, x):
        return self.out(self.emb((x.abs() * 4).long().clamp(max=15)).mean(1))


class Sparse(TinyRegression):
    def make_model(self, seed):  # BUG: sparse
        torch.manual_seed(seed)
        return _Embedded(self.dim)


class FailsLater(TinyRegression):
    """Passes the one-batch check, then fails on the first batch of 8 or more examples."""

    def loss(self, model, batch):
        x, _ = batch
        if len(x) >= 8:
            return {}["missing"]  # BUG: later
        return super().loss(model, batch)


class UnstableAtLargeBatch(TinyRegression):
    """Trains normally up to ``max_stable`` examples per batch; larger batches give a NaN loss
    (a branch at large k that diverges). The held-out loss is always finite."""

    def __init__(self, dim: int = 4, max_stable: int = 4):
        super().__init__(dim)
        self.max_stable = max_stable

    def loss(self, model, batch):
        value = super().loss(model, batch)
        return value * float("nan") if len(batch[0]) > self.max_stable else value

    @torch.no_grad()
    def eval_loss(self, model) -> float:
        x, y = super().sample_batch(512, torch.Generator().manual_seed(123))
        return float(TinyRegression.loss(self, model, (x, y)))


class Slow(TinyRegression):
    """Each training loss takes ``delay`` seconds; the first one in a process leaves a file named
    after the process id in ``marker_dir`` (a worker has started training)."""

    def __init__(self, dim: int = 4, delay: float = 0.05, marker_dir: str = ""):
        super().__init__(dim)
        self.delay, self.marker_dir = delay, marker_dir

    def loss(self, model, batch):
        if self.marker_dir and torch.is_grad_enabled():
            Path(self.marker_dir, str(os.getpid())).touch()
        time.sleep(self.delay)
        return super().loss(model, batch)
