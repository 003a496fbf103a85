"""Batch-size schedules: constant, fixed ramp, noise-scale ramp, CBS ramp and Seesaw.

Each is a :class:`~batchlaw.schedule.batch.BatchSchedule`: ``schedule.step(examples_seen,
monitor)`` once before every optimizer step returns a
:class:`~batchlaw.schedule.batch.BatchChoice` (micro-batch, accumulation ``K``, global batch,
learning rate); ``state_dict()`` / ``load_state_dict()`` carry it through a checkpoint.
"""

from __future__ import annotations

import math
from numbers import Real

from .._validation import check_choice, check_positive_float, check_positive_int, check_sequence
from .batch import MAX_BATCH, BatchSchedule, is_whole, state_entry
from .lr_schedule import LRSchedule

__all__ = ["ConstantBatch", "FixedRamp", "NoiseScaleRamp", "CBSRamp", "Seesaw"]


class ConstantBatch(BatchSchedule):
    """The same batch throughout (a baseline); the LR follows its schedule in data seen.

    Args:
        batch: global batch (examples); also the reference batch of ``lr``.
        **kwargs: see :class:`~batchlaw.schedule.batch.BatchSchedule`.

    Examples:
        >>> s = ConstantBatch(32, lr=0.1, max_micro_batch=8, world_size=2)
        >>> c = s.step(0)
        >>> c.micro_batch_size, c.accumulation, c.global_batch, c.lr
        (8, 2, 32, 0.1)
    """

    def __init__(self, batch: int, **kwargs) -> None:
        kwargs.setdefault("base_batch", batch)
        super().__init__(**kwargs)
        self.batch = check_positive_int("batch", batch)
        if self.batch > MAX_BATCH:
            raise ValueError(f"The 'batch' parameter must be at most 2^53 examples. Got {batch!r} instead.")
        self._check_reach(self.batch, f"batch={self.batch}")

    def target(self, examples_seen, monitor=None):
        return float(self.batch)


class FixedRamp(BatchSchedule):
    """Stages of batch size by data seen (open loop, like Megatron's ramp-up or OLMo's warm-up).

    Args:
        stages: ``[(start, batch), ...]``: from ``start`` on (examples, or tokens when
            ``tokens_per_example`` is given) the global batch is ``batch`` examples. The first
            stage must start at 0; starts must increase.
        **kwargs: see :class:`~batchlaw.schedule.batch.BatchSchedule`; ``base_batch`` defaults
            to the first stage's batch.

    Examples:
        >>> s = FixedRamp([(0, 8), (100, 16)], lr=0.1, lr_rule="linear", max_micro_batch=8)
        >>> [(c.global_batch, c.accumulation, c.lr, c.changed) for c in (s.step(96), s.step(104))]
        [(8, 1, 0.1, False), (16, 2, 0.2, True)]
    """

    def __init__(self, stages, **kwargs) -> None:
        stages = [(check_positive_float("stages start", s, allow_zero=True), check_positive_int("stages batch", b))
                  for s, b in check_sequence("stages", stages, pairs=True, example="[(0, 8), (1000, 16)]")]
        if not stages or stages[0][0] != 0:
            raise ValueError(f"The 'stages' parameter must start with a stage at 0. Got {stages!r} instead.")
        if any(b[0] <= a[0] for a, b in zip(stages, stages[1:])):
            raise ValueError(f"The starts in 'stages' must increase. Got {[s for s, _ in stages]!r} instead.")
        big = max(b for _, b in stages)
        if big > MAX_BATCH:
            raise ValueError(f"The batches in 'stages' must be at most 2^53 examples. Got {big!r} instead.")
        kwargs.setdefault("base_batch", stages[0][1])
        super().__init__(**kwargs)
        self.stages = stages
        self._check_reach(big, "its largest stage")

    def target(self, examples_seen, monitor=None):
        x = examples_seen * (self.tokens_per_example or 1)
        batch = self.stages[0][1]
        for start, b in self.stages:
            if x >= start:
                batch = b
        return float(batch)


