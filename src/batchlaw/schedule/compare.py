"""Race batch-size schedules to a held-out target loss and judge them against the constant-batch frontier.

Every comparison first trains **the frontier**: constant batches ``small * 2^j`` up to
``frontier_max_batch`` (and the large batch), same LR rule, each over every seed, to the
target. Then each schedule trains from the same initialisations (one per seed):

* ``noise_ramp``: :class:`~batchlaw.schedule.NoiseScaleRamp`, from the small batch towards
  ``c * B_simple`` measured by a :class:`~batchlaw.noise.GradientNoiseMonitor` in the run;
* ``cbs_ramp``: :class:`~batchlaw.schedule.CBSRamp` from a branched CBS measurement
  (:mod:`batchlaw.sweep.branched_workload`) on the constant-small run of the first seed,
  checkpointed at fractions of that run's examples-to-target (its cost is reported apart);
* ``seesaw``: :class:`~batchlaw.schedule.Seesaw` with milestones at fractions of the same;
* ``fixed_ramp``: :class:`~batchlaw.schedule.FixedRamp` with the stages given;
* ``controller``: :class:`~batchlaw.schedule.BatchController`, bound to each run so it may
  branch; its branches' examples, steps and seconds are added to the run's (and shown apart);
* ``constant_small`` / ``constant_large``: the frontier's runs at those batches, listed beside.

More schedules plug in through :mod:`batchlaw.schedule.compare_registry`. Each schedule gets
its **Pareto gain** ``1 - S / S_frontier(1.1 E)`` and its example overhead against the frontier
(:mod:`batchlaw.schedule.frontier`), and its held-out loss at a common budget of examples
(:mod:`batchlaw.schedule.compare_analysis`), with Student-t 95% intervals over seeds.

The learning rate follows the rule from the small batch (square root for Adam, linear for SGD)
and is **capped** at the workload's stability limit: a workload that knows it
(:attr:`~batchlaw.workloads.Workload.max_stable_lr`, e.g. ``2 / h_max`` for the NQM) is capped at
``LR_CAP_MARGIN`` times it; otherwise a short probe (:func:`~batchlaw.schedule.lr_probe.probe_lr_cap`)
finds it. A run that diverges anyway is reported as diverged.

Steps to the target are read between the last evaluation above it and the first at or below it
by :func:`batchlaw._crossing.crossing_step` (the rule of the sweep trials); examples and
wall-clock are interpolated linearly in steps between the same two evaluations. Wall-clock excludes evaluation.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .._crossing import crossing_step
from .._validation import check_choice, check_learning_rate, check_positive_float, check_positive_int
from .batch import apply_choice
from .compare_registry import CONSTANT_SCHEDULES, SCHEDULE_FACTORIES, CompareContext, cbs_multipliers
from .ramps import ConstantBatch

__all__ = ["CompareConfig", "compare_schedules", "train_to_target", "frontier_grid", "available_schedules", "SCHEMA",
           "SCHEDULES", "LR_CAP_MARGIN"]

SCHEMA = "batchlaw.schedule_compare/2"
#: The schedules raced by default.
SCHEDULES = ("constant_small", "constant_large", "noise_ramp", "cbs_ramp", "seesaw", "controller")
#: Fraction of a known stability limit used as the LR cap. For the NQM at ``a = 2 / h_max`` the
#: sharpest direction stops contracting and the noise floor ``a c / (B h (2 - a h))`` diverges;
#: at 0.75 of it the direction contracts by 4x per step and the floor is at most twice the
#: small-LR floor, while at 0.9 the floor of batch 256 in the issue-21 NQM setting
#: (dim 100, c_exponent 0.5, target 0.05) already lies above the target.
LR_CAP_MARGIN = 0.75


def available_schedules() -> tuple[str, ...]:
    """Every name ``schedules`` accepts: the constant batches and the registered schedules."""
    return CONSTANT_SCHEDULES + tuple(SCHEDULE_FACTORIES)


def _check_fractions(name: str, values) -> tuple:
    vals = tuple(values)
    for f in vals:
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not (0 <= f < 1):
            raise ValueError(f"The '{name}' parameter must hold fractions in [0, 1). Got {list(vals)!r} instead.")
    return vals


@dataclass(frozen=True)
class CompareConfig:
    """What the comparison trains. Batches in examples.

    Attributes:
        workload, workload_kwargs: the workload (built-in name or ``module:Class``).
        target_loss: the held-out loss to reach (below every seed's initial loss).
        seeds: initialisation and data seeds (distinct).
        small_batch, large_batch: ramps go from the small batch to at most the large one.
        frontier_max_batch: the largest constant batch of the frontier (default: ``large_batch``).
        allowance: the Pareto gain compares with ``S_frontier(allowance x examples)``.
        lr: the learning rate at the small batch (constant, after ``warmup`` examples).
        lr_rule: ``"sqrt"`` / ``"linear"``; ``None``: the workload's.
        lr_cap: cap on every run's learning rate; ``None``: ``LR_CAP_MARGIN`` times the
            workload's known stability limit, else found by the LR probe.
        lr_probe_steps: steps of each probe run.
        max_examples: budget per run.
        eval_every: examples between held-out evaluations.
        noise_c, hysteresis: the noise-scale ramp's ``c`` and hysteresis.
        cbs_tolerance: relative tolerance of the branched CBS measurement.
        cbs_factor: the CBS ramp's batch is ``cbs_factor * CBS(t)`` (< 1 leaves a margin).
        cbs_budget: examples per branch (default ``16 * max(k) * small_batch``).
        cbs_fractions: checkpoints of the CBS measurement, as fractions of the constant-small
            run's examples to target (seed ``seeds[0]``).
        seesaw_fractions: Seesaw's milestones, as the same fractions.
        ramp_stages: ``fixed_ramp``'s ``[(examples seen, batch), ...]``, the first at 0.
        warmup: linear learning-rate warm-up (examples).
        schedules: which schedules to run (:func:`available_schedules`).
    """

    workload: str = "bytegpt"
    target_loss: float = 2.5
    seeds: tuple = (0, 1, 2)
    small_batch: int = 8
    large_batch: int = 64
    frontier_max_batch: int | None = None
    allowance: float = 1.1
    lr: float | None = None
    lr_rule: str | None = None
    lr_cap: float | None = None
    lr_probe_steps: int = 16
    max_examples: int = 200_000
    eval_every: int = 256
    noise_c: float = 1.0
    hysteresis: float = 0.25
    cbs_tolerance: float = 0.01
    cbs_fractions: tuple = (0.0, 0.125, 0.25, 0.5)
    cbs_budget: int | None = None
    cbs_factor: float = 1.0
    seesaw_fractions: tuple = (0.25, 0.5, 0.75)
    ramp_stages: tuple = ()
    warmup: int = 0
    workload_kwargs: dict = field(default_factory=dict)
    schedules: tuple = SCHEDULES

    def __post_init__(self) -> None:
        check_positive_float("target_loss", self.target_loss)
        check_positive_int("small_batch", self.small_batch, minimum=2)
        check_positive_int("large_batch", self.large_batch)
        if self.large_batch <= self.small_batch:
            raise ValueError(f"The 'large_batch' parameter ({self.large_batch}) must exceed 'small_batch' ({self.small_batch}).")
        if self.frontier_max_batch is not None:
            check_positive_int("frontier_max_batch", self.frontier_max_batch)
            if self.frontier_max_batch < self.large_batch:
                raise ValueError(f"The 'frontier_max_batch' parameter ({self.frontier_max_batch}) must be at least "
                                 f"'large_batch' ({self.large_batch}): the frontier must cover every batch a ramp uses.")
        if not (isinstance(self.allowance, (int, float)) and math.isfinite(self.allowance) and 1 <= self.allowance <= 10):
            raise ValueError(f"The 'allowance' parameter must be a number in [1, 10]. Got {self.allowance!r} instead.")
        check_positive_int("max_examples", self.max_examples)
        check_positive_int("eval_every", self.eval_every)
        check_positive_int("lr_probe_steps", self.lr_probe_steps)
        check_positive_int("warmup", self.warmup, minimum=0)
        for name in ("lr", "lr_cap"):
            if getattr(self, name) is not None:
                check_learning_rate(name, getattr(self, name))
        if self.lr_rule is not None:
            check_choice("lr_rule", self.lr_rule, ("sqrt", "linear"))
        if not self.seeds:
            raise ValueError("The 'seeds' parameter must list at least one seed.")
        for s in self.seeds:
            check_positive_int("seeds", s, minimum=0)
        if len(set(self.seeds)) < len(self.seeds):
            raise ValueError(f"The 'seeds' parameter must list distinct seeds. Got {list(self.seeds)!r}: a repeated seed "
                             "repeats the same run and would shrink the intervals without new evidence.")
        check_positive_float("noise_c", self.noise_c)
        check_positive_float("hysteresis", self.hysteresis, allow_zero=True)
        check_positive_float("cbs_tolerance", self.cbs_tolerance)
        check_positive_float("cbs_factor", self.cbs_factor)
        _check_fractions("cbs_fractions", self.cbs_fractions)
        _check_fractions("seesaw_fractions", self.seesaw_fractions)
        if self.cbs_budget is not None:
            step = cbs_multipliers(self.small_batch, self.large_batch)[-1] * self.small_batch
            check_positive_int("cbs_budget", self.cbs_budget)
            if self.cbs_budget % step:
                raise ValueError(f"The 'cbs_budget' parameter ({self.cbs_budget} examples) must be a multiple of the "
                                 f"largest branch batch, {step} (max k x small batch).")
        known = available_schedules()
        for s in self.schedules:
            if s not in known:
                raise ValueError(f"The 'schedules' parameter must hold names from {', '.join(known)}. Got {s!r}.")
        if not self.schedules:
            raise ValueError(f"The 'schedules' parameter must name at least one of {', '.join(known)}.")
        if "fixed_ramp" in self.schedules or self.ramp_stages:
            self._check_stages()

    def _check_stages(self) -> None:
        stages = [tuple(s) for s in self.ramp_stages]
        if not stages or stages[0][0] != 0:
            raise ValueError(f"The 'ramp_stages' parameter must start with a stage at 0 examples (the fixed_ramp "
                             f"schedule needs it). Got {stages!r}.")
        for start, batch in stages:
            check_positive_int("ramp_stages start", start, minimum=0)
            check_positive_int("ramp_stages batch", batch)
            if not self.small_batch <= batch <= self.large_batch:
                raise ValueError(f"The 'ramp_stages' batches must lie in [small_batch, large_batch] = "
                                 f"[{self.small_batch}, {self.large_batch}]. Got {batch}.")
        if any(b[0] <= a[0] for a, b in zip(stages, stages[1:])):
            raise ValueError(f"The starts in 'ramp_stages' must increase. Got {[s for s, _ in stages]!r}.")

    @property
    def frontier_cap(self) -> int:
        """The largest constant batch of the frontier."""
        return self.frontier_max_batch or self.large_batch

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("seeds", "cbs_fractions", "seesaw_fractions", "schedules"):
            d[k] = list(d[k])
        d["ramp_stages"] = [list(s) for s in self.ramp_stages]
        d["frontier_max_batch"] = self.frontier_cap
        return d


def frontier_grid(small: int, large: int, cap: int) -> list[int]:
    """The constant batches of the frontier: ``small * 2^j`` up to ``cap``, with ``large`` and ``cap``.

    Examples:
        >>> frontier_grid(8, 48, 64)
        [8, 16, 32, 48, 64]
    """
    grid, b = {large, cap}, small
    while b <= cap:
        grid.add(b)
        b *= 2
    return sorted(grid)


def _interp(curve, target):
    """The crossing of ``target`` after the evaluations ``[steps, examples, seconds, loss]`` of ``curve``:
    steps by :func:`batchlaw._crossing.crossing_step`, examples and seconds linear in steps between the
    last two evaluations."""
    (s0, e0, w0, l0), (s1, e1, w1, _) = curve[-2], curve[-1]
    if l0 <= target:
        return s1, e1, w1
    s = crossing_step([c[0] for c in curve[-3:]], [c[3] for c in curve[-3:]], target)
    f = (s - s0) / (s1 - s0)
    return s, e0 + f * (e1 - e0), w0 + f * (w1 - w0)


def _branch_cost(schedule) -> tuple[int, int, float]:
    """``(examples, steps, seconds)`` a schedule has spent in branches so far (0 for one that never branches)."""
    return (int(getattr(schedule, "branch_examples", 0)), int(getattr(schedule, "branch_steps_taken", 0)),
            float(getattr(schedule, "branch_seconds", 0.0)))


def train_to_target(workload, schedule, *, seed: int, target_loss: float | None, max_examples: int, eval_every: int,
                    monitor_micro: bool = False, max_lr: float | None = None) -> dict:
    """Train ``workload`` with ``schedule`` until the held-out loss reaches ``target_loss``.

    The one training loop of the comparison: the constant batches, the ramps and the
    :class:`~batchlaw.schedule.BatchController` all train here, from the same initialisation and
    data stream per seed. A schedule with a ``bind_workload(workload, model, optimizer, seed=...)``
    method (the controller) is bound to the run before the first step, so it may branch; what its
    branches spend (``branch_examples``, ``branch_steps_taken``, ``branch_seconds``) is **added** to
    the run's examples, steps, tokens and wall-clock, in the budget and on the curve, so every
    figure the comparison derives (the Pareto gain, the loss at a common budget) pays for them.
    Branches are counted as far as the evaluation that saw the target reached.

    Args:
        workload: a :class:`~batchlaw.workloads.Workload`.
        schedule: a :class:`~batchlaw.schedule.BatchSchedule`.
        seed: initialisation and data seed (it also seeds a bound schedule's branches).
        target_loss: held-out loss to reach; must be below the initial model's. ``None``: train
            until ``max_examples`` (a fixed budget; ``status`` is then ``budget``).
        max_examples: budget, branch examples included.
        eval_every: training examples of the trunk between evaluations.
        monitor_micro: attach a :class:`~batchlaw.noise.GradientNoiseMonitor` (noise ramp, controller).
        max_lr: cap on the learning rate the schedule asks for (the stability limit); ``None``: no cap.

    Returns:
        ``status`` (``reached`` / ``budget`` / ``diverged``), ``steps``, ``examples``,
        ``tokens``, ``wall_s`` to the target, branches included (``None`` unless reached),
        ``final_loss``, ``lr_capped_steps`` (steps whose LR the cap lowered), ``batches`` (the
        global batch at each change: ``[[trunk step, trunk examples seen, batch], ...]``) and
        ``curve`` (every evaluation: ``[[steps, examples, seconds, loss], ...]``, branches
        included, the initial one first). For a schedule that branches, also ``trunk_steps`` and
        ``trunk_examples`` (to the target), ``branch`` (``examples``, ``steps``, ``seconds``,
        ``eval_examples`` and ``share``: branch examples over the run's examples) and ``controller``
        (its :meth:`~batchlaw.schedule.BatchController.report`: settings and every decision).

    Raises:
        ValueError: the initial model's held-out loss is already at or below ``target_loss``
            (every schedule would "reach" it at the first evaluation).
    """
    import torch

    from ..noise import GradientNoiseMonitor

    model = workload.make_model(seed)
    start = workload.eval_loss(model)
    if target_loss is not None and start <= target_loss:
        raise ValueError(f"The 'target_loss' parameter ({target_loss:g}) is not below the initial held-out loss "
                         f"({start:.4g}, seed {seed}): it is reached before training. Choose a lower target.")
    opt = workload.make_optimizer(model, 1e-3)
    gen = torch.Generator().manual_seed(seed + 1)
    monitor = GradientNoiseMonitor(model, ema_beta=0.95) if monitor_micro else None
    branching = hasattr(schedule, "bind_workload")
    if branching:
        schedule.bind_workload(workload, model, opt, seed=seed)
    seen, steps, wall, capped = 0, 0, 0.0, 0
    trunk = [(0, 0, 0.0, start)]  # the trunk's own (steps, examples, seconds, loss) at each evaluation
    spent = [(0, 0, 0.0)]  # the branches' (examples, steps, seconds) so far at each evaluation
    batches = []
    status, hit, next_eval = "budget", None, eval_every
    try:
        while seen + _branch_cost(schedule)[0] < max_examples:
            t0 = time.perf_counter()
            c = schedule.step(seen, monitor)  # a controller may branch here: its seconds are counted apart
            if c.changed or not batches:
                batches.append([steps, seen, c.global_batch])
            if max_lr is not None and c.lr > max_lr:
                c = replace(c, lr=max_lr)
                capped += 1
            total = 0.0
            for _ in range(c.accumulation):
                loss = workload.loss(model, workload.sample_batch(c.micro_batch_size, gen)) / c.accumulation
                loss.backward()
                total += float(loss.detach())
            if monitor is not None:
                monitor.step(c.micro_batch_size)
            apply_choice(opt, c)
            opt.step()
            opt.zero_grad(set_to_none=True)
            seen += c.global_batch
            steps += 1
            wall += time.perf_counter() - t0
            if not math.isfinite(total):
                status = "diverged"
                break
            if seen >= next_eval:
                while next_eval <= seen:
                    next_eval += eval_every
                cost = _branch_cost(schedule)
                trunk.append((steps, seen, wall - cost[2], workload.eval_loss(model)))
                spent.append(cost)
                if not math.isfinite(trunk[-1][3]):
                    status = "diverged"
                    break
                if target_loss is not None and trunk[-1][3] <= target_loss:
                    status, hit = "reached", _interp(trunk, target_loss)
                    break
    finally:
        if monitor is not None:
            monitor.remove()
        if branching:
            schedule.unbind()
    curve = [[s + b[1], e + b[0], w + b[2], v if math.isfinite(v) else None] for (s, e, w, v), b in zip(trunk, spent)]
    tpe = workload.tokens_per_example
    out = {"status": status, "steps": None, "examples": None, "tokens": None, "wall_s": None,
           "final_loss": curve[-1][3], "lr_capped_steps": capped, "batches": batches, "curve": curve}
    b_ex, b_steps, b_sec = spent[-1]
    if hit is not None:
        examples = hit[1] + b_ex
        out.update(steps=hit[0] + b_steps, examples=examples, tokens=examples * tpe if tpe else None,
                   wall_s=hit[2] + b_sec)
    if branching:
        examples = out["examples"] if hit is not None else seen + b_ex
        out.update(trunk_steps=None if hit is None else hit[0], trunk_examples=None if hit is None else hit[1],
                   branch={"examples": b_ex, "steps": b_steps, "seconds": b_sec,
                           "eval_examples": int(getattr(schedule, "branch_eval_examples", 0)),
                           "share": b_ex / examples if examples else 0.0},
                   controller=schedule.report())
    return out


def _rule(workload, cfg) -> str:
    return cfg.lr_rule or ("sqrt" if workload.lr_scaling == 0.5 else "linear")


def _thin(curve: list, most: int = 100) -> list:
    step = max(1, len(curve) // most)
    out = curve[::step]
    return out if out[-1] == curve[-1] else [*out, curve[-1]]


def compare_schedules(cfg: CompareConfig, *, store: str | Path | None = None, progress: bool = False,
                      threads: int | None = 1) -> dict:
    """Train the frontier and the schedules; returns the ``batchlaw.schedule_compare/2`` document.

    Args:
        cfg: the comparison.
        store: SQLite file for the branched CBS measurement (default: a temporary one).
        progress: show a progress bar (runs done, out of all) on stderr.
        threads: torch CPU threads (``None`` leaves torch's setting).

    Raises:
        ValueError: the target is not below some seed's initial held-out loss, or the
            learning rate fails its own probe; both before any training.
    """
    import torch
    from tqdm.auto import tqdm

    from ..workloads import get_workload
    from .compare_analysis import analyse_comparison
    from .lr_probe import initial_losses, resolve_lr_cap, rule_lr
    from .lr_schedule import LRSchedule

    if threads:
        torch.set_num_threads(threads)
    wl = get_workload(cfg.workload, **cfg.workload_kwargs)
    lr0 = cfg.lr if cfg.lr is not None else wl.default_lr
    rule = _rule(wl, cfg)
    small, large, seeds = cfg.small_batch, cfg.large_batch, list(cfg.seeds)
    grid = frontier_grid(small, large, cfg.frontier_cap)
    start = initial_losses(wl, seeds)
    low = {s: v for s, v in start.items() if v <= cfg.target_loss}
    if low:
        raise ValueError(f"The 'target_loss' parameter ({cfg.target_loss:g}) is not below the initial held-out loss of "
                         f"seed(s) {sorted(low)} ({', '.join(f'{v:.4g}' for v in low.values())}): every schedule would "
                         "'reach' it before training. Choose a lower target.")
    cap = resolve_lr_cap(cfg, wl, lr0, rule, grid, LRSchedule(lr0, warmup=cfg.warmup), margin=LR_CAP_MARGIN)
    trained = [s for s in cfg.schedules if s not in CONSTANT_SCHEDULES]
    bar = tqdm(total=len(seeds) * (len(grid) + len(trained)), desc="schedule compare", unit="run", disable=not progress,
               leave=False)

    def run(builder, seed: int, monitor: bool = False) -> dict:
        r = train_to_target(wl, builder(), seed=seed, target_loss=cfg.target_loss, max_examples=cfg.max_examples,
                            eval_every=cfg.eval_every, monitor_micro=monitor, max_lr=cap["lr"])
        bar.update(1)
        return {"seed": seed, **r}

    frontier_runs: dict[int, list[dict]] = {}
    try:
        for b in grid:
            lr_b = rule_lr(lr0, b, small, rule)
            lr_b = lr_b if cap["lr"] is None else min(lr_b, cap["lr"])
            frontier_runs[b] = []
            for seed in seeds:
                bar.set_postfix_str(f"constant batch {b}, seed {seed}")
                r = run(lambda b=b: ConstantBatch(b, base_batch=small, lr=LRSchedule(lr0, warmup=cfg.warmup),
                                                  lr_rule=rule, max_micro_batch=large), seed)
                frontier_runs[b].append({"batch": b, "lr": lr_b, **r})
        ref = next(r for r in frontier_runs[small] if r["seed"] == seeds[0])
        notes = []
        if ref["examples"] is None:
            notes.append("The constant small batch did not reach the target on the first seed: the CBS checkpoints and "
                         "Seesaw milestones are placed at fractions of the budget instead.")
        ctx = CompareContext(cfg=cfg, workload=wl, lr=lr0, lr_rule=rule, lr_cap=cap["lr"],
                             reference_examples=ref["examples"] or cfg.max_examples,
                             store=None if store is None else Path(store), progress=progress, notes=notes)
        schedule_runs = {}
        for name in trained:
            entry = SCHEDULE_FACTORIES[name]
            bar.set_postfix_str(f"{name}: preparing")
            builder = entry.factory(ctx)
            schedule_runs[name] = []
            for seed in seeds:
                bar.set_postfix_str(f"{name}, seed {seed}")
                schedule_runs[name].append(run(builder, seed, entry.monitor))
    finally:
        bar.close()
    constant = {n: small if n == "constant_small" else large for n in cfg.schedules if n in CONSTANT_SCHEDULES}
    a = analyse_comparison(grid=grid, frontier_runs=frontier_runs, schedule_runs=schedule_runs, constant=constant,
                           seeds=seeds, allowance=cfg.allowance, tokens_per_example=wl.tokens_per_example)
    for rs in [*frontier_runs.values(), *schedule_runs.values()]:
        for r in rs:
            r["curve"] = _thin(r["curve"])
    if cap["lr"] is not None and any(rule_lr(lr0, b, small, rule) > cap["lr"] for b in grid):
        notes.append(f"The LR rule is capped at {cap['lr']:.4g} ({cap['source']}): batches whose rule LR exceeds it "
                     "train at the cap, ramps included.")
    doc = {"schema": "batchlaw.schedule_compare/2",
           "config": {**cfg.to_dict(), "lr": lr0, "lr_rule": rule, "tokens_per_example": wl.tokens_per_example,
                      "frontier_batches": grid, "initial_loss": start},
           "workload": wl.describe(), "unit": "examples", "lr_cap": cap, "frontier": a["frontier"],
           "schedules": a["schedules"], "budget": a["budget"], "goal": a["goal"], "notes": notes + a["notes"]}
    doc.update(ctx.extras)
    return doc
