"""One trial: train a workload at (batch size, learning rate, seed) until a target loss or a budget.

A trial is described by a :class:`TrialSpec` (plain data, so it can travel to a worker process
or a Ray task and be hashed into a stable key) and produces a result dict. Steps to target
are read off the loss evaluated every ``eval_every`` steps (``None``: on a schedule relative
to the steps so far, every ``max(1, step // 10)`` steps, so the reading is as fine at 30 steps as
at 3,000), interpolated between the last evaluation above the target and the first at or
below it by :func:`batchlaw._crossing.crossing_step` (a local ``a + b t^p`` through the last
three evaluations: exact on power laws with an offset; a straight line in steps or in log-steps
reads the crossing of a convex curve late). ``eval_interval`` in the result is the interval of
that crossing: a reading under ~3 intervals is coarse.

``target_on="train"`` reads the training loss instead, without lag. The loss computed in step
``t`` is that of the weights after ``t - 1`` updates, so it belongs to step ``t - 1``; the loss at
step ``s`` is the mean of those losses over the centred window ``[s - h, s + h]``,
``h = max(4, floor(train_window * s))`` (``train_window = 0.2`` by default; never before step
0), read once step ``s + h + 1`` has run, so crossings after the last such step of the budget
are not seen. A centred mean has no lag on a straight stretch of the curve; on a convex one it
reads high by about ``L'' h^2 / 6``, i.e. late by ``(c + 1) train_window^2 / 6`` of the steps on
``L ~ t^-c`` (1.3% for ``c = 1``), a constant factor that leaves ``B_crit`` unchanged. The
exponential moving average used before (``beta = 0.9``, of a loss one step stale) lagged by
about 11 steps, which took a quarter off ``B_crit`` where ``S_min`` is some 30 steps. Training
losses are noisy: the first reading below the target comes early by about the window's noise
over the slope (the window of +-20% is a compromise between that noise and the curvature bias),
so the held-out loss stays the better target where it is cheap to evaluate.

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

from .._crossing import crossing_step

__all__ = ["TrialSpec", "run_trial", "trial_lower_bound", "TRAIN_WINDOW"]

#: half-width of the centred window of the ``target_on="train"`` reading, as a fraction of its step.
TRAIN_WINDOW = 0.2
#: ... and at least this many steps (fewer only where the window would reach before step 0).
TRAIN_WINDOW_MIN = 4


@dataclass(frozen=True)
class TrialSpec:
    """Everything that defines a trial; two equal specs are the same trial.

    Attributes:
        workload: workload reference: a built-in name or ``"package.module:ClassName"``; a
            :class:`~batchlaw.workloads.Workload` subclass or instance is turned into its
            reference (and an instance's constructor arguments into ``workload_kwargs``).
        batch_size: examples per optimizer step.
        lr: learning rate.
        seed: seeds the model and the data order.
        target_loss: the loss to reach.
        max_steps: budget in optimizer steps.
        eval_every: evaluation period in steps; ``None`` evaluates every ``max(1, step // 10)``
            steps (10% of the steps so far; the crossing between two readings is read to a
            fraction of a percent, ``bench/crossing_bias.py``).
        target_on: ``"heldout"`` (the workload's held-out loss) or ``"train"`` (the training
            loss, averaged over a centred window: see the module docstring).
        micro_batches: micro-batches per step for the noise-scale measurement (1 = off).
        workload_kwargs: keyword arguments of the workload's constructor.
        divergence_factor: the trial counts as diverged when a training loss is not finite, or
            an evaluated loss exceeds this multiple of the initial one.
        train_window: half-width of the centred window of the ``"train"`` reading, as a fraction
            of the step (``None``: :data:`TRAIN_WINDOW` for ``"train"``; unused for
            ``"heldout"``). Trials stored before the lag-free reading have none, so their keys
            differ from today's.
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
    train_window: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.workload, str):
            from ..workloads import workload_spec

            ref, kwargs = workload_spec(self.workload, self.workload_kwargs or None)
            object.__setattr__(self, "workload", ref)
            object.__setattr__(self, "workload_kwargs", kwargs)
        if self.target_on == "train":
            w = TRAIN_WINDOW if self.train_window is None else self.train_window
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 < w <= 0.5:
                raise ValueError(f"The 'train_window' parameter must be a number in (0, 0.5]. Got {w!r} instead.")
            object.__setattr__(self, "train_window", float(w))
        else:
            object.__setattr__(self, "train_window", None)

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["train_window"] is None:  # held-out trials keep the keys they had before the field existed
            del d["train_window"]
        return d

    @property
    def key(self) -> str:
        """Stable identifier: SHA-1 of the canonical JSON of the spec."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha1(blob.encode()).hexdigest()[:16]


#: evaluation interval of the relative schedule (``eval_every=None``), as a fraction of the step.
RELATIVE_EVAL = 1 / 10


def _half_width(step: int, window: float) -> int:
    """Half-width of the centred window of the training-loss reading at ``step``."""
    return min(step, max(TRAIN_WINDOW_MIN, int(window * step)))


def _last_centre(n: int, window: float) -> int:
    """The largest step whose centred window ends at or before loss index ``n``."""
    s = n
    while s + _half_width(s, window) > n:
        s -= 1
    return s


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
    evaluation: the monitor's running ``B_simple`` when the loss was read, ``None`` before it
    has one; a ``"train"`` reading of step ``s`` is taken ``h + 1`` steps later),
    ``final_loss``, ``noise`` (run-level ``B_simple`` with interval and the per-run means of
    ``g_sq`` and ``trace_sigma``, or ``None``) and ``unit`` of the noise scale.
    """
    import torch

    from ..errors import InsufficientDataError
    from ..noise import GradientNoiseMonitor, split_backward
    from ..workloads import resolve_workload

    if isinstance(spec, dict):
        spec = TrialSpec(**spec)
    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    workload = resolve_workload(spec.workload, spec.workload_kwargs)
    model = workload.make_model(spec.seed)
    optimizer = workload.make_optimizer(model, spec.lr)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    gen = torch.Generator().manual_seed(spec.seed + 1)
    k = spec.micro_batches if spec.micro_batches > 1 and spec.batch_size % spec.micro_batches == 0 else 1
    monitor = None
    if k > 1:
        monitor = GradientNoiseMonitor(model, micro_batch_size=spec.batch_size // k, ema_beta=0.98,
                                       tokens_per_example=workload.tokens_per_example)

    def loss_fn(mb):
        return workload.loss(model, mb)

    train = spec.target_on == "train"
    csum = [0.0]  # train: prefix sums of the training losses; index i = the weights after i updates
    curve: list[tuple] = []
    status, steps_to_target, interval = "budget", None, None
    initial = None

    def read(at: int, loss: float) -> bool:
        """Record the loss read at step ``at``; ``True`` when the trial is over."""
        nonlocal status, steps_to_target, interval, initial
        if initial is None:
            initial = loss
        if not math.isfinite(loss) or loss > spec.divergence_factor * initial:
            status = "diverged"
            curve.append((at, loss, None))
            return True
        ema_b = monitor.records[-1]["b_simple_ema"] if monitor is not None and monitor.records else None
        curve.append((at, loss, ema_b if ema_b is not None and math.isfinite(ema_b) else None))
        if len(curve) > 1 and loss <= spec.target_loss:
            if curve[-2][1] <= spec.target_loss:  # the first reading was already at the target
                steps_to_target = float(at)
            else:
                steps_to_target = crossing_step([c[0] for c in curve[-3:]], [c[1] for c in curve[-3:]],
                                                spec.target_loss)
            status, interval = "reached", at - curve[-2][0]
            return True
        return False

    def window_mean(centre: int) -> float:
        h = _half_width(centre, spec.train_window)
        return (csum[centre + h + 1] - csum[centre - h]) / (2 * h + 1)

    next_eval = 0
    if not train:
        read(0, workload.eval_loss(model))
        next_eval = _next_eval(0, spec.eval_every)
    done = False
    for step in range(1, spec.max_steps + 1):
        batch = workload.sample_batch(spec.batch_size, gen)
        train_loss = float(split_backward(loss_fn, batch, chunks=k))
        if monitor is not None:
            monitor.step()
        if workload.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), workload.clip_grad_norm)
        mult = workload.lr_multiplier(step - 1)
        for group, base in zip(optimizer.param_groups, base_lrs):
            group["lr"] = base * mult
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if not math.isfinite(train_loss):
            status = "diverged"
            curve.append((step - 1 if train else step, train_loss, None))
            break
        if train:
            csum.append(csum[-1] + train_loss)  # the loss of the weights after step - 1 updates
            n = step - 1  # the last loss index
            while not done and next_eval + _half_width(next_eval, spec.train_window) <= n:
                done = read(next_eval, window_mean(next_eval))
                next_eval = _next_eval(next_eval, spec.eval_every)
            if not done and step == spec.max_steps:  # the budget's last readable step, off the schedule
                last = _last_centre(n, spec.train_window)
                if not curve or last > curve[-1][0]:
                    done = read(last, window_mean(last))
        elif step >= next_eval or step == spec.max_steps:
            next_eval = _next_eval(step, spec.eval_every)
            done = read(step, workload.eval_loss(model))
        if done:
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


def trial_lower_bound(t: dict) -> float | None:
    """A lower bound on the steps to target of a trial that did not reach it (``None`` when it did):
    the last step it read within the budget (a diverged trial: the budget). What a sweep's
    ``trials.csv`` stores in its ``steps_lower_bound`` column."""
    if t["status"] == "reached":
        return None
    read = t["curve"][-1][0] if t["status"] == "budget" and t.get("curve") else None
    return float(read if read is not None else t["spec"]["max_steps"])
