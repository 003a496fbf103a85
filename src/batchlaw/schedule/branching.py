"""Short in-process branches for the batch controller: fork, train two arms, measure, restore.

A pair of branches starts from the trunk's current model and optimizer state. One arm trains
``k n`` steps at batch ``B``, the other ``n`` steps at ``k B``, **on the same examples** (the
``k B`` batch of each large step is cut into the ``k`` batches of the small arm's steps: common
random numbers, which make the loss difference far less noisy than independent draws). Both are
then evaluated on the same data: the user's ``eval_fn`` (a fixed held-out set), or a probe batch
drawn once per decision. The trunk is never touched:

* the arms train on a **copy** of the model (made once, refreshed from the trunk's weights and
  buffers before every arm) and a copy of the optimizer (its state deep-copied from the trunk's);
  hooks that batchlaw's own monitors and callbacks put on the model are left off the copy, so the
  noise monitor never sees a branch;
* the examples come from the controller's **own generator** (seeded by decision and pair), never
  from the trunk's data stream;
* torch's global random state (dropout) is saved before and restored after
  (:func:`torch.random.fork_rng`), so the trunk continues bit for bit as if no branch had run.

Under data parallelism every rank trains the arms on its own share of the examples and the
gradients are averaged over the process group before each step (a hand-written DDP for the
copy); evaluations are averaged too, so every rank sees the same losses.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping
from typing import Any, Callable

import torch

__all__ = ["BranchRunner", "slice_rows"]

_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def slice_rows(batch: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of a batch: a tensor, or a tuple/list/dict of them (other values unchanged).

    Examples:
        >>> x, y = slice_rows((torch.arange(6).reshape(3, 2), torch.arange(3)), 1, 3)
        >>> x.tolist(), y.tolist()
        ([[2, 3], [4, 5]], [1, 2])
    """
    if isinstance(batch, torch.Tensor):
        return batch[start:stop]
    if isinstance(batch, Mapping):  # dict, HF BatchEncoding: a plain dict of the sliced values
        return {k: slice_rows(v, start, stop) for k, v in batch.items()}
    if isinstance(batch, tuple):
        items = [slice_rows(v, start, stop) for v in batch]
        return type(batch)(*items) if hasattr(batch, "_fields") else tuple(items)
    if isinstance(batch, list):
        return [slice_rows(v, start, stop) for v in batch]
    return batch


def _is_batchlaw_hook(hook) -> bool:
    owner = getattr(hook, "__self__", None)
    return owner is not None and type(owner).__module__.startswith("batchlaw.")


def _strip_batchlaw_hooks(module: torch.nn.Module) -> None:
    """Remove the hooks batchlaw's monitors and callbacks registered on ``module`` (a copy)."""
    for m in module.modules():
        for name in _HOOK_DICTS:
            hooks = getattr(m, name, None)
            if hooks:
                for key in [k for k, h in hooks.items() if _is_batchlaw_hook(h)]:
                    del hooks[key]
                    for extra in ("_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs",
                                  "_forward_hooks_always_called"):
                        getattr(m, extra, {}).pop(key, None)


def _unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def _unwrap_optimizer(optimizer):
    inner = getattr(optimizer, "optimizer", None)  # accelerate's AcceleratedOptimizer, Lightning's wrappers
    return inner if isinstance(inner, torch.optim.Optimizer) else optimizer


def collective_device(group) -> torch.device:
    """Where a collective over ``group`` takes its tensors: the current CUDA device under NCCL, else the CPU."""
    if group is not None and torch.distributed.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def process_group_of(model: torch.nn.Module, process_group: Any = "auto"):
    """The data-parallel group branches average over: ``None`` on one process."""
    dist = torch.distributed
    if process_group != "auto":
        return process_group
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return model.process_group
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.group.WORLD
    return None


