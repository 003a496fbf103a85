"""GradientNoiseMonitor: the gradient noise scale of a PyTorch training run, at almost no cost.

How it measures (McCandlish et al. 2018, arXiv:1812.06162, App. A.1; see the Concepts page 'Gradient noise scale' in the docs):

* **Small batch**: each micro-batch gradient. A hook on every parameter sees the gradient of
  one micro-batch *before* autograd adds it into ``.grad``. The hooks only hold references;
  the squared norms of all gradients seen are computed in buckets with one multi-tensor
  kernel (``torch._foreach_norm``) per bucket, at the latest when the backward pass ends.
  No copy of the gradients is made and nothing is written to them.
* **Big batch**: the accumulated ``.grad`` when :meth:`GradientNoiseMonitor.step` is called,
  i.e. the mean over the ``K`` micro-batches of the optimizer step (one more multi-tensor norm).
* The two squared norms, taken at the same weights, give the unbiased per-step ``|G|^2`` and
  ``tr(Sigma)`` (:mod:`batchlaw.noise.estimators`); they are smoothed separately, then divided.

Call order in a training step::

    for micro_batch in chunks:                 # K >= 2 micro-batches of b examples
        loss = loss_fn(model, micro_batch) / K  # dividing by K or not: both work
        loss.backward()                         # or scaler.scale(loss).backward()
    monitor.step()                              # before unscale_, clipping and optimizer.step
    optimizer.step(); optimizer.zero_grad()

``K`` is counted by the monitor. ``B_simple`` does not depend on how the loss was scaled.
``g_sq`` and ``trace_sigma`` are reported for the gradient of a micro-batch's *mean* loss; for
that the monitor must know whether the code divides each micro-batch loss by ``K`` (the
default, as in nanoGPT and Hugging Face) or not (``loss_divided_by_accumulation=False``).

A single micro-batch per step gives one batch size only: use
:func:`batchlaw.noise.split_backward` to backpropagate the same batch as ``K >= 2`` chunks.
The optimizer sees the same gradient up to float rounding; the cost is ``K`` smaller backward
passes instead of one (the same FLOPs, more kernel launches).

Device scalars are gathered lazily: ``step()`` never synchronises with the GPU; records are
materialised when read (``records``, ``estimate()``, ``state_dict()``) or every
``sync_every`` steps.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from typing import Any

import torch

from .._validation import check_positive_int, check_probability
from ..errors import InsufficientDataError
from .distributed import UnsupportedSetupError, detect_data_parallel, fsdp2_unsharded_params, gradient_sync_on
from .estimators import MIN_STEPS, NoiseScaleEstimate
from .tracker import NoiseScaleTracker

__all__ = ["GradientNoiseMonitor", "squared_norm"]

def _norms(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """L2 norms of ``tensors`` as 0-d float32 tensors (float64 ones computed in float64), one fused
    multi-tensor kernel per dtype; never synchronises and allocates nothing the size of a gradient."""
    if len({t.dtype for t in tensors}) == 1:
        groups = {tensors[0].dtype: tensors}
    else:
        groups = defaultdict(list)
        for t in tensors:
            groups[t.dtype].append(t)
    out: list[torch.Tensor] = []
    for dtype, group in groups.items():
        if dtype == torch.float64:  # float32 accumulation would lose what float64 gradients carry
            out.extend(n.float() for n in torch._foreach_norm(group, 2))
        else:  # half, bfloat16, float32: accumulate in float32
            out.extend(torch._foreach_norm(group, 2, dtype=torch.float32))
    return out


def _sum_of_squares(norms: list[torch.Tensor], device=None) -> torch.Tensor:
    device = device or norms[0].device
    return torch.stack([n if n.device == device else n.to(device, non_blocking=True) for n in norms]).square().sum()


def squared_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Sum of squared L2 norms of ``tensors`` in float32, with one fused kernel per (device, dtype).

    Returns a 0-d float32 tensor on the device of the first tensor; never synchronises.

    Examples:
        >>> float(squared_norm([torch.ones(3), 2 * torch.ones(2, dtype=torch.float64)]))
        11.0
    """
    by_device: dict = defaultdict(list)
    for t in tensors:
        by_device[t.device].append(t)
    return _sum_of_squares([n for group in by_device.values() for n in _norms(group)], tensors[0].device)