class NoiseScaleRamp(BatchSchedule):
    """Growth-only batch that follows ``c * B_simple`` measured during the run.

    At each step the ramp reads ``monitor.records[-1]["b_simple_ema"]`` (a
    :class:`~batchlaw.noise.GradientNoiseMonitor`; in tokens when the monitor counts tokens,
    converted with ``tokens_per_example``). The batch grows to ``c * B_simple`` (at most
    ``max_growth`` times the current batch in one change, and at most ``max_batch``) only when
    that exceeds the current batch by more than ``hysteresis``, at least ``cooldown`` steps
    after the last change, and after ``min_records`` finite readings. It never shrinks.

    McCandlish et al. 2018 (arXiv:1812.06162, section 2.2 and App. D): training at
    ``B ~ B_noise`` balances steps and examples; Gray et al. 2024 (arXiv:2411.00999) grew the
    batch with the measured noise scale and saved 18% of the training time at equal loss.

    Args:
        base_batch: the starting global batch (examples); the reference batch of ``lr``.
        lr: learning rate at ``base_batch`` (number or :class:`LRSchedule`).
        c: the batch follows ``c * B_simple`` (``B_simple`` underestimates ``B_crit`` when the
            Hessian is ill-conditioned; ``c > 1`` compensates).
        max_batch: the cap (examples). Required: the noise scale grows without bound as the
            loss approaches its floor.
        hysteresis: grow only when ``c * B_simple > (1 + hysteresis) * current``.
        max_growth: largest factor of one change.
        cooldown: optimizer steps between two changes.
        min_records: finite noise-scale readings needed before the first change.
        min_accumulation: default 2, so a single-process monitor sees two batch sizes on every
            step (under DDP/FSDP the ``W`` ranks already give two: 1 is enough).
        **kwargs: see :class:`~batchlaw.schedule.batch.BatchSchedule`.
    """

    def __init__(self, base_batch: int, lr, *, max_batch: int, c: float = 1.0, hysteresis: float = 0.25,
                 max_growth: float = 2.0, cooldown: int = 10, min_records: int = 10, min_accumulation: int = 2,
                 **kwargs) -> None:
        super().__init__(base_batch=base_batch, lr=lr, max_batch=max_batch, min_accumulation=min_accumulation,
                         **kwargs)
        self.c = check_positive_float("c", c)
        self.hysteresis = check_positive_float("hysteresis", hysteresis, allow_zero=True)
        self.max_growth = check_positive_float("max_growth", max_growth)
        if self.max_growth <= 1:
            raise ValueError(f"The 'max_growth' parameter must be > 1. Got {max_growth!r} instead.")
        self.cooldown = check_positive_int("cooldown", cooldown, minimum=0)
        self.min_records = check_positive_int("min_records", min_records)
        self._want = float(self.base_batch)  # requested batch: never decreases
        self._finite_readings = 0
        self._last_change = 0
        self._last_b_simple: float | None = None

    def _reading(self, monitor) -> float | None:
        if monitor is None:
            return None
        records = monitor.records
        if not records:
            return None
        value = records[-1].get("b_simple_ema")
        if value is not None and (isinstance(value, bool) or not isinstance(value, Real)):
            raise ValueError(f"The monitor's last record holds b_simple_ema={value!r}, not a number: pass a "
                             "GradientNoiseMonitor (its records hold B_simple as a float, or None before it is known).")
        if value is None or not math.isfinite(value) or value <= 0:  # not known yet, or a skipped step
            return None
        if getattr(monitor, "unit", "examples") == "tokens":
            if not self.tokens_per_example:
                raise ValueError("The monitor counts tokens: give the schedule 'tokens_per_example' to convert its "
                                 "B_simple to examples.")
            value = value / self.tokens_per_example
        return float(value)

    def target(self, examples_seen, monitor=None):
        b = self._reading(monitor)
        if b is not None:
            self._finite_readings += 1
            self._last_b_simple = b
        ready = self._finite_readings >= self.min_records and self._step - self._last_change >= self.cooldown
        current = float(self._current if self._current is not None else self._want)
        if b is not None and ready and self.c * b > (1 + self.hysteresis) * current:
            new = min(self.c * b, self.max_growth * current, float(self.max_batch))
            if new > self._want:
                self._want = new
                self._last_change = self._step
        return self._want

    @property
    def b_simple(self) -> float | None:
        """The last finite ``B_simple`` read from the monitor (examples)."""
        return self._last_b_simple

    def _extra_state(self):
        return {"want": self._want, "finite_readings": self._finite_readings, "last_change": self._last_change,
                "last_b_simple": self._last_b_simple}

    def _load_extra_state(self, state):
        want = state_entry(state, "want", lambda v: isinstance(v, Real) and not isinstance(v, bool)
                           and self.base_batch <= v <= self.max_batch,
                           f"a number of examples from base_batch={self.base_batch} to max_batch={self.max_batch} "
                           "(the ramp never shrinks below where it started)")
        readings = state_entry(state, "finite_readings", lambda v: is_whole(v, 0), "a whole number >= 0")
        step = state.get("step")
        last_change = state_entry(state, "last_change", lambda v: is_whole(v, 0, step if is_whole(step, 0) else 0),
                                  f"a whole number from 0 to the state's step ({step!r})")
        b_simple = state_entry(state, "last_b_simple",
                               lambda v: v is None or (isinstance(v, Real) and not isinstance(v, bool)
                                                       and math.isfinite(v) and v > 0),
                               "None or a finite number > 0 (examples)")
        self._want = float(want)
        self._finite_readings = int(readings)
        self._last_change = int(last_change)
        self._last_b_simple = None if b_simple is None else float(b_simple)


