"""Step time and peak memory vs micro-batch, and forward latency vs batch, on the user's hardware.

For micro-batches 1, 2, 4, ... a full training step (forward, backward, optimizer) is timed
(the fastest of ``repeats`` after ``warmup`` untimed steps, the figure least disturbed by other
work on the machine, as ``timeit`` reports; the median is kept beside it) and its peak memory recorded, until the
step runs out of memory, the largest size asked for, or the time budget. Out of memory is caught,
the memory released, and the whole curve returned with the failing size marked ``"oom"``. Then
forward-only latency vs batch for serving, the same way.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` (reset before each size); on a CPU the
process's peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs``), so it includes
the interpreter and the model; glibc's malloc is asked to return freed blocks to the system so
that the resident set follows the memory in use.

Activation checkpointing recomputes each block of every ``nn.ModuleList`` in backward
(``torch.utils.checkpoint``), trading about one extra forward for the activations of the blocks.
"""

from __future__ import annotations

import functools
import gc
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._validation import check_choice, check_positive_float, check_positive_int

__all__ = ["PROFILE_SCHEMA", "Target", "profile_hardware", "save_profile", "is_out_of_memory", "enable_checkpointing"]

PROFILE_SCHEMA = "batchlaw.profile/1"

#: fields of a stored profile that must equal this run's for ``resume_from`` to be merged: the model,
#: the hardware and the software that timed it
_SAME_TO_RESUME = ("schema", "name", "device", "device_name", "torch", "threads", "parameters", "tokens_per_example",
                   "checkpointing", "memory_kind")

_OOM_TEXT = ("out of memory", "can't allocate memory", "cannot allocate memory", "not enough memory",
             "defaultcpuallocator")


def is_out_of_memory(err: BaseException) -> bool:
    """Whether an exception is an out-of-memory failure (CUDA, the CPU allocator, or Python's)."""
    if isinstance(err, MemoryError):
        return True
    if isinstance(err, getattr(torch.cuda, "OutOfMemoryError", ())):
        return True
    return isinstance(err, RuntimeError) and any(t in str(err).lower() for t in _OOM_TEXT)


@dataclass
class Target:
    """What to profile: a model, a batch maker, a loss, and an optimizer.

    Attributes:
        model: the model (moved to ``device`` by :func:`profile_hardware`).
        make_batch: ``make_batch(b)`` returns a batch of ``b`` examples.
        loss: ``loss(model, batch)`` returns a 0-d tensor.
        make_optimizer: ``make_optimizer(model)`` returns an optimizer.
        name: shown in the profile.
        tokens_per_example: tokens per example for sequence models, else ``None``.
    """

    model: torch.nn.Module
    make_batch: Callable[[int], Any]
    loss: Callable[[torch.nn.Module, Any], torch.Tensor]
    make_optimizer: Callable[[torch.nn.Module], torch.optim.Optimizer]
    name: str = "model"
    tokens_per_example: int | None = None
    extra: dict = field(default_factory=dict)


def enable_checkpointing(model: torch.nn.Module) -> int:
    """Wrap each block of every ``nn.ModuleList`` in activation checkpointing; returns the count.

    Raises:
        ValueError: the model has no ``nn.ModuleList`` of blocks to checkpoint.
    """
    from torch.utils.checkpoint import checkpoint

    blocks = [b for m in model.modules() if isinstance(m, torch.nn.ModuleList) for b in m]
    if not blocks:
        raise ValueError("Activation checkpointing needs the model's repeated blocks in an nn.ModuleList; "
                         f"{type(model).__name__} has none.")
    for block in blocks:
        block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)
    return len(blocks)