class GradientNoiseMonitor:
    """Measures ``B_simple = tr(Sigma) / |G|^2`` during training, without changing it.

    Works the same way on one process and under data parallelism: wrap the model in
    ``DistributedDataParallel`` or shard it with ``fully_shard`` (FSDP2) first, then pass the
    wrapped model. The world size comes from the model's process group; every rank gets the
    same estimate.

    Args:
        model: the module being trained (or its ``DistributedDataParallel`` wrapper, or a module
            sharded with ``fully_shard``); every parameter with ``requires_grad`` is watched.
        micro_batch_size: examples in one micro-batch on one rank (``b``). May instead be passed
            to every :meth:`step` call (for a last, smaller batch).
        tokens_per_example: if given, batch sizes and ``B_simple`` are in tokens
            (``b * tokens_per_example``), else in examples.
        scaler: a ``torch.amp.GradScaler``; its loss scale is divided out of both norms.
        loss_divided_by_accumulation: whether each micro-batch's mean loss is divided by the
            number of micro-batches ``K`` before ``backward``. Only ``g_sq`` and
            ``trace_sigma`` depend on it, ``b_simple`` does not.
        every: measure every ``every``-th optimizer step only (the hooks return at once on the
            others).
        ema_beta: smoothing of the running ``|G|^2`` and ``tr(Sigma)`` in the per-step records.
        bucket_bytes: gradients are held (by reference) until this many bytes are waiting,
            then their norms are taken with one fused kernel. Larger: fewer launches, more
            memory kept alive during backward.
        sync_every: gather device scalars to the host every this many measured steps.
        process_group: ``"auto"`` (the default) reads the data-parallel group from the
            wrapper; ``None`` measures this process alone (its gradients are not averaged with
            other ranks); a process group says that ``.grad`` holds the mean over that group's
            ranks at :meth:`step` (a hand-written data-parallel loop).
        unused_parameters: some parameters may get no gradient in some micro-batches (mixture
            of experts, conditional computation). Default: DDP's ``find_unused_parameters``.
            When ``False``, parameters that received gradients from different numbers of
            backward passes in one step are an error (a sign of an extra ``backward`` per
            micro-batch).

    Raises:
        ValueError: a bad argument, or a model with no trainable parameters.
        UnsupportedSetupError: a data-parallel setup the monitor cannot measure correctly
            (DeepSpeed, the legacy ``FullyShardedDataParallel``, tensor parallelism, HSDP,
            PowerSGD, or an unwrapped model in an initialised process group): see
            :func:`batchlaw.noise.distributed.detect_data_parallel`.

    Examples:
        >>> import torch
        >>> model = torch.nn.Linear(4, 1)
        >>> monitor = GradientNoiseMonitor(model, micro_batch_size=8)
        >>> for _ in range(2):
        ...     model(torch.randn(8, 4)).pow(2).mean().backward()
        >>> monitor.step()
        >>> monitor.records[-1]["accumulation"], monitor.records[-1]["global_batch"]
        (2, 16)
        >>> monitor.remove()

    References:
        McCandlish, Kaplan, Amodei et al. 2018, "An Empirical Model of Large-Batch Training",
        arXiv:1812.06162, eq. 2.9 and Appendix A.1.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        micro_batch_size: int | None = None,
        tokens_per_example: int | None = None,
        scaler: Any = None,
        loss_divided_by_accumulation: bool = True,
        every: int = 1,
        ema_beta: float = 0.95,
        bucket_bytes: int = 64 * 2**20,
        sync_every: int = 64,
        process_group: Any = "auto",
        unused_parameters: bool | None = None,
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"The 'model' parameter must be a torch.nn.Module. Got {type(model).__name__}.")
        self.setup = detect_data_parallel(model, process_group)
        self._model = model
        # Parameters whose .grad is the big batch at step(): for FSDP2 the sharded DTensors.
        self._big_params = [p for p in model.parameters() if p.requires_grad]
        if not self._big_params:
            raise ValueError(
                "The 'model' parameter has no parameters with requires_grad=True: there is no "
                "gradient to measure."
            )
        self.micro_batch_size = (
            None if micro_batch_size is None else check_positive_int("micro_batch_size", micro_batch_size)
        )
        self.tokens_per_example = (
            None if tokens_per_example is None else check_positive_int("tokens_per_example", tokens_per_example)
        )
        if scaler is not None and not hasattr(scaler, "get_scale"):
            raise TypeError("The 'scaler' parameter must be a torch.amp.GradScaler (or None).")
        self.scaler = scaler
        if not isinstance(loss_divided_by_accumulation, bool):
            raise TypeError("The 'loss_divided_by_accumulation' parameter must be True or False.")
        self.loss_divided_by_accumulation = loss_divided_by_accumulation
        self.every = check_positive_int("every", every)
        self.ema_beta = check_probability("ema_beta", ema_beta, open_low=False)
        self.bucket_bytes = check_positive_int("bucket_bytes", bucket_bytes)
        self.sync_every = check_positive_int("sync_every", sync_every)
        if unused_parameters is None:
            unused_parameters = bool(getattr(self.setup.ddp, "find_unused_parameters", False))
        if not isinstance(unused_parameters, bool):
            raise TypeError("The 'unused_parameters' parameter must be True, False or None.")
        self.unused_parameters = unused_parameters
        self.unit = "tokens" if self.tokens_per_example else "examples"
        self.world_size = self.setup.world_size

        self._step = 0  # optimizer steps seen
        self._params: list[torch.Tensor] = []  # parameters whose incoming gradients are the small batch
        self._counts: list[int] = []  # gradients accumulated into .grad per parameter, this step
        self._incoming: list[Any] = []  # per parameter: the gradient seen by the pre-hook, until accumulated
        self._bucket: list[torch.Tensor] = []
        self._bucket_nbytes = 0
        self._small_norms: list[torch.Tensor] = []  # device scalars: |h| of each micro-batch gradient
        self._flush_queued = False
        self._backward_count = 0  # backward passes that accumulated a gradient, this step
        self._accumulated = False  # this backward accumulated at least one gradient
        self._step_started = False
        self._leftover: torch.Tensor | None = None  # |.grad|^2 of one parameter before this step's first backward
        self._grad_version: tuple | None = None  # (index, grad object id, version) after the last backward
        self._last_forward_synced = True
        self._pending: list[tuple[int, float, float, torch.Tensor]] = []  # (step, b, c^2 factor, stats)
        self._warned: set[str] = set()
        self.tracker = NoiseScaleTracker(self.unit, self.ema_beta)
        self._handles: list[Any] = []
        if self.setup.kind == "fsdp2":
            unsharded = fsdp2_unsharded_params(self.setup)
            if unsharded:
                self._watch(unsharded)
            else:  # FSDP2 creates its unsharded parameters in the first forward
                self._handles.append(model.register_forward_hook(self._watch_fsdp2_after_forward))
        else:
            self._watch(self._big_params)
        if self.setup.kind == "ddp":
            self._handles.append(model.register_forward_pre_hook(self._record_ddp_sync))

    # ------------------------------------------------------------------ hooks
    def _watch(self, params: list[torch.Tensor]) -> None:
        self._params = list(params)
        self._counts = [0] * len(self._params)
        self._incoming = [None] * len(self._params)
        for i, p in enumerate(self._params):
            self._handles.append(p.register_hook(self._make_pre_hook(i, p)))
            self._handles.append(p.register_post_accumulate_grad_hook(self._make_post_hook(i)))

    def _watch_fsdp2_after_forward(self, module, args, output) -> None:
        if self._params:
            return None
        unsharded = fsdp2_unsharded_params(self.setup)
        if len(unsharded) != len(self._big_params):
            raise UnsupportedSetupError(
                f"FSDP2 exposes {len(unsharded)} unsharded parameters for {len(self._big_params)} sharded ones; "
                "the monitor cannot pair them. Apply fully_shard to the root module and its blocks only.")
        self._watch(unsharded)
        return None

    def _record_ddp_sync(self, module, args) -> None:
        if torch.is_grad_enabled():
            self._last_forward_synced = bool(module.require_backward_grad_sync)

    def _measuring(self) -> bool:
        return self._step % self.every == 0

    def _make_pre_hook(self, index: int, param: torch.Tensor):
        def hook(grad: torch.Tensor) -> None:
            if not self._measuring():
                return None
            if not self._step_started:
                self._start_step()
            if not self._flush_queued:
                # Norms must be taken before the next backward (autograd may adopt an incoming
                # gradient as .grad and add later micro-batches into it in place) and before a
                # data-parallel wrapper writes the reduced gradient back into .grad.
                torch.autograd.Variable._execution_engine.queue_callback(self._end_of_backward)
                self._flush_queued = True
            # Holding the incoming gradient would stop autograd from adopting it as .grad (it would
            # copy it instead): when .grad is empty, read the adopted .grad after accumulation.
            self._incoming[index] = grad if param.grad is not None else _ADOPTED
            return None  # never replace the gradient

        return hook

    def _make_post_hook(self, index: int):
        # Fires only when a gradient is accumulated into .grad: torch.autograd.grad calls (a
        # gradient penalty) reach the pre-hook but not this one, and are not counted.
        def hook(param: torch.Tensor) -> None:
            incoming, self._incoming[index] = self._incoming[index], None
            if incoming is None or not self._measuring():
                return None
            grad = param.grad if incoming is _ADOPTED else incoming
            self._counts[index] += 1
            self._accumulated = True
            self._bucket.append(grad)
            self._bucket_nbytes += grad.numel() * grad.element_size()
            # On a CPU, holding gradients until the end of backward keeps their memory from being
            # reused by the next ones (new pages, page faults): take CPU norms at once.
            if self._bucket_nbytes >= self.bucket_bytes or grad.device.type == "cpu":
                self._flush_bucket()
            return None

        return hook

    def _start_step(self) -> None:
        """First gradient of a measured step: .grad must not hold anything yet."""
        self._step_started = True
        for p in self._big_params:
            if p.grad is not None:
                self._leftover = squared_norm([_local(p.grad)])
                return
        self._leftover = None

    def _end_of_backward(self) -> None:
        self._flush_queued = False
        if self._accumulated:
            self._backward_count += 1
            self._accumulated = False
        self._flush_bucket()
        self._incoming = [None] * len(self._params)
        # Runs after every other end-of-backward callback (a DDP or FSDP2 reducer writing .grad).
        torch.autograd.Variable._execution_engine.queue_callback(self._record_grad_version)

    def _record_grad_version(self) -> None:
        for i, p in enumerate(self._big_params):
            if p.grad is not None:
                self._grad_version = (i, id(p.grad), p.grad._version)
                return
        self._grad_version = None

    def _flush_bucket(self) -> None:
        if self._bucket:
            self._small_norms.extend(_norms(self._bucket))
            self._bucket = []
            self._bucket_nbytes = 0

    # ------------------------------------------------------------------ step
    def _scale(self) -> torch.Tensor | float:
        if self.scaler is None or not self.scaler.is_enabled():
            return 1.0
        scale = getattr(self.scaler, "_scale", None)  # device tensor: no host sync
        return scale.float().reshape(()) if isinstance(scale, torch.Tensor) else float(self.scaler.get_scale())

    def _check_call_order(self) -> None:
        """Refuse a step whose .grad was changed after the last backward (host checks only)."""
        if self.scaler is not None:
            from torch.amp.grad_scaler import OptState

            states = getattr(self.scaler, "_per_optimizer_states", {})
            if any(s.get("stage") is OptState.UNSCALED for s in states.values()):
                raise RuntimeError(
                    "GradScaler.unscale_() ran before GradientNoiseMonitor.step(): .grad no longer matches the "
                    "micro-batch gradients the monitor saw. Call monitor.step() right after the last backward, "
                    "before scaler.unscale_(optimizer), gradient clipping and scaler.step(optimizer).")
        if self._grad_version is not None:
            i, ident, version = self._grad_version
            grad = self._big_params[i].grad
            if grad is None or id(grad) != ident or grad._version != version:
                raise RuntimeError(
                    ".grad was modified between the last backward and GradientNoiseMonitor.step() (gradient "
                    "clipping, GradScaler.unscale_, zero_grad, or an in-place change of the gradients): the "
                    "big-batch norm would not match the micro-batches. Call monitor.step() right after the last "
                    "backward, before unscale_, clipping, optimizer.step() and zero_grad().")
        if self.setup.kind == "ddp" and not self._last_forward_synced:
            raise RuntimeError(
                "The last micro-batch ran inside DistributedDataParallel.no_sync(), so the gradients were not "
                "all-reduced before GradientNoiseMonitor.step(). Run the last micro-batch of each step outside "
                "no_sync().")
        if not gradient_sync_on(self.setup):
            raise RuntimeError(
                "Gradient synchronisation is off (set_requires_gradient_sync(False)) at GradientNoiseMonitor.step(): "
                "the last backward did not reduce the gradients across ranks. Turn it back on for the last "
                "micro-batch of each step.")

    def step(self, batch_size: int | None = None) -> None:
        """Record the current optimizer step. Call after the last ``backward`` of the step and
        before ``scaler.unscale_``, gradient clipping, ``optimizer.step()`` and ``zero_grad()``.
        Under data parallelism every rank must call it (it runs one small all-reduce).

        Args:
            batch_size: examples per micro-batch on this rank for this step (defaults to the
                constructor's ``micro_batch_size``).

        Raises:
            ValueError: no micro-batch size known, or parameters saw different numbers of
                micro-batches in this step.
            RuntimeError: no gradient was seen since the last ``step()``, ``.grad`` is empty,
                or ``.grad`` was changed after the last backward (unscale_, clipping, zero_grad,
                a DDP ``no_sync`` last micro-batch).
        """
        self._flush_bucket()
        measuring = self._measuring()
        self._step += 1
        self._step_started = False
        if not measuring:
            return None
        counts, self._counts = self._counts, [0] * len(self._params)
        k, self._backward_count = self._backward_count, 0
        small_norms, self._small_norms = self._small_norms, []
        leftover, self._leftover = self._leftover, None
        if k == 0:
            raise RuntimeError(
                "GradientNoiseMonitor.step() was called but no gradient reached the model since the "
                "last step(): call it after loss.backward() and before optimizer.zero_grad()."
            )
        seen = [c for c in counts if c > 0]
        if not self.unused_parameters and min(seen) != max(seen):
            raise ValueError(
                "The number of micro-batches changed mid-step: some parameters received "
                f"{min(seen)} gradients and others {max(seen)} since the last step(). Call backward once per "
                "micro-batch for the whole model between two step() calls (combine several losses into one "
                "before backward). If some parameters are legitimately unused in some micro-batches (mixture of "
                "experts), pass unused_parameters=True."
            )
        b = batch_size if batch_size is not None else self.micro_batch_size
        if b is None:
            raise ValueError(
                "The micro-batch size is unknown: pass 'micro_batch_size' to GradientNoiseMonitor "
                "or 'batch_size' to step()."
            )
        b = check_positive_int("batch_size", b)
        grads = [_local(p.grad) for p in self._big_params if p.grad is not None]
        if not grads:
            raise RuntimeError(
                "GradientNoiseMonitor.step() found no .grad: optimizer.zero_grad() ran before it. Call "
                "monitor.step() after the last backward and before optimizer.step() and zero_grad()."
            )
        self._check_call_order()
        big = squared_norm(grads)  # this rank's shard under FSDP2, the whole reduced gradient otherwise
        dev = big.device
        small = _sum_of_squares(small_norms, dev)
        extra = torch.tensor([k, k * k, b, b * b], dtype=torch.float32, device=dev)
        left = leftover.to(dev) if leftover is not None else torch.zeros((), device=dev)
        stats = torch.cat([torch.stack([small, big if self.setup.kind == "fsdp2" else big / self.world_size,
                                        left, _as_tensor(self._scale(), dev)]), extra])
        if self.setup.distributed:
            # One all-reduce of 8 scalars: the micro-batch norms of every rank, the shards of .grad
            # (FSDP2), leftovers, and the micro-batch counts and sizes to check that ranks agree.
            torch.distributed.all_reduce(stats, group=self.setup.group)
        self._pending.append((self._step - 1, k, float(b), stats))
        if len(self._pending) >= self.sync_every:
            self._materialize()
        return None

    def _materialize(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        values = torch.stack([s for *_, s in pending]).detach().cpu().double().numpy()  # (n, 8)
        w = self.world_size
        tpe = self.tokens_per_example or 1
        for (step, k, b, _), (small, big, left, scale_sum, k_sum, k2_sum, b_sum, b2_sum) in zip(pending, values):
            if w > 1 and (abs(k2_sum * w - k_sum * k_sum) > 1e-6 * k_sum * k_sum
                          or abs(b2_sum * w - b_sum * b_sum) > 1e-6 * b_sum * b_sum):
                raise RuntimeError(
                    f"At step {step} the ranks ran different numbers or sizes of micro-batches (mean K "
                    f"{k_sum / w:g}, mean b {b_sum / w:g}): every rank must accumulate the same number of "
                    "equal micro-batches per step for the noise scale.")
            scale = scale_sum / w
            c = scale / (k if self.loss_divided_by_accumulation else 1)
            n = k * w  # micro-batches of b examples over all ranks
            # Hook gradients are c * g_i (g_i: gradient of one micro-batch's mean loss on one rank);
            # .grad is the mean over ranks of c * sum_k g_i, i.e. c * K * (mean of all g_i).
            small_sq = small / (n * c * c)
            big_sq = big / (k * k * c * c)
            rec = self.tracker.update(step, small_sq=small_sq, big_sq=big_sq, b_small=b * tpe, b_big=b * n * tpe,
                                      accumulation=k, micro_batch_size=b, world_size=w, global_batch=int(b * n))
            self._check_plausible(rec, left / (c * c) if left > 0 else 0.0, n)

    def _check_plausible(self, rec: dict, leftover: float, n: int) -> None:
        """Flag steps whose norms are impossible for ``n`` fresh micro-batch gradients."""
        if rec["skipped"] or n < 2:
            return
        small, big = rec["small_sq"], rec["big_sq"]
        # |mean_i g_i|^2 <= mean_i |g_i|^2 (Cauchy-Schwarz), with equality iff all g_i are equal.
        if leftover > 0 or big > small * (1 + _EXCESS_TOL):
            rec["flag"] = "excess"
            self._warn_once(
                "excess",
                f"At step {rec['step']} .grad held more than this step's micro-batch gradients "
                + ("(it was not empty before the first backward: " if leftover > 0 else "(")
                + "forgotten optimizer.zero_grad(), or a gradient added outside backward). B_simple would be "
                "wrong: zero the gradients after every optimizer step.")
        elif big >= small * (1 - _IDENTICAL_TOL):
            rec["flag"] = "identical"
            self._warn_once(
                "identical",
                f"At step {rec['step']} all {n} micro-batch gradients were identical: the same examples were fed "
                "to every micro-batch (or every micro-batch is the whole data set). The noise scale needs different "
                "examples in each micro-batch.")

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, RuntimeWarning, stacklevel=3)

    def _check_records(self) -> None:
        flags = [r.get("flag") for r in self.tracker.records if not r["skipped"]]
        bad = sum(f == "excess" for f in flags)
        if bad:
            raise InsufficientDataError(
                f"In {bad} of {len(flags)} measured steps .grad held more than that step's micro-batch gradients: "
                "optimizer.zero_grad() is missing after optimizer.step(), or a gradient is added outside "
                "backward. Fix the training loop; no noise scale is reported from such steps.")
        same = sum(f == "identical" for f in flags)
        if flags and same > len(flags) / 2:
            raise InsufficientDataError(
                f"In {same} of {len(flags)} measured steps the micro-batch gradients were identical: each step fed "
                "the same examples to every micro-batch. Draw different examples for each micro-batch.")
        if len(self._params) and len({id(p) for p in self._model.parameters() if p.requires_grad}) > len(self._big_params):
            self._warn_once(
                "new_params",
                "The model has trainable parameters that were added after the GradientNoiseMonitor was created; "
                "they are not measured. Create the monitor once the model is complete.")

    # ------------------------------------------------------------------ results
    @property
    def records(self) -> list[dict]:
        """One dict per measured step (host floats; safe to log to TensorBoard, W&B or CSV).

        Keys: ``step``, ``accumulation`` (K per rank), ``micro_batch_size`` (examples per rank),
        ``world_size`` (W), ``global_batch`` (``W K b`` examples), ``b_small`` and ``b_big``
        (in ``unit``), ``small_sq`` and ``big_sq`` (squared norms), ``skipped`` (non-finite
        gradients), the per-step unbiased ``g_sq`` and ``trace_sigma``, their bias-corrected
        EMAs, ``b_simple_ema``, and ``flag`` where a step failed a plausibility check.
        Reading this synchronises with the device.
        """
        self._materialize()
        return self.tracker.records

    @property
    def skipped_steps(self) -> int:
        """Measured steps dropped because a gradient norm was inf or NaN (AMP overflow)."""
        self._materialize()
        return self.tracker.skipped_steps

    @property
    def steps(self) -> int:
        """Optimizer steps seen (measured or not)."""
        return self._step

    def usable(self, *, start: int | None = None, stop: int | None = None):
        """``(steps, g_sq, trace_sigma)`` of the usable measured steps in ``[start, stop)``."""
        self._materialize()
        return self.tracker.usable(start=start, stop=stop)

    def estimate(self, *, start: int | None = None, stop: int | None = None, confidence: float = 0.95,
                 min_steps: int = MIN_STEPS) -> NoiseScaleEstimate:
        """``B_simple`` over the measured steps in ``[start, stop)`` with a Fieller interval over
        batch means (:func:`batchlaw.noise.estimate_b_simple`).

        Raises:
            InsufficientDataError: too few usable steps, every step had a single micro-batch on a
                single rank, a mean ``|G|^2 <= 0`` or ``tr(Sigma) <= 0``, or steps that failed a
                plausibility check (forgotten ``zero_grad``, identical micro-batches); the error
                carries the provisional estimate where there is one.
        """
        self._materialize()
        self._check_records()
        return self.tracker.estimate(start=start, stop=stop, confidence=confidence, min_steps=min_steps)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Everything needed to continue the measurement after a checkpoint/resume."""
        self._materialize()
        return {"step": self._step, "world_size": self.world_size, "tracker": self.tracker.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` output (same unit; the world size may change between runs)."""
        if not isinstance(state, dict) or not {"step", "tracker"} <= set(state):
            keys = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(
                "The 'state' parameter must be a dict from GradientNoiseMonitor.state_dict() with keys 'step' and "
                f"'tracker'. Got {keys!r} instead.")
        self._pending = []
        self.tracker.load_state_dict(state["tracker"])
        self._step = int(state["step"])

    def remove(self) -> None:
        """Detach the hooks; the model trains as if the monitor had never been there."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> GradientNoiseMonitor:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


#: Marks a gradient that autograd adopts as ``.grad`` (read it there after accumulation).
_ADOPTED = object()
#: Relative tolerance of the Cauchy-Schwarz checks (float32 norms of sums; bf16 gradients).
_EXCESS_TOL = 1e-2
_IDENTICAL_TOL = 1e-5


def _local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor, the tensor itself otherwise."""
    return t.to_local() if hasattr(t, "to_local") else t


def _as_tensor(x: torch.Tensor | float, device) -> torch.Tensor:
    return x.to(device) if isinstance(x, torch.Tensor) else torch.tensor(float(x), device=device)