class CBSRamp(BatchSchedule):
    """Growth-only batch that follows a critical batch size measured by branching.

    Merrill et al. 2025 ("Critical Batch Size Revisited", arXiv:2505.23971, section 5): warm the
    batch up following the CBS measured at checkpoints of a small-batch run; 43% fewer gradient
    steps at equal loss for OLMo 1B. From data point ``t_i`` on the batch is
    ``factor * CBS(t_i)`` (the last measured value holds until the next one: the batch grows
    only once it was measured safe), at least ``base_batch`` and at most ``max_batch``, and
    never shrinks.

    Args:
        points: ``[(t, cbs), ...]``: data seen at the checkpoint (examples, or tokens with
            ``tokens_per_example``) and the CBS measured there (examples). A
            :class:`~batchlaw.sweep.branched.BranchedCBS` result works through :meth:`from_measurement`.
        base_batch: the starting global batch (examples); the reference batch of ``lr``.
        lr: learning rate at ``base_batch`` (number or :class:`LRSchedule`).
        factor: the batch is ``factor * CBS`` (1: at the measured CBS; < 1 for a margin).
        **kwargs: see :class:`~batchlaw.schedule.batch.BatchSchedule`.
    """

    def __init__(self, points, base_batch: int, lr, *, factor: float = 1.0, **kwargs) -> None:
        super().__init__(base_batch=base_batch, lr=lr, **kwargs)
        pts = sorted((check_positive_float("points t", t, allow_zero=True), check_positive_float("points cbs", c))
                     for t, c in check_sequence("points", points, pairs=True, example="[(0, 64), (10000, 256)]"))
        if not pts:
            raise ValueError("The 'points' parameter must hold at least one (t, cbs) pair.")
        self.points = pts
        self.factor = check_positive_float("factor", factor)
        largest = max(self.factor * c for _, c in pts)
        if largest > MAX_BATCH:
            raise ValueError(f"The batch 'factor' * CBS must be at most 2^53 examples; the largest CBS in 'points' gives "
                             f"{largest:g}. Give the CBS in examples (not tokens, or a log).")
        self._check_reach(max(largest, self.base_batch), "factor x the largest CBS in 'points'")

    @classmethod
    def from_measurement(cls, measurement, base_batch: int, lr, **kwargs) -> CBSRamp:
        """Build the ramp from a branched measurement (its points in examples)."""
        pts = [(p["t_examples"], p["cbs"]) for p in measurement.points]
        kwargs.pop("tokens_per_example", None)
        return cls(pts, base_batch, lr, **kwargs)

    def target(self, examples_seen, monitor=None):
        x = examples_seen * (self.tokens_per_example or 1)
        want = float(self.base_batch)
        for t, cbs in self.points:  # growth only: the running maximum of the measured CBS
            if x >= t:
                want = max(want, self.factor * cbs)
        return want