class BranchRunner:
    """Runs pairs of branches from the trunk's current state (module docstring).

    Args:
        model: the trunk's model (a ``DistributedDataParallel`` wrapper is unwrapped).
        optimizer: the trunk's optimizer (an accelerate/Lightning wrapper is unwrapped).
        loss_fn: ``loss_fn(model, batch) -> 0-d tensor``, the mean loss over ``batch``.
        sample_fn: ``sample_fn(n, generator) -> batch`` of ``n`` examples drawn with
            ``generator`` only (a CPU ``torch.Generator``); under data parallelism ``n`` is this
            rank's share.
        eval_fn: ``eval_fn(model) -> float``, a deterministic held-out loss; ``None``: the mean
            of ``loss_fn`` over a probe batch of ``probe_examples`` drawn once per decision.
        probe_examples: examples of the probe batch (over all ranks).
        max_micro_batch: largest micro-batch per rank (examples): branch steps accumulate
            micro-batches of at most this size.
        process_group: ``"auto"`` (the DDP wrapper's group, else the default group when
            torch.distributed runs with more than one rank), ``None`` or a group.

    Attributes:
        examples: training examples the branches consumed (over all ranks).
        eval_examples: examples evaluated (forward only, over all ranks; 0 with ``eval_fn``).
        evaluations: calls of ``eval_fn`` (or probe evaluations).
        seconds: wall-clock spent in branches.
        steps: optimizer steps the branches took.
    """

    def __init__(self, model: torch.nn.Module, optimizer, *, loss_fn: Callable, sample_fn: Callable,
                 eval_fn: Callable | None = None, probe_examples: int = 1024, max_micro_batch: int | None = None,
                 process_group: Any = "auto") -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"The 'model' parameter must be a torch.nn.Module. Got {type(model).__name__}.")
        for name, fn in (("loss_fn", loss_fn), ("sample_fn", sample_fn)):
            if not callable(fn):
                raise TypeError(f"The '{name}' parameter must be callable. Got {type(fn).__name__}.")
        if eval_fn is not None and not callable(eval_fn):
            raise TypeError(f"The 'eval_fn' parameter must be callable or None. Got {type(eval_fn).__name__}.")
        self.model = _unwrap_model(model)
        self.optimizer = _unwrap_optimizer(optimizer)
        if not hasattr(self.optimizer, "state_dict") or not hasattr(self.optimizer, "param_groups"):
            raise TypeError(f"The 'optimizer' parameter must be a torch optimizer. Got {type(optimizer).__name__}.")
        self.loss_fn, self.sample_fn, self.eval_fn = loss_fn, sample_fn, eval_fn
        self.probe_examples = int(probe_examples)
        self.max_micro_batch = max_micro_batch
        self.group = process_group_of(model, process_group)
        dist = torch.distributed
        self.world_size = dist.get_world_size(self.group) if self.group is not None else 1
        self.rank = dist.get_rank(self.group) if self.group is not None else 0
        self.examples = 0
        self.eval_examples = 0
        self.evaluations = 0
        self.seconds = 0.0
        self.steps = 0
        self._copy: tuple | None = None

    # ------------------------------------------------------------------ the copy
    def _fresh_copy(self):
        """The branch model and optimizer, loaded with the trunk's current state."""
        if self._copy is None:
            model_c = copy.deepcopy(self.model)
            _strip_batchlaw_hooks(model_c)
            params = [p for p in self.model.parameters()]
            copies = dict(zip([id(p) for p in params], model_c.parameters()))
            groups = []
            for g in self.optimizer.param_groups:
                groups.append({**{k: v for k, v in g.items() if k != "params"},
                               "params": [copies[id(p)] for p in g["params"]]})
            try:
                opt_c = type(self.optimizer)(groups, **self.optimizer.defaults)
            except TypeError:  # an optimizer whose constructor does not take its defaults back
                opt_c = copy.deepcopy(self.optimizer, memo={id(p): copies[id(p)] for p in params})
            self._copy = (model_c, opt_c)
        model_c, opt_c = self._copy
        with torch.no_grad():
            for dst, src in zip(model_c.state_dict(keep_vars=True).values(), self.model.state_dict(keep_vars=True).values()):
                dst.copy_(src)
        for p in model_c.parameters():
            p.grad = None
        opt_c.load_state_dict(copy.deepcopy(self.optimizer.state_dict()))
        model_c.train(self.model.training)
        return model_c, opt_c

    # ------------------------------------------------------------------ collectives
    def _mean_over_ranks(self, values: list[float]) -> list[float]:
        if self.group is None:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self._device())
        torch.distributed.all_reduce(t, group=self.group)
        return (t / self.world_size).tolist()

    def _device(self):
        return collective_device(self.group)

    def _average_grads(self, model) -> None:
        if self.group is None:
            return
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch._utils._flatten_dense_tensors(grads)
        torch.distributed.all_reduce(flat, group=self.group)
        flat /= self.world_size
        for g, f in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
            g.copy_(f)

    # ------------------------------------------------------------------ one arm
    def _train_step(self, model, opt, batch, rows: int, lr: dict) -> bool:
        """One optimizer step on ``rows`` examples (this rank), micro-batched; False if the loss is not finite."""
        for group in opt.param_groups:
            group["lr"] = lr["lr"]
            if lr.get("betas") is not None and "betas" in group:
                group["betas"] = tuple(lr["betas"])
            if lr.get("eps") is not None and "eps" in group:
                group["eps"] = lr["eps"]
        micro = min(rows, self.max_micro_batch or rows)
        finite = True
        for start in range(0, rows, micro):
            stop = min(start + micro, rows)
            loss = self.loss_fn(model, slice_rows(batch, start, stop)) * ((stop - start) / rows)
            finite = finite and bool(torch.isfinite(loss.detach()))
            loss.backward()
        ok = self._mean_over_ranks([1.0 if finite else 0.0])[0] == 1.0
        if ok:
            self._average_grads(model)
            opt.step()
        opt.zero_grad(set_to_none=True)
        self.steps += 1
        return ok

    @torch.no_grad()
    def _evaluate(self, model, probe) -> float:
        was_training = model.training
        try:
            if self.eval_fn is not None:
                value = float(self.eval_fn(model))
            else:
                model.eval()
                rows = _rows_of(probe)
                micro = min(rows, self.max_micro_batch or rows)
                value = 0.0
                for start in range(0, rows, micro):
                    stop = min(start + micro, rows)
                    value += float(self.loss_fn(model, slice_rows(probe, start, stop))) * (stop - start) / rows
                self.eval_examples += rows * self.world_size
        finally:
            model.train(was_training)
        self.evaluations += 1
        return self._mean_over_ranks([value if math.isfinite(value) else math.inf])[0]

    # ------------------------------------------------------------------ the pair
    def probe(self, seed: int):
        """The probe batch of a decision (``None`` with ``eval_fn``): this rank's share."""
        if self.eval_fn is not None:
            return None
        gen = torch.Generator().manual_seed(_mix(seed, 0x5EED, self.rank))
        return self.sample_fn(max(1, self.probe_examples // self.world_size), gen)

    def trunk_loss(self, probe) -> float:
        """The trunk's loss on the evaluation data, measured on a copy (the trunk is untouched)."""
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=_cuda_devices()):
            model_c, _ = self._fresh_copy()
            value = self._evaluate(model_c, probe)
        self.seconds += time.perf_counter() - t0
        return value

    def run_pair(self, *, batch: int, k: int, steps: int, lrs_small: list[dict], lrs_large: list[dict], seed: int,
                 probe) -> dict:
        """Train both arms from the trunk's state on the same examples; return their losses.

        Args:
            batch: the small arm's global batch ``B`` (examples, a multiple of the world size).
            k: the large arm's batch is ``k * batch``.
            steps: steps of the large arm (``n``); the small arm takes ``k * n``.
            lrs_small: optimizer settings (``lr``, ``betas``, ``eps``) of each small-arm step.
            lrs_large: the same for each large-arm step.
            seed: seeds this pair's examples.
            probe: the decision's probe batch (from :meth:`probe`).

        Returns:
            ``{"small": loss, "large": loss, "examples": ..., "diverged": bool}``; a diverged
            arm's loss is ``inf``.
        """
        t0 = time.perf_counter()
        rows_small = batch // self.world_size  # per rank
        gen = torch.Generator().manual_seed(_mix(seed, self.rank))
        data = [self.sample_fn(k * rows_small, gen) for _ in range(steps)]  # this rank's share of each k B step
        out = {}
        with torch.random.fork_rng(devices=_cuda_devices()):
            for arm in ("small", "large"):
                torch.manual_seed(_mix(seed, 7, self.rank))  # the same dropout stream for both arms
                model_c, opt_c = self._fresh_copy()
                ok, i = True, 0
                for big in data:
                    if arm == "large":
                        ok = self._train_step(model_c, opt_c, big, k * rows_small, lrs_large[i])
                        i += 1
                    else:
                        for j in range(k):
                            ok = ok and self._train_step(model_c, opt_c, slice_rows(big, j * rows_small, (j + 1) * rows_small),
                                                         rows_small, lrs_small[i])
                            i += 1
                    if not ok:
                        break
                out[arm] = self._evaluate(model_c, probe) if ok else math.inf
                out[f"{arm}_diverged"] = not ok or not math.isfinite(out[arm])
        used = 2 * steps * k * batch
        self.examples += used
        self.seconds += time.perf_counter() - t0
        return {"small": out["small"], "large": out["large"], "examples": used,
                "diverged": out["small_diverged"] or out["large_diverged"]}

    def release(self) -> None:
        """Drop the branch copy (frees its memory until the next branch)."""
        self._copy = None


def _rows_of(batch) -> int:
    """Examples in a batch: the first dimension of its first tensor."""
    if isinstance(batch, torch.Tensor) and batch.dim() > 0:
        return int(batch.shape[0])
    items = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (tuple, list)) else ()
    for item in items:
        try:
            return _rows_of(item)
        except ValueError:
            continue
    raise ValueError(f"Cannot tell the number of examples of a batch of type {type(batch).__name__}: sample_fn must "
                     "return a tensor, or a tuple/list/dict of tensors whose first dimension is the batch.")


def _mix(*values: int) -> int:
    """A 63-bit seed from integers (splitmix64 steps), the same on every platform."""
    x = 0x9E3779B97F4A7C15
    for v in values:
        x = (x ^ (int(v) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
    return x >> 1


def _cuda_devices() -> list:
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
