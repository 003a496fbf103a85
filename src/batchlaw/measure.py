"""Train a workload with the GradientNoiseMonitor attached and collect its noise-scale trace.

This is what ``batchlaw measure`` runs: a plain PyTorch loop with gradient accumulation
(``accumulation`` micro-batches of ``micro_batch_size`` examples per optimizer step), the
monitor called after the last backward of each step, and a held-out evaluation every
``eval_every`` steps.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import tempfile
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ._validation import check_learning_rate, check_positive_int
from .errors import InsufficientDataError, TrainingDivergedError
from .noise import GradientNoiseMonitor, NoiseScaleEstimate, windowed_estimates
from .workloads import Workload, resolve_workload

__all__ = ["MeasureResult", "measure_noise"]


@dataclass
class MeasureResult:
    """What a measurement run produced.

    ``estimate`` is ``None`` when the data could not support one; ``note`` then says why and
    ``provisional`` carries the provisional value.
    """

    workload: dict
    config: dict
    estimate: NoiseScaleEstimate | None
    trace: list[dict]
    eval_losses: list[tuple[int, float]]
    train_losses: list[float]
    skipped_steps: int
    wall_time_s: float
    note: str = ""
    provisional: float | None = None
    records: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The stable JSON schema of ``batchlaw measure --json`` (version 1)."""
        return {
            "schema": "batchlaw.measure/1",
            "workload": self.workload,
            "config": self.config,
            "estimate": None if self.estimate is None else self.estimate.to_dict(),
            "note": self.note,
            "provisional_b_simple": self.provisional,
            "trace": self.trace,
            "eval_losses": [{"step": s, "loss": v} for s, v in self.eval_losses],
            "final_train_loss": self.train_losses[-1] if self.train_losses else None,
            "skipped_steps": self.skipped_steps,
            "wall_time_s": self.wall_time_s,
        }