class Seesaw(BatchSchedule):
    """Seesaw (Meterez et al. 2025, arXiv:2510.14717): trade learning-rate cuts for batch growth.

    Where a step-decay schedule would divide the learning rate by ``a`` (at each of
    ``milestones``), Seesaw divides it by ``sqrt(a)`` and multiplies the batch by ``a``
    (Adam; the paper proves the equivalence for normalized SGD, its proxy for Adam, in the
    variance-dominated regime). For plain SGD the equivalence is exact in the same noisy linear
    regression: the batch grows by ``a`` and the learning rate is not cut (Smith et al. 2018,
    "Don't decay the learning rate, increase the batch size"). Once the batch reaches
    ``max_batch``, later cuts fall on the learning rate in full, as in the step decay.

    The paper's condition: the equivalence holds while the noise dominates the gradient, i.e.
    below the critical batch size (their runs start *at* the CBS and ramp from there). Give a
    ``max_batch`` no larger than your measured CBS late in training to stay inside it.

    Args:
        base_batch: the starting global batch (examples); the reference batch of ``peak_lr``.
        peak_lr: the learning rate after warm-up at ``base_batch``.
        milestones: data points (examples, or tokens with ``tokens_per_example``) where the
            step decay would cut.
        a: the step decay's factor (2 in the paper).
        optimizer: ``"adam"`` (cut by ``sqrt(a)``) or ``"sgd"`` (no cut while the batch grows).
        warmup: linear learning-rate warm-up (same unit as ``milestones``).
        max_batch: the largest global batch (examples).
        **kwargs: see :class:`~batchlaw.schedule.batch.BatchSchedule` (``lr_rule`` is fixed to
            ``"none"``: Seesaw sets the learning rate itself).

    Examples:
        >>> s = Seesaw(8, 1e-3, milestones=[100], max_batch=64, max_micro_batch=8)
        >>> a, b = s.step(0), s.step(100)
        >>> (a.global_batch, a.lr), (b.global_batch, round(b.lr, 7))
        ((8, 0.001), (16, 0.0007071))
    """

    def __init__(self, base_batch: int, peak_lr: float, *, milestones, a: float = 2.0, optimizer: str = "adam",
                 warmup: float = 0.0, max_batch: int, tokens_per_example: int | None = None, **kwargs) -> None:
        if kwargs.pop("lr_rule", "none") != "none":
            raise ValueError("Seesaw sets the learning rate itself: leave 'lr_rule' out.")
        self.optimizer = check_choice("optimizer", optimizer, ("adam", "sgd"))
        self.a = check_positive_float("a", a)
        if self.a <= 1:
            raise ValueError(f"The 'a' parameter must be > 1. Got {a!r} instead.")
        if max_batch is None:  # the base class takes None as "no limit"; Seesaw's growth needs one
            raise ValueError("The 'max_batch' parameter must be a positive integer: Seesaw grows the batch up to it "
                             "(give your measured critical batch size). Got None instead.")
        schedule = LRSchedule(peak_lr, warmup=warmup, shape="step", milestones=milestones, step_factor=self.a,
                              tokens_per_example=tokens_per_example)
        super().__init__(base_batch=base_batch, lr=LRSchedule(peak_lr, warmup=warmup,
                                                               tokens_per_example=tokens_per_example),
                         lr_rule="none", max_batch=max_batch, tokens_per_example=tokens_per_example, **kwargs)
        self.step_decay = schedule  # the schedule Seesaw replaces

    def _growth_cuts(self, examples_seen: int) -> int:
        """Cuts turned into batch growth (the rest stay on the learning rate)."""
        cuts = self.step_decay.cuts(examples_seen)
        room = int(math.floor(math.log(self.max_batch / self.base_batch) / math.log(self.a) + 1e-9))
        return min(cuts, max(room, 0))

    def target(self, examples_seen, monitor=None):
        return float(self.base_batch * self.a ** self._growth_cuts(examples_seen))

    def lr_factor(self, examples_seen, global_batch):
        cuts = self.step_decay.cuts(examples_seen)
        grown = self._growth_cuts(examples_seen)
        per_growth = 1.0 / math.sqrt(self.a) if self.optimizer == "adam" else 1.0
        return per_growth**grown * self.a ** (-(cuts - grown))
