"""Learning-rate schedules counted in examples or tokens seen, not in optimizer steps.

A schedule written in steps goes wrong as soon as the batch changes mid-run: after the batch
doubles, each step consumes twice the data, so a cosine written in steps ends after twice the
data it was meant for (Megatron-style trainers show this under a batch ramp-up). Counted in
examples (or tokens, ``examples * tokens_per_example``), the schedule sits at the same point
of its curve for the same amount of data, whatever the batch: a run that changes its batch
continues exactly where a constant-batch run would be.
"""

from __future__ import annotations

import math

from .._validation import check_choice, check_positive_float, check_positive_int, check_sequence

__all__ = ["LRSchedule"]

_SHAPES = ("constant", "cosine", "wsd", "step")


class LRSchedule:
    """Warm-up then constant, cosine, warmup-stable-decay (WSD) or step decay, in data seen.

    All lengths (``warmup``, ``total``, ``milestones``) are in examples, or in tokens when
    ``tokens_per_example`` is given; :meth:`__call__` always takes *examples* seen (over all
    ranks) and converts.

    Args:
        peak_lr: the learning rate after warm-up (at the reference batch of the batch schedule).
        total: length of the run (needed by ``cosine`` and ``wsd``), in the schedule's unit.
        warmup: linear warm-up from 0 to ``peak_lr`` over this much data.
        shape: ``"constant"``, ``"cosine"`` (to ``final_fraction * peak_lr`` at ``total``),
            ``"wsd"`` (constant, then linear decay to ``final_fraction * peak_lr`` over the last
            ``decay_fraction`` of ``total``; Hägele et al. 2024) or ``"step"`` (multiply by
            ``1 / step_factor`` at each of ``milestones``).
        final_fraction: the learning rate at ``total`` as a fraction of ``peak_lr``.
        decay_fraction: the share of ``total`` spent decaying in ``wsd``.
        milestones: data points where ``step`` cuts the learning rate.
        step_factor: the cut at each milestone (``a`` in Seesaw's notation).
        tokens_per_example: lengths are in tokens when given.

    Raises:
        ValueError: a bad argument (named, with the value).

    Examples:
        >>> s = LRSchedule(1e-3, total=1000, warmup=100, shape="cosine")
        >>> s(50), s(100), round(s(1000), 12)
        (0.0005, 0.001, 0.0)
        >>> s2 = LRSchedule(1e-3, total=64_000, warmup=6_400, shape="cosine", tokens_per_example=64)
        >>> s2(50) == s(50)  # 50 examples of 64 tokens = 3,200 tokens: half-way through warm-up
        True
    """

    def __init__(self, peak_lr: float, *, total: float | None = None, warmup: float = 0.0, shape: str = "constant",
                 final_fraction: float = 0.0, decay_fraction: float = 0.2, milestones: tuple = (),
                 step_factor: float = 2.0, tokens_per_example: int | None = None) -> None:
        self.peak_lr = check_positive_float("peak_lr", peak_lr)
        self.shape = check_choice("shape", shape, _SHAPES)
        self.warmup = check_positive_float("warmup", warmup, allow_zero=True)
        if shape in ("cosine", "wsd") and total is None:
            raise ValueError(f"The 'total' parameter is needed by the {shape!r} shape (the run's length in data).")
        self.total = None if total is None else check_positive_float("total", total)
        if self.total is not None and self.warmup > self.total:
            raise ValueError(f"The 'warmup' parameter ({warmup!r}) must not exceed 'total' ({total!r}).")
        self.final_fraction = check_positive_float("final_fraction", final_fraction, allow_zero=True)
        if self.final_fraction > 1:
            raise ValueError(f"The 'final_fraction' parameter must be in [0, 1]. Got {final_fraction!r} instead.")
        self.decay_fraction = check_positive_float("decay_fraction", decay_fraction)
        if self.decay_fraction > 1:
            raise ValueError(f"The 'decay_fraction' parameter must be in (0, 1]. Got {decay_fraction!r} instead.")
        self.milestones = tuple(check_positive_float("milestones", m)
                                for m in check_sequence("milestones", milestones, example="(10000, 20000)"))
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"The 'milestones' parameter must be increasing. Got {milestones!r} instead.")
        self.step_factor = check_positive_float("step_factor", step_factor)
        if self.step_factor <= 1:
            raise ValueError(f"The 'step_factor' parameter must be > 1. Got {step_factor!r} instead.")
        self.tokens_per_example = None if tokens_per_example is None else check_positive_int(
            "tokens_per_example", tokens_per_example)
        self.unit = "tokens" if self.tokens_per_example else "examples"

    def position(self, examples_seen: int) -> float:
        """Data seen in the schedule's unit."""
        return check_positive_float("examples_seen", examples_seen, allow_zero=True) * (self.tokens_per_example or 1)

    def cuts(self, examples_seen: int) -> int:
        """Number of ``step`` milestones passed at ``examples_seen`` (0 for the other shapes)."""
        x = self.position(examples_seen)
        return sum(x >= m for m in self.milestones) if self.shape == "step" else 0

    def multiplier(self, examples_seen: int) -> float:
        """The schedule's factor on ``peak_lr`` at ``examples_seen`` (1 on the plateau)."""
        x = self.position(examples_seen)
        if self.warmup > 0 and x < self.warmup:
            return x / self.warmup
        if self.shape == "constant":
            return 1.0
        if self.shape == "step":
            return self.step_factor ** (-self.cuts(examples_seen))
        total, lo = self.total, self.final_fraction
        if x >= total:
            return lo
        if self.shape == "cosine":
            frac = (x - self.warmup) / (total - self.warmup) if total > self.warmup else 1.0
            return lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * frac))
        start = total * (1 - self.decay_fraction)  # wsd
        if x < start:
            return 1.0
        return 1.0 - (1 - lo) * (x - start) / (total - start)

    def __call__(self, examples_seen: int) -> float:
        """The learning rate at ``examples_seen`` examples (over all ranks)."""
        return self.peak_lr * self.multiplier(examples_seen)

    def to_dict(self) -> dict:
        return {"peak_lr": self.peak_lr, "total": self.total, "warmup": self.warmup, "shape": self.shape,
                "final_fraction": self.final_fraction, "decay_fraction": self.decay_fraction,
                "milestones": list(self.milestones), "step_factor": self.step_factor,
                "tokens_per_example": self.tokens_per_example}

    def __repr__(self) -> str:
        return f"LRSchedule({self.shape}, peak_lr={self.peak_lr:g}, total={self.total}, warmup={self.warmup}, unit={self.unit})"
