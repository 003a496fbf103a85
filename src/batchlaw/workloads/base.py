"""The workload interface: what batchlaw needs to train something and measure it.

A workload is a model, a data source and a loss. Plug in your own by subclassing
:class:`Workload` and implementing the three abstract methods; everything that trains
(``batchlaw measure``, sweeps) only uses this interface.
"""

from __future__ import annotations

import abc
from typing import Any

import torch

__all__ = ["Workload"]


class Workload(abc.ABC):
    """A reference training task.

    Attributes:
        name: short identifier used on the command line.
        tokens_per_example: tokens in one example for language models (then batch sizes and
            noise scales can be given in tokens), else ``None``.
        default_lr: a learning rate that trains stably with :meth:`make_optimizer`.
        default_micro_batch: a micro-batch size (examples) that suits the workload on a CPU.
        lr_scaling: exponent of the rule that moves the learning rate with the batch size when a
            sweep starts its search (1: linear, for SGD; 0.5: square root, for Adam).
    """

    name: str = "workload"
    tokens_per_example: int | None = None
    default_lr: float = 0.1
    default_micro_batch: int = 32
    lr_scaling: float = 1.0

    @abc.abstractmethod
    def make_model(self, seed: int) -> torch.nn.Module:
        """A freshly initialised model; the same seed gives the same weights."""

    @abc.abstractmethod
    def sample_batch(self, batch_size: int, generator: torch.Generator) -> Any:
        """``batch_size`` training examples drawn i.i.d. (with replacement) using ``generator``."""

    @abc.abstractmethod
    def loss(self, model: torch.nn.Module, batch: Any) -> torch.Tensor:
        """Mean loss of ``model`` over ``batch`` (a 0-d tensor that can be backpropagated)."""

    def make_optimizer(self, model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
        """The optimizer the workload is trained with (plain SGD unless overridden)."""
        return torch.optim.SGD(model.parameters(), lr=lr)

    @torch.no_grad()
    def eval_loss(self, model: torch.nn.Module) -> float:
        """Held-out loss (the default draws a fixed batch of 4096 fresh examples)."""
        gen = torch.Generator().manual_seed(10_000_019)
        return float(self.loss(model, self.sample_batch(4096, gen)))

    def describe(self) -> dict:
        """JSON-ready description of the workload and its data."""
        return {"name": self.name, "tokens_per_example": self.tokens_per_example}
