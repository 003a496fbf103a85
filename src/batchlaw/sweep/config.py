"""The configuration of a sweep: what it measures, and the learning-rate search it runs.

A :class:`SweepConfig` is stored with the sweep (:class:`~batchlaw.sweep.store.TrialStore`), so a
rerun resumes it and ``batchlaw report`` rebuilds the analysis from the store alone; the search it
configures is described in :mod:`batchlaw.sweep.runner`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from .._validation import check_choice, check_learning_rate, check_positive_float, check_positive_int
from .trial import TrialSpec

__all__ = ["SweepConfig"]


@dataclass(frozen=True)
class SweepConfig:
    """What a sweep measures. Batch sizes are in examples (sequences for language models).

    ``workload`` is a reference (a built-in name or ``"package.module:ClassName"``, with
    ``workload_kwargs``); a :class:`~batchlaw.workloads.Workload` subclass or instance is
    turned into one, so the stored configuration rebuilds it for resume, reports and workers.
    """

    workload: str
    batch_sizes: tuple[int, ...]
    target_loss: float
    max_steps: int
    lr_base: float
    name: str = "sweep"
    workload_kwargs: dict = field(default_factory=dict)
    target_on: str = "heldout"
    eval_every: int | None = None
    seeds: tuple[int, ...] = (0,)
    lr_scaling: float = 1.0
    lr_factor: float = 2.0
    lr_points: int = 3
    max_extensions: int = 3
    micro_batches: int = 2
    lr_refine: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.workload, str):
            from ..workloads import workload_spec

            ref, kwargs = workload_spec(self.workload, self.workload_kwargs or None)
            object.__setattr__(self, "workload", ref)
            object.__setattr__(self, "workload_kwargs", kwargs)
        if not self.batch_sizes:
            raise ValueError("The 'batch_sizes' parameter must list at least one batch size.")
        for b in self.batch_sizes:
            check_positive_int("batch_sizes", b)
        check_positive_float("target_loss", self.target_loss)
        check_positive_int("max_steps", self.max_steps)
        check_learning_rate("lr_base", self.lr_base)
        if self.eval_every is not None:
            check_positive_int("eval_every", self.eval_every)
        check_choice("target_on", self.target_on, ("heldout", "train"))
        if not (isinstance(self.lr_factor, (int, float)) and math.isfinite(self.lr_factor) and self.lr_factor > 1):
            raise ValueError(f"The 'lr_factor' parameter must be a finite number > 1. Got {self.lr_factor!r} instead.")
        if not (isinstance(self.lr_scaling, (int, float)) and math.isfinite(self.lr_scaling)):
            raise ValueError(f"The 'lr_scaling' parameter must be a finite number (1 for SGD, 0.5 for Adam). "
                             f"Got {self.lr_scaling!r} instead.")
        check_positive_int("lr_points", self.lr_points)
        check_positive_int("max_extensions", self.max_extensions, minimum=0)
        for name, value in (("lr_points", self.lr_points), ("max_extensions", self.max_extensions)):
            if value > 100:
                raise ValueError(f"The '{name}' parameter must be at most 100. Got {value!r} instead.")
        check_positive_int("micro_batches", self.micro_batches)
        check_positive_int("lr_refine", self.lr_refine, minimum=0)
        if not self.seeds:
            raise ValueError("The 'seeds' parameter must list at least one seed.")
        for seed in self.seeds:
            check_positive_int("seeds", seed, minimum=0)
        # every learning rate the search may try must be a finite positive number
        b_ref, reach = min(self.batch_sizes), (self.lr_points - 1) / 2 + self.max_extensions
        for b in (min(self.batch_sizes), max(self.batch_sizes)):
            try:
                center = self.lr_base * (b / b_ref) ** self.lr_scaling
                lrs = (center * self.lr_factor ** -reach, center * self.lr_factor ** reach)
            except OverflowError:
                lrs = (0.0, math.inf)
            if not all(math.isfinite(lr) and lr > 0 for lr in lrs):
                raise ValueError(
                    f"The learning rates of the search leave the floating-point range at batch {b} (lr_base "
                    f"{self.lr_base!r}, lr_scaling {self.lr_scaling!r}, lr_factor {self.lr_factor!r}, "
                    f"{self.lr_points} points, {self.max_extensions} extensions). Use a smaller --lr-factor or "
                    "--lr-scaling.")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["batch_sizes"], d["seeds"] = list(self.batch_sizes), list(self.seeds)
        if not self.lr_refine:  # stores written before the option existed resume unchanged
            del d["lr_refine"]
        return d

    def spec(self, batch_size: int, lr: float, seed: int) -> TrialSpec:
        return TrialSpec(workload=self.workload, batch_size=batch_size, lr=lr, seed=seed,
                         target_loss=self.target_loss, max_steps=self.max_steps, eval_every=self.eval_every,
                         target_on=self.target_on, micro_batches=self.micro_batches,
                         workload_kwargs=dict(self.workload_kwargs))
