"""One trial: train a workload at (batch size, learning rate, seed) until a target loss or a budget.

A trial is described by a :class:`TrialSpec` (plain data, so it can travel to a worker process
or a Ray task and be hashed into a stable key) and produces a result dict. Steps to target
are read off the loss evaluated every ``eval_every`` steps (``None``: on a schedule relative
to the steps so far, every ``max(1, step // 10)`` steps, so the reading is as fine at 30 steps as
at 3,000), interpolated between the last evaluation above the target and the first at or
below it with the loss linear in ``log(step)`` (learning curves are close to power laws, so a
straight line in linear steps would overestimate the crossing of a convex curve; linear in
steps only when the earlier evaluation is step 0). ``eval_interval`` in the result is the
interval of that crossing: a reading under ~3 intervals is coarse.

The gradient noise scale is measured on the way: the batch is backpropagated as
``micro_batches`` equal micro-batches (the optimizer sees the same mean gradient) and a
:class:`~batchlaw.noise.GradientNoiseMonitor` estimates ``B_simple`` over the run.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field

__all__ = ["TrialSpec", "run_trial"]


@dataclass(frozen=True)
class TrialSpec:
    """Everything that defines a trial; two equal specs are the same trial.

    Attributes:
        workload: built-in workload name.
        batch_size: examples per optimizer step.
        lr: learning rate.
        seed: seeds the model and the data order.
        target_loss: the loss to reach.
        max_steps: budget in optimizer steps.
        eval_every: evaluation period in steps; ``None`` evaluates every ``max(1, step // 10)``
            steps (10% of the steps so far; with the crossing read in log-steps, a few percent).
        target_on: ``"heldout"`` (the workload's held-out loss) or ``"train"`` (an EMA of the
            training loss, ``beta = 0.9`` per step, bias-corrected).
        micro_batches: micro-batches per step for the noise-scale measurement (1 = off).
        workload_kwargs: keyword arguments of the workload's constructor.
        divergence_factor: the trial counts as diverged when a training loss is not finite, or
            an evaluated loss exceeds this multiple of the initial one.
    """

    workload: str
    batch_size: int
    lr: float
    seed: int
    target_loss: float
    max_steps: int
    eval_every: int | None = 10
    target_on: str = "heldout"
    micro_batches: int = 2
    workload_kwargs: dict = field(default_factory=dict)
    divergence_factor: float = 2.0

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def key(self) -> str:
        """Stable identifier: SHA-1 of the canonical JSON of the spec."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha1(blob.encode()).hexdigest()[:16]


#: evaluation interval of the relative schedule (``eval_every=None``), as a fraction of the step.
RELATIVE_EVAL = 1 / 10


def _crossing(prev: tuple[int, float], cur: tuple[int, float], target: float) -> float:
    """Step at which the loss crosses ``target`` between two evaluations, linear in log-steps.

    Examples:
        >>> round(_crossing((10, 2.0), (100, 1.0), 1.5), 6)  # loss = 3 - log10(step)
        31.622777
    """
    (s0, l0), (s1, l1) = prev, cur
    if l0 <= target or l0 == l1:
        return float(s1)
    frac = (l0 - target) / (l0 - l1)
    if s0 <= 0:
        return s0 + (s1 - s0) * frac
    return float(math.exp(math.log(s0) + (math.log(s1) - math.log(s0)) * frac))


def _next_eval(step: int, eval_every: int | None) -> int:
    if eval_every is not None:
        return step + eval_every
    return step + max(1, int(step * RELATIVE_EVAL))


def run_trial(spec: TrialSpec | dict, threads: int | None = 1) -> dict:
    """Run one trial and return its result (JSON-ready dict).

    Result keys: ``key``, ``spec``, ``status`` (``reached`` / ``budget`` / ``diverged``),
    ``steps_to_target``, ``examples_to_target``, ``tokens_to_target`` (``None`` unless reached),
    ``eval_interval`` (steps between the two evaluations the crossing was read between),
    ``steps_run``, ``wall_time_s``, ``curve`` (``[[step, loss, b_simple_ema], ...]`` at each
evaluation; the monitor's running ``B_simple``, ``None`` before it has one),
    ``final_loss``, ``noise`` (run-level ``B_simple`` with interval and the per-run means of
    ``g_sq`` and ``trace_sigma``, or ``None``) and ``unit`` of the noise scale.
    """
    import torch

    from ..errors import InsufficientDataError
    from ..noise import GradientNoiseMonitor, split_backward
    from ..workloads import get_workload

    if isinstance(spec, dict):
        spec = TrialSpec(**spec)
    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    workload = get_workload(spec.workload, **spec.workload_kwargs)
    model = workload.make_model(spec.seed)
    optimizer = workload.make_optimizer(model, spec.lr)
    gen = torch.Generator().manual_seed(spec.seed + 1)
    k = spec.micro_batches if spec.micro_batches > 1 and spec.batch_size % spec.micro_batches == 0 else 1
    monitor = None
    if k > 1:
        monitor = GradientNoiseMonitor(model, micro_batch_size=spec.batch_size // k, ema_beta=0.98,
                                       tokens_per_example=workload.tokens_per_example)

    def loss_fn(mb):
        return workload.loss(model, mb)

    first = workload.eval_loss(model) if spec.target_on == "heldout" else None
    curve: list[tuple] = [(0, first, None)] if first is not None else []
    ema, ema_n = 0.0, 0
    status, steps_to_target, interval = "budget", None, None
    initial = first
    next_eval = _next_eval(0, spec.eval_every)
    for step in range(1, spec.max_steps + 1):
        batch = workload.sample_batch(spec.batch_size, gen)
        train_loss = float(split_backward(loss_fn, batch, chunks=k))
        if monitor is not None:
            monitor.step()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema, ema_n = 0.9 * ema + 0.1 * train_loss, ema_n + 1
        if initial is None:
            initial = train_loss
        if not math.isfinite(train_loss):
            status = "diverged"
            curve.append((step, train_loss, None))
            break
        if step >= next_eval or step == spec.max_steps:
            next_eval = _next_eval(step, spec.eval_every)
            loss = workload.eval_loss(model) if spec.target_on == "heldout" else ema / (1 - 0.9**ema_n)
            if not math.isfinite(loss) or loss > spec.divergence_factor * initial:
                status = "diverged"
                curve.append((step, loss, None))
                break
            prev = curve[-1][:2] if curve else (0, initial)
            ema_b = monitor.records[-1]["b_simple_ema"] if monitor is not None and monitor.records else None
            curve.append((step, loss, ema_b if ema_b is not None and math.isfinite(ema_b) else None))
            if loss <= spec.target_loss:
                status, steps_to_target = "reached", _crossing(prev, (step, loss), spec.target_loss)
                interval = step - prev[0]
                break
    noise = None
    if monitor is not None:
        monitor.remove()
        try:
            est = monitor.estimate()
            noise = {"b_simple": est.b_simple, "ci": est.to_dict()["ci"], "g_sq_mean": est.g_sq,
                     "trace_sigma_mean": est.trace_sigma, "n_steps": est.n_steps}
        except InsufficientDataError as err:
            prov = err.provisional
            noise = None if prov is None else {
                "b_simple": None, "ci": [None, None], "g_sq_mean": prov.g_sq,
                "trace_sigma_mean": prov.trace_sigma, "n_steps": prov.n_steps, "note": str(err)}
    tpe = workload.tokens_per_example
    return {
        "key": spec.key,
        "spec": spec.to_dict(),
        "status": status,
        "steps_to_target": steps_to_target,
        "examples_to_target": None if steps_to_target is None else steps_to_target * spec.batch_size,
        "tokens_to_target": None if steps_to_target is None or not tpe else steps_to_target * spec.batch_size * tpe,
        "eval_interval": interval,
        "steps_run": step,
        "wall_time_s": time.perf_counter() - t0,
        "curve": [list(c) for c in curve],
        "final_loss": curve[-1][1] if curve else None,
        "noise": noise,
        "unit": "tokens" if tpe else "examples",
        "tokens_per_example": tpe,
    }
