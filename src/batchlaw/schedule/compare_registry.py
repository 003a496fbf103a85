"""The schedules ``batchlaw schedule compare`` races, by name: one factory each.

A factory receives the comparison's :class:`CompareContext` and returns a *builder*: a callable
without arguments that makes a fresh :class:`~batchlaw.schedule.BatchSchedule` for one run (it
is called once per seed). The constant batches (``constant_small``, ``constant_large``) are not
here: they are points of the constant-batch frontier, which every comparison trains.

Adding a schedule takes a few lines, e.g. a controller of your own::

    from batchlaw.schedule.compare_registry import ScheduleEntry, register_schedule

    register_schedule("my_controller", ScheduleEntry(
        lambda ctx: lambda: MyController(ctx.small_batch, ctx.lr_schedule(), max_batch=ctx.large_batch,
                                         **ctx.common()),
        monitor=True, description="my online controller"))

after which ``CompareConfig(schedules=(..., "my_controller"))`` and ``--schedules ...,my_controller``
accept it. A schedule with a ``bind_workload(workload, model, optimizer, seed=...)`` method is
bound to each run before training (so it may branch), and what its branches spend
(``branch_examples``, ``branch_steps_taken``, ``branch_seconds``) is added to the run's cost, as
for the built-in ``controller`` (:class:`~batchlaw.schedule.BatchController`, with
``planned_examples`` the constant small batch's examples to the target on the first seed).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .controller import BatchController
from .lr_schedule import LRSchedule
from .ramps import CBSRamp, FixedRamp, NoiseScaleRamp, Seesaw

__all__ = ["CompareContext", "ScheduleEntry", "SCHEDULE_FACTORIES", "register_schedule", "CONSTANT_SCHEDULES",
           "controller_factory"]

#: Names of the constant batches, read from the frontier's runs.
CONSTANT_SCHEDULES = ("constant_small", "constant_large")


@dataclass
class CompareContext:
    """What a schedule factory may use.

    Attributes:
        cfg: the :class:`~batchlaw.schedule.compare.CompareConfig`.
        workload: the built workload.
        lr: the learning rate at the small batch.
        lr_rule: ``"sqrt"`` or ``"linear"``.
        lr_cap: the cap on every run's learning rate (``None``: none).
        reference_examples: examples to the target of the constant small batch on the first
            seed (the budget when it did not reach it): where fractions of the run are placed.
        store: SQLite file for a branched measurement (``None``: a temporary one).
        progress: whether the caller shows progress.
        notes: lines for the output's ``notes``; a factory may append.
        extras: top-level entries a factory adds to the output (e.g. ``cbs_measurement``).
    """

    cfg: Any
    workload: Any
    lr: float
    lr_rule: str
    lr_cap: float | None
    reference_examples: float
    store: Path | None = None
    progress: bool = False
    notes: list = field(default_factory=list)
    extras: dict = field(default_factory=dict)

    @property
    def small_batch(self) -> int:
        return self.cfg.small_batch

    @property
    def large_batch(self) -> int:
        return self.cfg.large_batch

    def lr_schedule(self) -> LRSchedule:
        """A fresh LR schedule: ``lr`` after ``cfg.warmup`` examples of linear warm-up."""
        return LRSchedule(self.lr, warmup=self.cfg.warmup)

    def common(self) -> dict:
        """Keyword arguments every ramp shares: the LR rule and the micro-batch limit."""
        return {"lr_rule": self.lr_rule, "max_micro_batch": self.cfg.large_batch}


@dataclass(frozen=True)
class ScheduleEntry:
    """One raceable schedule.

    Attributes:
        factory: ``factory(ctx) -> builder``; ``builder()`` makes the schedule of one run.
        monitor: attach a :class:`~batchlaw.noise.GradientNoiseMonitor` to its runs.
        description: one line for reports.
    """

    factory: Callable[[CompareContext], Callable[[], Any]]
    monitor: bool = False
    description: str = ""


def _noise_ramp(ctx: CompareContext):
    c = ctx.cfg
    return lambda: NoiseScaleRamp(ctx.small_batch, ctx.lr_schedule(), max_batch=ctx.large_batch, c=c.noise_c,
                                  hysteresis=c.hysteresis, **ctx.common())


def cbs_multipliers(small: int, large: int) -> tuple[int, ...]:
    """``k = 1, 2, 4, ...`` up to the largest with ``k * small <= large``."""
    ks = [1]
    while ks[-1] * 2 * small <= large:
        ks.append(ks[-1] * 2)
    return tuple(ks)


def _cbs_ramp(ctx: CompareContext):
    from ..sweep.branched_workload import WorkloadBranchConfig, measure_workload_cbs

    c, small = ctx.cfg, ctx.small_batch
    ks = cbs_multipliers(small, ctx.large_batch)
    points = tuple(sorted({int(f * ctx.reference_examples) // small * small for f in c.cbs_fractions}))
    bcfg = WorkloadBranchConfig(workload=c.workload, base_batch=small, lr=ctx.lr, checkpoints=points,
                                budget=c.cbs_budget or ks[-1] * small * 16, multipliers=ks, tolerance=c.cbs_tolerance,
                                lr_rule=ctx.lr_rule, seeds=(c.seeds[0],), trunk_seed=c.seeds[0],
                                workload_kwargs=dict(c.workload_kwargs), name="compare_cbs")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(ctx.store) if ctx.store is not None else Path(tmp) / "branches.db"
        measurement = measure_workload_cbs(bcfg, path)
    ctx.extras["cbs_measurement"] = {**measurement.to_dict(), "wall_s": time.perf_counter() - t0}
    if ctx.lr_cap is not None and ks[-1] > 1 and ctx.lr * (ks[-1] ** (0.5 if ctx.lr_rule == "sqrt" else 1.0)) > ctx.lr_cap:
        ctx.notes.append("The branched CBS measurement uses the LR rule without the cap, so its largest branches ran at "
                         "a learning rate the compared runs never use.")
    return lambda: CBSRamp.from_measurement(measurement, small, ctx.lr_schedule(), max_batch=ctx.large_batch,
                                            factor=c.cbs_factor, **ctx.common())


def _seesaw(ctx: CompareContext):
    c = ctx.cfg
    miles = [f * ctx.reference_examples for f in c.seesaw_fractions]
    return lambda: Seesaw(ctx.small_batch, ctx.lr, milestones=miles, a=2, max_batch=ctx.large_batch, warmup=c.warmup,
                          optimizer="adam" if ctx.lr_rule == "sqrt" else "sgd", max_micro_batch=ctx.large_batch)


def _fixed_ramp(ctx: CompareContext):
    stages = [(float(s), int(b)) for s, b in ctx.cfg.ramp_stages]
    return lambda: FixedRamp(stages, base_batch=ctx.small_batch, lr=ctx.lr_schedule(), max_batch=ctx.large_batch,
                             **ctx.common())


def controller_factory(ctx: CompareContext, **settings):
    """The ``controller`` entry's builder: a :class:`~batchlaw.schedule.BatchController` from the
    small batch to the large one, with the comparison's LR, rule and cap, and ``planned_examples``
    the reference run's examples (the data budget a user would plan); ``settings`` override its
    other arguments (``margin``, ``window``, ...)."""
    planned = int(ctx.reference_examples)
    return lambda: BatchController(ctx.small_batch, ctx.lr_schedule(), max_batch=ctx.large_batch, max_lr=ctx.lr_cap,
                                   planned_examples=planned, **ctx.common(), **settings)


#: The raceable schedules by name (besides the constant batches).
SCHEDULE_FACTORIES: dict[str, ScheduleEntry] = {
    "noise_ramp": ScheduleEntry(_noise_ramp, monitor=True,
                                description="NoiseScaleRamp: the batch follows c x B_simple measured in the run"),
    "cbs_ramp": ScheduleEntry(_cbs_ramp, description="CBSRamp: the batch follows a branched CBS measurement made on the "
                                                     "first seed's constant-small run"),
    "seesaw": ScheduleEntry(_seesaw, description="Seesaw: step-decay cuts turned into batch growth"),
    "fixed_ramp": ScheduleEntry(_fixed_ramp, description="FixedRamp: the stages given by 'ramp_stages'"),
    "controller": ScheduleEntry(controller_factory, monitor=True,
                                description="BatchController: grows from the windowed noise scale and branch tests "
                                            "(their examples, steps and seconds counted in its cost)"),
}


def register_schedule(name: str, entry: ScheduleEntry) -> None:
    """Make ``name`` raceable by ``compare_schedules`` (replacing an entry of that name).

    Raises:
        ValueError: ``name`` is not an identifier, or names a constant batch.
    """
    if not isinstance(name, str) or not name.isidentifier() or name in CONSTANT_SCHEDULES:
        raise ValueError(f"The 'name' parameter must be an identifier other than {CONSTANT_SCHEDULES}. Got {name!r}.")
    if not isinstance(entry, ScheduleEntry):
        raise ValueError(f"The 'entry' parameter must be a ScheduleEntry. Got {type(entry).__name__}.")
    SCHEDULE_FACTORIES[name] = entry