def _to(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    return obj


def _return_freed_memory() -> None:
    """Ask glibc's malloc to map blocks over 128 KiB on their own and unmap them when freed (its
    adaptive threshold would otherwise keep freed tensors in the heap), so that the resident set
    follows the memory in use. Process-wide; a no-op without glibc."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


class _Memory:
    """Peak memory of what runs between :meth:`reset` and :meth:`peak` (bytes, or ``None``)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "cpu_peak_rss"
        if device.type == "cpu":
            _return_freed_memory()

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        except OSError:
            self.kind = None

    def peak(self) -> int | None:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        if self.kind is None:
            return None
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        self.kind = None
        return None


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _release(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _sizes(max_batch: int) -> list[int]:
    return [1 << i for i in range(int(math.log2(max_batch)) + 1)]


def _measure(fn, device, mem, warmup, repeats, deadline):
    """Seconds of ``fn`` (fastest and median of ``repeats``) and its peak memory; raises what ``fn`` raises."""
    mem.reset()
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
        if time.perf_counter() > deadline:
            break
    return min(times), statistics.median(times), mem.peak()


def profile_hardware(target: Target, *, device: str = "cpu", max_batch: int = 1024, forward_max_batch: int | None = None,
                     checkpointing: bool = False, forward: bool = True, repeats: int = 3, warmup: int = 1,
                     time_budget_s: float = 600.0, on_row: Callable[[dict], None] | None = None,
                     resume_from: dict | None = None) -> dict:
    """Profile training steps and forward latency for batch sizes 1, 2, 4, ... (examples).

    Args:
        target: the model, batch maker, loss and optimizer.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        max_batch: largest training micro-batch tried (a power of two is best).
        forward_max_batch: largest forward batch tried (default: ``max_batch``).
        checkpointing: activation checkpointing of ``nn.ModuleList`` blocks.
        forward: also profile forward latency (for ``batchlaw plan serve``).
        repeats: timed repetitions per size (fastest reported, and the median).
        warmup: untimed repetitions per size.
        time_budget_s: stop starting new sizes after this long (the curve so far is returned); the
            first size of each curve is measured however short the budget, so a profile is never empty.
        on_row: called with the profile so far after each size (to store it as it goes).
        resume_from: a profile stored earlier (by ``on_row``) of the same model, device, GPU name,
            torch version, CPU threads and checkpointing: its measured sizes are kept and only the
            others are run. Check a file read back with :func:`batchlaw.plan.check_profile` first.

    Returns:
        A ``batchlaw.profile/1`` dict: ``train`` rows (``micro_batch``, ``status`` "ok"/"oom",
        ``step_time_s``, ``throughput_per_s`` examples/s, ``peak_memory_bytes``), ``forward``
        rows (``batch``, ``status``, ``latency_s``), ``max_micro_batch``, ``stopped_by``.

    Raises:
        ValueError: bad arguments, or ``resume_from`` of another model, machine or setting. Out of memory is
            caught and recorded, never raised.
    """
    device = check_choice("device", device, ("cpu", "cuda", "auto"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("The 'device' parameter is 'cuda' but no CUDA device is available.")
    dev = torch.device(device)
    max_batch = check_positive_int("max_batch", max_batch)
    fmax = max_batch if forward_max_batch is None else check_positive_int("forward_max_batch", forward_max_batch)
    repeats, warmup = check_positive_int("repeats", repeats), check_positive_int("warmup", warmup, minimum=0)
    deadline = time.perf_counter() + check_positive_float("time_budget_s", time_budget_s)
    model = target.model.to(dev)
    n_ckpt = enable_checkpointing(model) if checkpointing else 0
    opt = target.make_optimizer(model)
    mem = _Memory(dev)
    out = {"schema": PROFILE_SCHEMA, "name": target.name, "device": str(dev),
           "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
           "torch": torch.__version__, "threads": torch.get_num_threads(),
           "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
           "tokens_per_example": target.tokens_per_example, "checkpointing": checkpointing,
           "checkpointed_blocks": n_ckpt, "memory_kind": mem.kind, "unit": "examples",
           "train": [], "forward": [], "max_micro_batch": None, "stopped_by": None, **target.extra}
    done_train: dict[int, dict] = {}
    done_fwd: dict[int, dict] = {}
    if resume_from is not None:
        diff = [k for k in _SAME_TO_RESUME + tuple(target.extra) if resume_from.get(k) != out.get(k)]
        if diff:
            raise ValueError(f"Cannot resume: the stored profile differs in {', '.join(diff)} "
                             f"(stored {', '.join(f'{k}={resume_from.get(k)!r}' for k in diff)}; this run "
                             f"{', '.join(f'{k}={out.get(k)!r}' for k in diff)}): its timings are not this "
                             "setting's. Use another --out, or rerun without --resume.")
        done_train = {r["micro_batch"]: r for r in resume_from.get("train", [])}
        done_fwd = {r["batch"]: r for r in resume_from.get("forward", [])}

    def train_step(batch):
        opt.zero_grad(set_to_none=True)
        target.loss(model, batch).backward()
        opt.step()

    model.train()
    for b in _sizes(max_batch):
        if b in done_train:  # measured before the interruption
            out["train"].append(done_train[b])
            if done_train[b]["status"] == "oom":
                out["stopped_by"] = "oom"
                break
            out["max_micro_batch"] = b
            continue
        if out["train"] and time.perf_counter() > deadline:  # the first size is measured whatever the budget
            out["stopped_by"] = "time_budget"
            break
        batch = None
        try:
            batch = _to(target.make_batch(b), dev)
            t, med, peak = _measure(lambda: train_step(batch), dev, mem, warmup, repeats, deadline)
            out["train"].append({"micro_batch": b, "status": "ok", "step_time_s": t, "step_time_median_s": med,
                                 "throughput_per_s": b / t, "peak_memory_bytes": peak})
            out["max_micro_batch"] = b
        except (RuntimeError, MemoryError) as err:
            if not is_out_of_memory(err):
                raise
            del batch, err
            opt.zero_grad(set_to_none=True)
            _release(dev)
            out["train"].append({"micro_batch": b, "status": "oom", "step_time_s": None, "throughput_per_s": None,
                                 "peak_memory_bytes": None})
            out["stopped_by"] = "oom"
            break
        finally:
            batch = None
        if on_row:
            on_row(out)
    else:
        out["stopped_by"] = "max_batch"
    opt.zero_grad(set_to_none=True)
    _release(dev)
    if forward:
        model.eval()
        for b in _sizes(fmax):
            if b in done_fwd:
                out["forward"].append(done_fwd[b])
                if done_fwd[b]["status"] == "oom":
                    break
                continue
            if out["forward"] and time.perf_counter() > deadline:
                break
            batch = None
            try:
                batch = _to(target.make_batch(b), dev)

                def fwd(batch=batch):
                    with torch.no_grad():
                        target.loss(model, batch)

                t, med, peak = _measure(fwd, dev, mem, warmup, repeats, deadline)
                out["forward"].append({"batch": b, "status": "ok", "latency_s": t, "latency_median_s": med,
                                       "peak_memory_bytes": peak})
            except (RuntimeError, MemoryError) as err:
                if not is_out_of_memory(err):
                    raise
                del batch, err
                _release(dev)
                out["forward"].append({"batch": b, "status": "oom", "latency_s": None, "peak_memory_bytes": None})
                break
            if on_row:
                on_row(out)
    if on_row:
        on_row(out)
    return out


def save_profile(profile: dict, path: str | Path) -> None:
    """Write a profile as JSON atomically (a crash leaves the previous file whole)."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(profile, indent=2))
    tmp.replace(p)