def measure_noise(
    workload: Workload | type[Workload] | str,
    *,
    workload_kwargs: dict | None = None,
    steps: int = 300,
    micro_batch_size: int | None = None,
    accumulation: int = 4,
    lr: float | None = None,
    seed: int = 0,
    every: int = 1,
    windows: int = 6,
    eval_every: int = 50,
    progress: bool = True,
    nproc: int = 1,
    _rank: tuple[int, int] | None = None,
) -> MeasureResult:
    """Train ``workload`` for ``steps`` optimizer steps and measure ``B_simple`` on the way.

    Args:
        workload: what to train: a :class:`~batchlaw.workloads.Workload` instance or class, a
            built-in name or ``"package.module:ClassName"``
            (:func:`~batchlaw.workloads.resolve_workload`).
        workload_kwargs: constructor arguments when ``workload`` is a class or a reference.
        steps: optimizer steps.
        micro_batch_size: examples per micro-batch (default: the workload's).
        accumulation: micro-batches per optimizer step (``K >= 2``).
        lr: learning rate (default: the workload's).
        seed: seeds the model and the data order.
        every: measure every ``every``-th step.
        windows: number of windows in the trace.
        eval_every: held-out evaluation period in steps.
        progress: show a progress bar.
        nproc: train data-parallel (``DistributedDataParallel``) on this many local processes
            (gloo on CPU, nccl when as many GPUs are visible); ``micro_batch_size`` is per
            process, the global batch ``nproc * accumulation * micro_batch_size``, and
            ``accumulation`` may be 1.

    Raises:
        ValueError: a bad argument, or a workload whose ``sample_batch(b, generator)`` returns
            another number of examples than ``b``.
        TrainingDivergedError: the training or held-out loss became NaN or infinite (the run
            stops at that step).
    """
    workload = resolve_workload(workload, workload_kwargs)
    steps = check_positive_int("steps", steps)
    b = check_positive_int("micro_batch_size", workload.default_micro_batch if micro_batch_size is None else micro_batch_size)
    nproc = check_positive_int("nproc", nproc)
    k = check_positive_int("accumulation", accumulation, minimum=1 if nproc > 1 or _rank else 2)
    lr = check_learning_rate("lr", lr if lr is not None else workload.default_lr)
    eval_every = check_positive_int("eval_every", eval_every)

    if nproc > 1 and _rank is None:
        return _measure_on_processes(workload, nproc, dict(
            steps=steps, micro_batch_size=b, accumulation=k, lr=lr, seed=seed, every=every, windows=windows,
            eval_every=eval_every, progress=progress))
    rank, world = _rank or (0, 1)
    torch.manual_seed(seed)
    model = workload.make_model(seed)
    net = model
    if world > 1:  # same initial weights on every rank (same seed); DDP keeps them in step
        from torch.nn.parallel import DistributedDataParallel

        cuda = next(model.parameters()).is_cuda
        torch.distributed.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
        net = DistributedDataParallel(model, device_ids=[model_device(model).index] if cuda else None)
    optimizer = workload.make_optimizer(model, lr)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    gen = torch.Generator().manual_seed(seed + 1 + 1000 * rank)  # each rank draws its own examples
    monitor = GradientNoiseMonitor(
        net, micro_batch_size=b, tokens_per_example=workload.tokens_per_example, every=every
    )
    progress = progress and rank == 0
    train_losses, eval_losses = [], [(0, workload.eval_loss(model))]
    t0 = time.perf_counter()
    bar = tqdm(range(steps), desc=f"measure {workload.name}", unit="step", disable=not progress, leave=False)
    for step in bar:
        total = 0.0
        for i in range(k):
            with net.no_sync() if world > 1 and i < k - 1 else contextlib.nullcontext():
                loss = workload.loss(net, _checked_batch(workload, b, gen)) / k
                loss.backward()
            total += loss.item()
        _check_finite(workload, "training", step, total, lr, world)
        monitor.step()
        if workload.clip_grad_norm is not None:  # after the monitor: it measures the raw gradients
            torch.nn.utils.clip_grad_norm_(model.parameters(), workload.clip_grad_norm)
        for group, base in zip(optimizer.param_groups, base_lrs):
            group["lr"] = base * workload.lr_multiplier(step)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        train_losses.append(total)
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            eval_losses.append((step + 1, workload.eval_loss(model)))
            _check_finite(workload, "held-out", step, eval_losses[-1][1], lr, 1)  # the same weights on every rank
            rec = monitor.records[-1] if monitor.records else None
            if rec is not None and math.isfinite(rec["b_simple_ema"]):
                bar.set_postfix(loss=f"{eval_losses[-1][1]:.3f}", b_simple_ema=f"{rec['b_simple_ema']:.3g}")
    wall = time.perf_counter() - t0
    monitor.remove()

    steps_idx, g, t = monitor.usable()
    trace = windowed_estimates(steps_idx, g, t, n_windows=windows, unit=monitor.unit)
    estimate, note, provisional = None, "", None
    # The run-level estimate uses the second half of training: the noise scale grows as the
    # loss falls (McCandlish et al. 2018, sec. 3), so the start would drag the average down.
    try:
        estimate = monitor.estimate(start=steps // 2)
    except InsufficientDataError as err:
        note = str(err)
        if err.provisional is not None and math.isfinite(err.provisional.b_simple):
            provisional = err.provisional.b_simple
    config = {"steps": steps, "micro_batch_size": b, "accumulation": k, "world_size": world,
              "batch_size": b * k * world, "lr": lr, "seed": seed, "every": every,
              "estimate_window": [steps // 2, steps - 1], "unit": monitor.unit}
    return MeasureResult(
        workload=workload.describe(), config=config, estimate=estimate, trace=trace,
        eval_losses=eval_losses, train_losses=train_losses, skipped_steps=monitor.skipped_steps,
        wall_time_s=wall, note=note, provisional=provisional, records=monitor.records,
    )


def _measure_on_processes(workload: Workload, nproc: int, params: dict) -> MeasureResult:
    """Run :func:`measure_noise` on ``nproc`` local processes under DDP; rank 0's result (every
    rank computes the same estimate: checked)."""
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_rank_entry, args=(nproc, port, workload, params, tmp), nprocs=nproc, join=True)
        results = [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=False) for r in range(nproc)]
    failed = next((r for r in results if isinstance(r, Exception)), None)
    if failed is not None:  # a named error (divergence, a bad workload) raised on the ranks
        raise failed
    estimates = {None if r.estimate is None else r.estimate.b_simple for r in results}
    if len(estimates) != 1:  # pragma: no cover - would be a bug in the monitor
        raise RuntimeError(f"The ranks disagree on B_simple: {sorted(map(str, estimates))}.")
    return results[0]


def _rank_entry(rank: int, world: int, port: int, workload: Workload, params: dict, tmp: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    if torch.cuda.is_available() and torch.cuda.device_count() >= world:  # pragma: no cover - GPU machines
        torch.cuda.set_device(rank)
    try:
        try:
            result = measure_noise(workload, _rank=(rank, world), **params)
        except (ValueError, TrainingDivergedError) as err:  # named errors: the parent raises them
            result = err
        torch.save(result, os.path.join(tmp, f"rank{rank}.pt"))
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _checked_batch(workload: Workload, b: int, gen: torch.Generator):
    """``workload.sample_batch(b, gen)``, refused unless its tensors hold ``b`` examples (first
    dimension): the monitor would take ``b`` for the micro-batch size and be wrong."""
    batch = workload.sample_batch(b, gen)
    items = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (tuple, list)) else [batch]
    rows = sorted({int(t.shape[0]) for t in items if isinstance(t, torch.Tensor) and t.dim() > 0})
    if rows and rows != [b]:
        raise ValueError(
            f"The workload {workload.name!r} returned a batch with {' and '.join(map(str, rows))} examples (first "
            f"dimension of its tensors) from sample_batch({b}, generator): it must return exactly batch_size "
            "examples, or the noise scale is measured at the wrong batch size.")
    return batch


def _check_finite(workload: Workload, what: str, step: int, loss: float, lr: float, world: int) -> None:
    """Raise :class:`TrainingDivergedError` when ``loss`` is NaN or infinite on any rank (every
    rank raises together: a rank that stopped alone would leave the others waiting)."""
    if world > 1:
        flag = torch.tensor([float(loss)], dtype=torch.float64)
        torch.distributed.all_reduce(flag)  # NaN or inf on one rank makes the sum NaN or inf
        loss = float(flag) if not math.isfinite(float(flag)) else loss
    if not math.isfinite(loss):
        raise TrainingDivergedError(
            f"The {what} loss of workload {workload.name!r} became {loss} at step {step} (lr {lr:g}): the training "
            "diverged and no noise scale can be measured from it. Lower the learning rate (--lr), or clip the "
            "gradients (the workload's clip_grad_norm).", step=step, loss=loss)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter."""
    return next(model.parameters()).device
