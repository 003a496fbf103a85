"""Branched CBS on a built-in workload, with the noise scale measured on the same run.

The trunk trains the workload at ``base_batch`` (backpropagated as ``micro_batches`` equal
micro-batches so the :class:`~batchlaw.noise.GradientNoiseMonitor` measures ``B_simple`` on
every step) and saves model + optimizer checkpoints at the requested points. Branches then
run as in :mod:`batchlaw.sweep.branched` and their loss is the workload's held-out loss. Each
checkpoint carries ``B_simple`` over the trunk steps since the previous checkpoint (with a
95% interval) and the monitor's running EMA at that point, both in examples, so ``CBS(t)``
and ``B_simple(t)`` come from the same run.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from numbers import Integral
from pathlib import Path

from .._validation import check_choice, check_learning_rate, check_positive_int
from .branched import BranchedCBS, BranchStore, _branch_specs, _check_grid, _check_rule, _run_specs, _summarize

__all__ = ["WorkloadBranchConfig", "measure_workload_cbs", "run_workload_branch", "run_workload_trunk"]


@dataclass(frozen=True)
class WorkloadBranchConfig:
    """A branched measurement on a built-in workload. Batches and points are in examples.

    Attributes:
        workload: ``linreg``, ``bytemlp`` or ``bytegpt``.
        base_batch: the trunk's batch ``B``.
        lr: the trunk's (constant) learning rate.
        checkpoints: examples seen at which to branch (multiples of ``base_batch``).
        budget: examples per branch (a multiple of ``max(multipliers) * base_batch``).
        multipliers: the ``k`` tried.
        tolerance, tolerance_kind: the decision rule (:func:`~batchlaw.sweep.branched.cbs_from_losses`).
        lr_rule: ``"sqrt"``, ``"linear"`` or ``"none"``; ``None``: the workload's (square root
            for Adam, linear for SGD).
        seeds: branch data-order seeds (losses are averaged over them).
        trunk_seed: seed of the trunk's weights and data.
        micro_batches: micro-batches per trunk step for the noise-scale measurement.
        workload_kwargs: constructor arguments of the workload.
        name: the measurement's name in the store.
    """

    workload: str
    base_batch: int
    lr: float
    checkpoints: tuple
    budget: int
    multipliers: tuple = (1, 2, 4, 8)
    tolerance: float = 0.01
    tolerance_kind: str = "relative"
    lr_rule: str | None = None
    seeds: tuple = (0,)
    trunk_seed: int = 0
    micro_batches: int = 2
    workload_kwargs: dict = field(default_factory=dict)
    name: str = "branch"

    def __post_init__(self) -> None:
        _check_grid(self.base_batch, self.multipliers, self.budget, self.seeds)
        _check_rule(self.tolerance, self.tolerance_kind)
        _check_name(self.name)
        for label, values in (("seeds", self.seeds), ("trunk_seed", (self.trunk_seed,))):
            for seed in values:
                if isinstance(seed, bool) or not isinstance(seed, Integral) or not -_MAX_SEED <= seed < _MAX_SEED:
                    raise ValueError(f"The '{label}' parameter must be an integer from -2**31 to 2**31 - 1 (seeds "
                                     f"are spread over torch's 64-bit seeds). Got {seed!r} instead.")
        check_learning_rate("lr", self.lr)
        if not self.checkpoints:
            raise ValueError("The 'checkpoints' parameter must list at least one point (examples).")
        for t in self.checkpoints:
            check_positive_int("checkpoints", t, minimum=0)
            if t % self.base_batch:
                raise ValueError(f"The checkpoint {t} is not a multiple of the base batch {self.base_batch}.")
        check_positive_int("micro_batches", self.micro_batches, minimum=2)
        if self.base_batch % self.micro_batches:
            raise ValueError(f"The 'base_batch' parameter ({self.base_batch}) must be a multiple of micro_batches "
                             f"({self.micro_batches}) for the noise-scale measurement.")
        if self.lr_rule is not None:
            check_choice("lr_rule", self.lr_rule, ("sqrt", "linear", "none"))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["checkpoints"], d["multipliers"], d["seeds"] = list(self.checkpoints), list(self.multipliers), list(self.seeds)
        return d


_MAX_SEED = 2**31  # branch seeds are spread as 1_000_003 * (seed + 1) + t: stay within torch's 64-bit seeds


def _check_name(name) -> str:
    """The measurement's name: it also names the trunk's checkpoint files, so no path separators."""
    if not isinstance(name, str) or not name.strip() or len(name) > 200 or any(c in name for c in "/\\\0"):
        raise ValueError(f"The 'name' parameter must be 1 to 200 characters without '/', '\\' or NUL (it names "
                         f"the checkpoint files). Got {name!r} instead.")
    return name


def _rule_for(workload) -> str:
    return "sqrt" if workload.lr_scaling == 0.5 else "linear"


def run_workload_trunk(cfg: WorkloadBranchConfig, ckpt_dir: str | Path, *, threads: int = 1) -> dict:
    """Train the trunk, save a checkpoint at each point, and measure ``B_simple`` on the way.

    Returns:
        ``{"points": [{t_examples, checkpoint, loss, b_simple, b_simple_ci, b_simple_ema}],
        "trace": [[examples, b_simple_ema], ...], "tokens_per_example": ...}``; ``B_simple`` in
        examples (``None`` where the window had too few steps).
    """
    import torch

    from ..errors import InsufficientDataError
    from ..noise import GradientNoiseMonitor, split_backward
    from ..workloads import get_workload

    torch.set_num_threads(threads)
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    wl = get_workload(cfg.workload, **cfg.workload_kwargs)
    model = wl.make_model(cfg.trunk_seed)
    opt = wl.make_optimizer(model, cfg.lr)
    gen = torch.Generator().manual_seed(cfg.trunk_seed + 1)
    micro = cfg.base_batch // cfg.micro_batches
    monitor = GradientNoiseMonitor(model, micro_batch_size=micro, ema_beta=0.95)
    points, trace, seen, step, window_start = [], [], 0, 0, 0
    try:
        for t in sorted(cfg.checkpoints):
            while seen < t:
                batch = wl.sample_batch(cfg.base_batch, gen)
                split_backward(lambda mb: wl.loss(model, mb), batch, chunks=cfg.micro_batches)
                monitor.step()
                opt.step()
                opt.zero_grad(set_to_none=True)
                seen += cfg.base_batch
                step += 1
            path = ckpt_dir / f"{cfg.name}_t{t}.pt"
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, path)
            recs = monitor.records
            ema = recs[-1]["b_simple_ema"] if recs else None
            b, ci = None, [None, None]
            try:
                est = monitor.estimate(start=window_start, stop=step)
                b, ci = est.b_simple, est.to_dict()["ci"]
            except InsufficientDataError:
                pass
            points.append({"t_examples": t, "checkpoint": str(path), "loss": wl.eval_loss(model),
                           "b_simple": b, "b_simple_ci": ci,
                           "b_simple_ema": ema if ema is not None and math.isfinite(ema) else None})
            trace.extend([(r["step"] + 1) * cfg.base_batch, r["b_simple_ema"]] for r in recs[len(trace):])
            window_start = step
    finally:
        monitor.remove()
    trace = [[e, b if math.isfinite(b) else None] for e, b in trace]
    return {"points": points, "trace": trace[:: max(1, len(trace) // 400)], "tokens_per_example": wl.tokens_per_example}


def run_workload_branch(spec: dict) -> dict:
    """One branch of a built-in workload (a module-level function: runs in a worker or on Ray)."""
    import torch

    from ..workloads import get_workload

    t0 = time.perf_counter()
    torch.set_num_threads(1)
    task = spec["task"]
    wl = get_workload(task["workload"], **task["workload_kwargs"])
    model = wl.make_model(0)
    state = torch.load(spec["checkpoint"], map_location=getattr(wl, "device", "cpu"), weights_only=True)
    model.load_state_dict(state["model"])
    opt = wl.make_optimizer(model, spec["lr"])
    opt.load_state_dict(state["optimizer"])
    for group in opt.param_groups:
        group["lr"] = spec["lr"]
    gen = torch.Generator().manual_seed(1_000_003 * (spec["seed"] + 1) + spec["t_examples"])
    diverged = False
    for _ in range(spec["steps"]):
        loss = wl.loss(model, wl.sample_batch(spec["batch_size"], gen))
        if not torch.isfinite(loss):
            diverged = True
            break
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    final = math.inf if diverged else wl.eval_loss(model)
    return {"spec": spec, "loss": final if math.isfinite(final) else math.inf, "diverged": diverged or not math.isfinite(final),
            "wall_time_s": time.perf_counter() - t0}


def measure_workload_cbs(cfg: WorkloadBranchConfig, store: str | Path, *, ckpt_dir: str | Path | None = None,
                         executor=None, progress: bool = False) -> BranchedCBS:
    """Trunk, branches and the CBS(t) with B_simple(t) beside it (resumable: rerun to continue).

    Args:
        cfg: the measurement.
        store: SQLite file (created or resumed).
        ckpt_dir: where trunk checkpoints go (default: ``<store>.ckpt/`` next to the store).
        executor: from :func:`~batchlaw.sweep.branched.make_branch_executor`; ``None`` runs here.
        progress: show a progress bar.

    Returns:
        A :class:`~batchlaw.sweep.branched.BranchedCBS` whose points also carry ``b_simple``,
        ``b_simple_ci``, ``b_simple_ema`` (examples), ``trunk_loss`` and ``cbs_over_b_simple``.
    """
    from ..workloads import get_workload

    store = Path(store)
    ckpt_dir = Path(ckpt_dir) if ckpt_dir is not None else store.with_name(store.name + ".ckpt")
    if ckpt_dir.exists() and not ckpt_dir.is_dir():
        raise ValueError(f"The checkpoint directory {str(ckpt_dir)!r} is a file: move it away or pass another "
                         "store path (the trunk's checkpoints go in <store>.ckpt/).")
    wl = get_workload(cfg.workload, **cfg.workload_kwargs)
    rule = cfg.lr_rule or _rule_for(wl)
    config = {**cfg.to_dict(), "lr_rule": rule, "tokens_per_example": wl.tokens_per_example}
    with BranchStore(store) as st:
        st.save_measurement(cfg.name, config)
        trunk = st.trunk(cfg.name)
        if trunk is None or not all(Path(p["checkpoint"]).exists() for p in trunk["points"]):
            trunk = run_workload_trunk(cfg, ckpt_dir)
            st.set_trunk(cfg.name, trunk)
        checkpoints = [(p["t_examples"], p["checkpoint"]) for p in trunk["points"]]
        task = {"workload": cfg.workload, "workload_kwargs": dict(cfg.workload_kwargs)}
        specs = _branch_specs(cfg.name, checkpoints, base_batch=cfg.base_batch, lr=cfg.lr, multipliers=sorted(cfg.multipliers),
                              budget=cfg.budget, seeds=list(cfg.seeds), lr_rule=rule, task=task)
        results = _run_specs(specs, run_workload_branch, st, executor, progress)
    extra = {}
    for p in trunk["points"]:
        extra[p["t_examples"]] = {"b_simple": p["b_simple"], "b_simple_ci": p["b_simple_ci"],
                                  "b_simple_ema": p["b_simple_ema"], "trunk_loss": p["loss"]}
    res = _summarize(specs, results, base_batch=cfg.base_batch, tolerance=cfg.tolerance, tolerance_kind=cfg.tolerance_kind,
                     tokens_per_example=wl.tokens_per_example, config=config, extra=extra)
    for p in res.points:
        b = p.get("b_simple")
        p["cbs_over_b_simple"] = p["cbs"] / b if b else None
    res.trace = trunk["trace"]
    return res
