"""Race batch-size schedules to a held-out target loss: steps, tokens and wall-clock, over seeds.

Five schedules train the same workload from the same initialisations (one per seed) until the
held-out loss reaches ``target_loss``:

* ``constant_small``: the small batch throughout (the baseline);
* ``constant_large``: the large batch throughout (learning rate by the batch rule);
* ``noise_ramp``: :class:`~batchlaw.schedule.NoiseScaleRamp`, from the small batch towards
  ``c * B_simple`` measured by a :class:`~batchlaw.noise.GradientNoiseMonitor` in the run;
* ``cbs_ramp``: :class:`~batchlaw.schedule.CBSRamp` from a branched CBS measurement
  (:mod:`batchlaw.sweep.branched_workload`) on the constant-small run of the first seed,
  checkpointed at fractions of that run's examples-to-target (its cost is reported apart);
* ``seesaw``: :class:`~batchlaw.schedule.Seesaw` with milestones at fractions of the same.

Steps to the target are read between the last evaluation above it and the first at or below it
by :func:`batchlaw._crossing.crossing_step` (the rule of the sweep trials); examples and
wall-clock are interpolated linearly in steps between the same two evaluations. Wall-clock
excludes evaluation. Intervals over seeds are Student-t 95% intervals of the mean, clipped at 0
(with 3 seeds they are wide: t = 4.30).
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .._crossing import crossing_step
from .._validation import check_positive_float, check_positive_int
from .batch import apply_choice
from .ramps import CBSRamp, ConstantBatch, NoiseScaleRamp, Seesaw

__all__ = ["CompareConfig", "compare_schedules", "train_to_target", "SCHEMA", "SCHEDULES"]

SCHEMA = "batchlaw.schedule_compare/1"
SCHEDULES = ("constant_small", "constant_large", "noise_ramp", "cbs_ramp", "seesaw")
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


@dataclass(frozen=True)
class CompareConfig:
    """What the comparison trains. Batches in examples.

    Attributes:
        workload, workload_kwargs: the built-in workload.
        target_loss: the held-out loss to reach.
        seeds: initialisation and data seeds.
        small_batch, large_batch: the two constant batches; ramps go from small to at most large.
        lr: the learning rate at the small batch (constant, after ``warmup`` examples).
        max_examples: budget per run.
        eval_every: examples between held-out evaluations.
        noise_c, hysteresis: the noise-scale ramp's ``c`` and hysteresis.
        cbs_tolerance: relative tolerance of the branched CBS measurement.
        cbs_factor: the CBS ramp's batch is ``cbs_factor * CBS(t)`` (< 1 leaves a margin).
        cbs_budget: examples per branch (default ``16 * max(k) * small_batch``).
        cbs_fractions: checkpoints of the CBS measurement, as fractions of the constant-small
            run's examples to target (seed ``seeds[0]``).
        seesaw_fractions: Seesaw's milestones, as the same fractions.
        warmup: linear learning-rate warm-up (examples).
        lr_rule: ``"sqrt"`` / ``"linear"``; ``None``: the workload's.
        schedules: which schedules to run.
    """

    workload: str = "bytegpt"
    target_loss: float = 2.5
    seeds: tuple = (0, 1, 2)
    small_batch: int = 8
    large_batch: int = 64
    lr: float | None = None
    max_examples: int = 200_000
    eval_every: int = 256
    noise_c: float = 1.0
    hysteresis: float = 0.25
    cbs_tolerance: float = 0.01
    cbs_fractions: tuple = (0.0, 0.125, 0.25, 0.5)
    cbs_budget: int | None = None
    cbs_factor: float = 1.0
    seesaw_fractions: tuple = (0.25, 0.5, 0.75)
    warmup: int = 0
    lr_rule: str | None = None
    workload_kwargs: dict = field(default_factory=dict)
    schedules: tuple = SCHEDULES

    def __post_init__(self) -> None:
        check_positive_float("target_loss", self.target_loss)
        check_positive_int("small_batch", self.small_batch, minimum=2)
        check_positive_int("large_batch", self.large_batch)
        if self.large_batch <= self.small_batch:
            raise ValueError(f"The 'large_batch' parameter ({self.large_batch}) must exceed 'small_batch' ({self.small_batch}).")
        check_positive_int("max_examples", self.max_examples)
        check_positive_int("eval_every", self.eval_every)
        if not self.seeds:
            raise ValueError("The 'seeds' parameter must list at least one seed.")
        for s in self.schedules:
            if s not in SCHEDULES:
                raise ValueError(f"The 'schedules' parameter must hold names from {', '.join(SCHEDULES)}. Got {s!r}.")
        if "constant_small" not in self.schedules:
            raise ValueError("The 'schedules' parameter must include 'constant_small' (the baseline).")

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("seeds", "cbs_fractions", "seesaw_fractions", "schedules"):
            d[k] = list(d[k])
        return d


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


def train_to_target(workload, schedule, *, seed: int, target_loss: float, max_examples: int, eval_every: int,
                    monitor_micro: bool = False) -> dict:
    """Train ``workload`` with ``schedule`` until the held-out loss reaches ``target_loss``.

    Args:
        workload: a :class:`~batchlaw.workloads.Workload`.
        schedule: a :class:`~batchlaw.schedule.BatchSchedule`.
        seed: initialisation and data seed.
        target_loss: held-out loss to reach.
        max_examples: budget.
        eval_every: examples between evaluations.
        monitor_micro: attach a :class:`~batchlaw.noise.GradientNoiseMonitor` (for the noise ramp).

    Returns:
        ``status`` (``reached`` / ``budget`` / ``diverged``), ``steps``, ``examples``,
        ``tokens``, ``wall_s`` to the target (``None`` unless reached), ``batches`` (the
        global batch at each change: ``[[step, examples seen, batch], ...]``) and ``curve``.
    """
    import torch

    from ..noise import GradientNoiseMonitor

    model = workload.make_model(seed)
    opt = workload.make_optimizer(model, 1e-3)
    gen = torch.Generator().manual_seed(seed + 1)
    monitor = GradientNoiseMonitor(model, ema_beta=0.95) if monitor_micro else None
    seen, steps, wall = 0, 0, 0.0
    prev = (0, 0, 0.0, workload.eval_loss(model))
    curve, batches = [list(prev)], []
    status, hit, next_eval = "budget", None, eval_every
    try:
        while seen < max_examples:
            t0 = time.perf_counter()
            c = schedule.step(seen, monitor)
            if c.changed or not batches:
                batches.append([steps, seen, c.global_batch])
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
                cur = (steps, seen, wall, workload.eval_loss(model))
                curve.append(list(cur))
                if cur[3] <= target_loss:
                    status, hit = "reached", _interp(curve, target_loss)
                    break
                prev = cur
    finally:
        if monitor is not None:
            monitor.remove()
    tpe = workload.tokens_per_example
    out = {"status": status, "steps": None, "examples": None, "tokens": None, "wall_s": None,
           "final_loss": curve[-1][3], "batches": batches, "curve": curve[:: max(1, len(curve) // 200)]}
    if hit is not None:
        out.update(steps=hit[0], examples=hit[1], tokens=hit[1] * tpe if tpe else None, wall_s=hit[2])
    return out


def _interval(values: list[float]) -> dict:
    vals = [v for v in values if v is not None]
    if len(vals) < len(values) or not vals:
        return {"mean": None, "ci": [None, None], "values": values}
    n = len(vals)
    mean = sum(vals) / n
    if n == 1:
        return {"mean": mean, "ci": [None, None], "values": values}
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    half = _T95.get(n - 1, 1.96) * sd / math.sqrt(n)
    return {"mean": mean, "ci": [max(0.0, mean - half), mean + half], "values": values}  # all quantities are >= 0


def _rule(workload, cfg) -> str:
    return cfg.lr_rule or ("sqrt" if workload.lr_scaling == 0.5 else "linear")


def compare_schedules(cfg: CompareConfig, *, store: str | Path | None = None, progress=None,
                      threads: int | None = 1) -> dict:
    """Run the comparison; returns the ``batchlaw.schedule_compare/1`` document.

    Args:
        cfg: the comparison.
        store: SQLite file for the branched CBS measurement (default: a temporary one).
        progress: ``callable(str)`` told about each finished run (``None``: silent).
        threads: torch CPU threads (``None`` leaves torch's setting).
    """
    from ..schedule.lr_schedule import LRSchedule
    from ..sweep.branched_workload import WorkloadBranchConfig, measure_workload_cbs
    from ..workloads import get_workload

    import torch

    if threads:
        torch.set_num_threads(threads)
    say = progress or (lambda msg: None)
    wl = get_workload(cfg.workload, **cfg.workload_kwargs)
    lr0 = cfg.lr if cfg.lr is not None else wl.default_lr
    rule = _rule(wl, cfg)
    tpe = wl.tokens_per_example
    small, large = cfg.small_batch, cfg.large_batch

    def lr():
        return LRSchedule(lr0, warmup=cfg.warmup, tokens_per_example=None)

    common = dict(lr_rule=rule, max_micro_batch=large)
    runs: dict[str, list[dict]] = {}

    def run(name, make, seeds, monitor=False):
        for seed in seeds:
            r = train_to_target(wl, make(), seed=seed, target_loss=cfg.target_loss, max_examples=cfg.max_examples,
                                eval_every=cfg.eval_every, monitor_micro=monitor)
            r["seed"] = seed
            runs.setdefault(name, []).append(r)
            say(f"{name} seed {seed}: {r['status']}, steps {r['steps']}, examples {r['examples']}")

    run("constant_small", lambda: ConstantBatch(small, lr=lr(), **common), cfg.seeds)
    ref = runs["constant_small"][0]
    notes, measurement = [], None
    if ref["examples"] is None:
        notes.append("The constant small batch did not reach the target on the first seed: the CBS checkpoints and "
                     "Seesaw milestones are placed at fractions of the budget instead.")
    e_ref = ref["examples"] or cfg.max_examples
    if "constant_large" in cfg.schedules:
        run("constant_large", lambda: ConstantBatch(large, base_batch=small, lr=lr(), **common), cfg.seeds)
    if "noise_ramp" in cfg.schedules:
        run("noise_ramp", lambda: NoiseScaleRamp(small, lr(), max_batch=large, c=cfg.noise_c,
                                                  hysteresis=cfg.hysteresis, **common), cfg.seeds, monitor=True)
    if "cbs_ramp" in cfg.schedules:
        kmax = 1
        while kmax * 2 * small <= large:
            kmax *= 2
        ks = tuple(2**i for i in range(int(math.log2(kmax)) + 1))
        points = tuple(sorted({int(f * e_ref) // small * small for f in cfg.cbs_fractions}))
        bcfg = WorkloadBranchConfig(workload=cfg.workload, base_batch=small, lr=lr0, checkpoints=points,
                                    budget=cfg.cbs_budget or kmax * small * 16, multipliers=ks, tolerance=cfg.cbs_tolerance,
                                    lr_rule=rule, seeds=(cfg.seeds[0],), trunk_seed=cfg.seeds[0],
                                    workload_kwargs=dict(cfg.workload_kwargs), name="compare_cbs")
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(store) if store is not None else Path(tmp) / "branches.db"
            measurement = measure_workload_cbs(bcfg, path)
        cost = time.perf_counter() - t0
        say(f"branched CBS: {[(p['t_examples'], p['cbs'], p['censored']) for p in measurement.points]}")
        run("cbs_ramp", lambda: CBSRamp.from_measurement(measurement, small, lr(), max_batch=large,
                                                          factor=cfg.cbs_factor, **common), cfg.seeds)
    if "seesaw" in cfg.schedules:
        miles = [f * e_ref for f in cfg.seesaw_fractions]
        run("seesaw", lambda: Seesaw(small, lr0, milestones=miles, a=2, max_batch=large, warmup=cfg.warmup,
                                     optimizer="adam" if rule == "sqrt" else "sgd", max_micro_batch=large), cfg.seeds)

    base = {r["seed"]: r for r in runs["constant_small"]}
    summary = {}
    for name, rs in runs.items():
        row = {k: _interval([r[k] for r in rs]) for k in ("steps", "examples", "tokens", "wall_s")}
        for k in ("steps", "examples", "wall_s"):
            ratios = [None if r[k] is None or base[r["seed"]][k] is None else r[k] / base[r["seed"]][k] for r in rs]
            row[f"{k}_ratio"] = _interval(ratios)
        row["reached"] = sum(r["status"] == "reached" for r in rs)
        row["runs"] = rs
        summary[name] = row
    goal = []
    for name in ("noise_ramp", "cbs_ramp", "seesaw"):
        if name in summary:
            s, e = summary[name]["steps_ratio"]["mean"], summary[name]["examples_ratio"]["mean"]
            goal.append({"schedule": name, "steps_ratio": s, "tokens_ratio": e,
                         "met": s is not None and e is not None and s <= 0.7 and e <= 1.1})
    doc = {"schema": "batchlaw.schedule_compare/1", "config": {**cfg.to_dict(), "lr": lr0, "lr_rule": rule, "tokens_per_example": tpe},
           "workload": wl.describe(), "unit": "examples", "schedules": summary,
           "goal": {"rule": "a ramp reaches the target in <= 0.7x the steps of constant_small with <= 1.1x its tokens "
                            "(means of per-seed ratios)", "results": goal, "met": any(g["met"] for g in goal)},
           "notes": notes}
    if measurement is not None:
        doc["cbs_measurement"] = {**measurement.to_dict(), "wall_s": cost}
    return doc
