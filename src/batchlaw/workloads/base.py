"""The workload interface: what batchlaw needs to train something and measure it.

A workload is a model, a data source and a loss. Plug in your own by subclassing
:class:`Workload` and implementing the three abstract methods; everything that trains
(``batchlaw sweep``, ``batchlaw measure``, Python sweeps) only uses this interface, and finds
a workload by reference (``"package.module:ClassName"`` plus constructor arguments:
:func:`batchlaw.workloads.resolve_workload`), so trials can rebuild it in worker processes,
on a Ray cluster and after a crash.
"""

from __future__ import annotations

import abc
import inspect
from typing import Any

import torch

__all__ = ["Workload"]


class Workload(abc.ABC):
    """A training task: model, data, loss, optimizer.

    The contract (what batchlaw relies on; docs/howto-own-model.md shows a complete example):

    * **Construction.** ``__init__`` takes keyword arguments that are JSON values (numbers,
      strings, booleans, lists, dicts): trials rebuild the workload from its reference and these
      arguments in other processes, and the arguments are part of a trial's identity in the
      store. The arguments an instance was built with are recorded automatically
      (:attr:`init_kwargs`).
    * :meth:`make_model` returns a freshly initialised model, on the workload's device; the
      same seed gives the same weights.
    * :meth:`sample_batch` returns ``batch_size`` training examples drawn **i.i.d.** (with
      replacement, or from an endless shuffled stream: what matters is that examples are
      independent of each other and of the step) using only ``generator`` (a CPU
      ``torch.Generator``) for randomness, so a seed reproduces the data order. The batch is a
      tensor or a tuple/list of tensors whose first dimension is ``batch_size``: trials split it
      along that dimension into micro-batches to measure the noise scale, so slicing rows must
      give valid smaller batches (no batch-level statistics such as BatchNorm in training).
    * :meth:`loss` returns the **mean** loss over the examples of ``batch`` (a 0-d tensor that
      can be backpropagated); micro-batch losses are weighted by their share of the batch. Run
      mixed precision here (``torch.autocast(..., dtype=torch.bfloat16)``); fp16 with a loss
      scaler is not supported in trials.
    * :meth:`eval_loss` returns the held-out loss at the current weights as a float:
      deterministic (a fixed evaluation set, same weights -> same value), in the same units as
      :meth:`loss`, and without changing the model (restore ``train()`` mode if you switch to
      ``eval()``). Steps to a target are read from it, so its noise becomes noise in steps:
      evaluate on enough examples.
    * :meth:`make_optimizer` builds the optimizer from the learning rate chosen by the sweep
      (default: plain SGD; AdamW with weight decay, per-group settings, anything with
      ``param_groups``). :meth:`lr_multiplier` shapes it over the steps (warm-up, decay):
      batchlaw sets each group's learning rate to its initial value times the multiplier before
      every step. :attr:`clip_grad_norm` clips the global gradient norm after the noise scale
      is measured (the monitor sees the raw gradients) and before the optimizer step.
    * **Device.** The workload owns it: ``make_model`` puts the model there and ``sample_batch``
      moves the batch there (draw on the CPU with ``generator``, then ``.to(device)``).

    Attributes:
        name: short identifier shown in reports.
        tokens_per_example: tokens in one example for language models (then batch sizes and
            noise scales can be given in tokens), else ``None``.
        default_lr: a learning rate that trains stably with :meth:`make_optimizer`.
        default_micro_batch: a micro-batch size (examples) that suits the workload on a CPU.
        lr_scaling: exponent of the rule that moves the learning rate with the batch size when a
            sweep starts its search (1: linear, for SGD; 0.5: square root, for Adam).
        clip_grad_norm: maximum global gradient norm, or ``None`` for no clipping.
        max_stable_lr: the largest learning rate that trains stably with
            :meth:`make_optimizer`, where the workload knows it exactly (the NQM: ``2 / h_max``);
            ``None`` when unknown (``batchlaw schedule compare`` then probes for it).
    """

    name: str = "workload"
    tokens_per_example: int | None = None
    default_lr: float = 0.1
    default_micro_batch: int = 32
    lr_scaling: float = 1.0
    clip_grad_norm: float | None = None
    max_stable_lr: float | None = None

    def __new__(cls, *args: Any, **kwargs: Any):
        obj = super().__new__(cls)
        # Remember the constructor's arguments by name, so an instance can be stored as a
        # reference (its class) plus keyword arguments and rebuilt in another process.
        try:
            bound = inspect.signature(cls.__init__).bind(None, *args, **kwargs)
        except TypeError:  # __init__ will raise the same error with its own message
            bound = None
        if bound is not None:
            params = list(bound.arguments.items())[1:]  # drop self
            init_kwargs: dict[str, Any] = {}
            for key, value in params:
                kind = inspect.signature(cls.__init__).parameters[key].kind
                if kind is inspect.Parameter.VAR_KEYWORD:
                    init_kwargs.update(value)
                elif kind is inspect.Parameter.VAR_POSITIONAL:
                    if value:
                        init_kwargs = None  # cannot be rebuilt by keyword
                        break
                else:
                    init_kwargs[key] = value
            obj._init_kwargs = init_kwargs
        return obj

    @property
    def init_kwargs(self) -> dict | None:
        """Keyword arguments this instance was constructed with (``None`` if it took ``*args``)."""
        kwargs = getattr(self, "_init_kwargs", {})
        return None if kwargs is None else dict(kwargs)

    @abc.abstractmethod
    def make_model(self, seed: int) -> torch.nn.Module:
        """A freshly initialised model; the same seed gives the same weights."""

    @abc.abstractmethod
    def sample_batch(self, batch_size: int, generator: torch.Generator) -> Any:
        """``batch_size`` training examples drawn i.i.d. using only ``generator`` (see the class docstring)."""

    @abc.abstractmethod
    def loss(self, model: torch.nn.Module, batch: Any) -> torch.Tensor:
        """Mean loss of ``model`` over ``batch`` (a 0-d tensor that can be backpropagated)."""

    def make_optimizer(self, model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
        """The optimizer the workload is trained with (plain SGD unless overridden)."""
        return torch.optim.SGD(model.parameters(), lr=lr)

    def lr_multiplier(self, step: int) -> float:
        """Factor on every group's initial learning rate before optimizer step ``step`` (0-based).

        The default is a constant learning rate (1.0). Override for warm-up or decay, e.g.
        ``min(1.0, (step + 1) / 100)`` for a 100-step linear warm-up.
        """
        return 1.0

    @torch.no_grad()
    def eval_loss(self, model: torch.nn.Module) -> float:
        """Held-out loss (the default draws a fixed batch of 4096 fresh examples)."""
        gen = torch.Generator().manual_seed(10_000_019)
        return float(self.loss(model, self.sample_batch(4096, gen)))

    def describe(self) -> dict:
        """JSON-ready description of the workload and its data."""
        return {"name": self.name, "tokens_per_example": self.tokens_per_example}
