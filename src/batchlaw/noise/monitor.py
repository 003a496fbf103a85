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

``K`` is counted by the monitor. ``B_simple`` does not depend on a factor common to every
micro-batch loss; ``g_sq`` and ``trace_sigma`` are reported for the gradient of a micro-batch's
*mean* loss, for which the monitor must know whether the code divides each micro-batch loss by
``K`` (the default, as in nanoGPT) or not (``loss_divided_by_accumulation=False``).

**Micro-batches of unequal size.** Pass their sizes to every step (``monitor.step(sizes=[n_1,
..., n_K])``, in examples, or in tokens when the monitor measures in tokens) and say how the
loss weighs them (``loss_normalisation``):

* ``"micro_batch"`` (default): each micro-batch loss is the mean over its own examples (or
  tokens), divided by ``K`` or not. Every micro-batch weighs the same, whatever its size.
* ``"step"``: each micro-batch loss is the *sum* over its examples (tokens) divided by the
  total ``N`` of the optimizer step on this rank, so micro-batch ``i`` weighs ``n_i / N``:
  ``loss = loss_sum / tokens_in_step``, as language-model loops with padding do.
* ``"global_step"``: as ``"step"`` with ``N`` counted over every rank of the step and the loss
  multiplied by the world size, so that the data-parallel mean is the mean over every example
  of the step (the Hugging Face Trainer's ``average_tokens_across_devices``).

The hook sees ``a_i g_i`` with ``a_i`` the micro-batch's weight and ``g_i`` the gradient of its
mean loss. The monitor divides each ``a_i`` out of its micro-batch's squared norm, and the
estimators (McCandlish et al. 2018, App. A.1) take ``B_small = H``, the harmonic mean of the
``n_i`` (``E mean_i |g_i|^2 = |G|^2 + tr(Sigma) mean_i(1/n_i)``), and ``B_big = (sum a_i)^2 /
sum(a_i^2 / n_i)`` (``E|sum a_i g_i / sum a_i|^2 = |G|^2 + tr(Sigma) sum a_i^2 / n_i / (sum
a_i)^2``): ``N`` for a loss normalised by the step total, ``K H`` for per-micro-batch means. Both
are unbiased, over the micro-batches of every rank, and reduce to ``(b, K b W)`` for equal sizes.
Telling the monitor ``"step"`` for a loss that is a mean per micro-batch (or the reverse) is
not detectable from the gradients and biases ``B_simple``: state what the loss does.

A single micro-batch per step gives one batch size only: use
:func:`batchlaw.noise.split_backward` to backpropagate the same batch as ``K >= 2`` chunks.
The optimizer sees the same gradient up to float rounding; the cost is ``K`` smaller backward
passes instead of one (the same FLOPs, more kernel launches).

Device scalars are gathered lazily: ``step()`` never synchronises with the GPU; records are
materialised when read (``records``, ``estimate()``, ``state_dict()``) or every
``sync_every`` steps.
"""

from __future__ import annotations

import math
import time
from numbers import Real
from typing import Any

import torch

from .._validation import check_choice, check_positive_int, check_probability
from .cadence import AutoCadence, check_every
from .distributed import UnsupportedSetupError, detect_data_parallel, fsdp2_unsharded_params
from .estimators import MIN_STEPS, NoiseScaleEstimate
from .monitor_guards import MonitorGuards, refuse_unmeasurable
from .norms import local_shard, norms, pack, squared_norm, sum_of_squares
from .tracker import NoiseScaleTracker

__all__ = ["GradientNoiseMonitor"]

class GradientNoiseMonitor(MonitorGuards):
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
        unit: ``"examples"`` or ``"tokens"``: the unit of ``B_simple`` and of the ``sizes``
            given to :meth:`step`. Default: tokens when ``tokens_per_example`` is given, else
            examples. ``"tokens"`` without ``tokens_per_example`` needs ``sizes`` (token counts)
            at every step.
        scaler: a ``torch.amp.GradScaler``; its loss scale is divided out of both norms.
        loss_divided_by_accumulation: with ``loss_normalisation="micro_batch"``, whether each
            micro-batch's mean loss is divided by the number of micro-batches ``K`` before
            ``backward``. Only ``g_sq`` and ``trace_sigma`` depend on it, ``b_simple`` does not.
        loss_normalisation: how each micro-batch's loss is normalised: ``"micro_batch"`` (the
            mean over its own examples), ``"step"`` (the sum over its examples divided by the
            examples of the whole step on this rank) or ``"global_step"`` (divided by the
            examples of the step over all ranks, times the world size). Count tokens instead
            of examples when the monitor measures in tokens. See the module docstring.
        every: measure every ``every``-th optimizer step only (the hooks return at once on the
            others), or ``"auto"``: the monitor times its own hooks against the step time and
            picks the cadence that keeps its cost under ``overhead_target`` (see
            :attr:`cadence`; under data parallelism every rank agrees on it through the
            monitor's all-reduce).
        overhead_target: with ``every="auto"``, the share of the step time the monitor may
            take (default 1%).
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
        UnsupportedSetupError: parameters whose gradients the monitor cannot measure (an
            ``Embedding``/``EmbeddingBag`` with ``sparse=True``, complex parameters, parameters
            on the ``meta`` device), or a data-parallel setup it cannot measure correctly
            (DeepSpeed, the legacy ``FullyShardedDataParallel``, tensor parallelism, HSDP,
            PowerSGD, or an unwrapped model in an initialised process group): see
            :func:`batchlaw.noise.distributed.detect_data_parallel`.

    Warns:
        RuntimeWarning: (when records are read, at the latest every ``sync_every`` measured
            steps) a parameter the monitor hooked was replaced or removed, or trainable
            parameters were added, after it was created: it measures only the parameters it
            hooked. At a step whose micro-batch gradients come in pairs with bit-identical
            squared norms (at least as many ordered pairs as micro-batches): ``backward`` ran
            twice on the same micro-batch (each counts as one).

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
        unit: str | None = None,
        scaler: Any = None,
        loss_divided_by_accumulation: bool = True,
        loss_normalisation: str = "micro_batch",
        every: int | str = 1,
        overhead_target: float = 0.01,
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
        self._gradient_numel = sum(p.numel() for p in self._big_params)  # the whole model's, also when sharded
        if not self._big_params:
            raise ValueError(
                "The 'model' parameter has no parameters with requires_grad=True: there is no "
                "gradient to measure."
            )
        refuse_unmeasurable(model)
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
        self.loss_normalisation = check_choice("loss_normalisation", loss_normalisation, _NORMALISATIONS)
        if loss_normalisation != "micro_batch" and not loss_divided_by_accumulation:
            raise ValueError(
                "The 'loss_divided_by_accumulation' parameter applies to loss_normalisation='micro_batch' only: with "
                f"loss_normalisation={loss_normalisation!r} each micro-batch loss is divided by the step's total, not "
                "by K. Leave it at its default.")
        every = check_every(every)
        if every == "auto":
            self._auto: AutoCadence | None = AutoCadence(check_probability("overhead_target", overhead_target))
            self.every = 1
        else:
            self._auto = None
            self.every = every
        # with every="auto" the hooks and the end-of-backward callback are timed (wrapped once, here)
        self._timed = self._auto.timed if self._auto is not None else (lambda fn: fn)
        self._end_of_backward_cb = self._timed(self._end_of_backward)
        self.ema_beta = check_probability("ema_beta", ema_beta, open_low=False)
        self.bucket_bytes = check_positive_int("bucket_bytes", bucket_bytes)
        self.sync_every = check_positive_int("sync_every", sync_every)
        if unused_parameters is None:
            unused_parameters = bool(getattr(self.setup.ddp, "find_unused_parameters", False))
        if not isinstance(unused_parameters, bool):
            raise TypeError("The 'unused_parameters' parameter must be True, False or None.")
        self.unused_parameters = unused_parameters
        if unit is None:
            unit = "tokens" if self.tokens_per_example else "examples"
        self.unit = check_choice("unit", unit, ("examples", "tokens"))
        if self.unit == "examples" and self.tokens_per_example:
            raise ValueError(
                f"The 'unit' parameter is 'examples' but 'tokens_per_example' is {self.tokens_per_example}: pass "
                "unit='tokens' (or leave it out) to measure in tokens, or drop tokens_per_example.")
        self.world_size = self.setup.world_size

        self._step = 0  # optimizer steps seen
        self._next_measure = 0  # the next optimizer step to measure
        self._params: list[torch.Tensor] = []  # parameters whose incoming gradients are the small batch
        self._counts: list[int] = []  # gradients accumulated into .grad per parameter, this step
        self._incoming: list[Any] = []  # per parameter: the gradient seen by the pre-hook, until accumulated
        self._bucket: list[torch.Tensor] = []
        self._bucket_nbytes = 0
        self._small_norms: list[torch.Tensor] = []  # device scalars: |h| per parameter, this backward
        self._micro_sq: list[torch.Tensor] = []  # device scalars: |h_i|^2 of each micro-batch i, this step
        self._flush_queued = False
        self._backward_count = 0  # backward passes that accumulated a gradient, this step
        self._accumulated = False  # this backward accumulated at least one gradient
        self._step_started = False
        self._leftover: torch.Tensor | None = None  # |.grad|^2 of one parameter before this step's first backward
        self._grad_version: tuple | None = None  # (index, grad object id, version) after the last backward
        self._last_forward_synced = True
        self._pending: list[tuple[int, bool, float | None, torch.Tensor]] = []  # (step, global total?, example size, stats)
        self._warned: set[str] = set()
        self._hooked_ids = frozenset(id(p) for p in self._big_params)
        self._params_checked_at = 0  # self._step at the last check for replaced parameters
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
            self._handles.append(p.register_hook(self._timed(self._make_pre_hook(i, p))))
            self._handles.append(p.register_post_accumulate_grad_hook(self._timed(self._make_post_hook(i))))

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
        return self._step == self._next_measure

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
                torch.autograd.Variable._execution_engine.queue_callback(self._end_of_backward_cb)
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
            if incoming is _ADOPTED:  # .grad itself: holding it keeps nothing alive
                if self._bucket_nbytes >= self.bucket_bytes:
                    self._flush_bucket()
                return None
            self._bucket_nbytes += grad.numel() * grad.element_size()
            # On a CPU, holding many gradients until the end of backward keeps their memory from
            # being reused by the next ones (new pages, page faults): a small bucket there.
            if self._bucket_nbytes >= (self.bucket_bytes if grad.device.type != "cpu" else _CPU_BUCKET_BYTES):
                self._flush_bucket()
            return None

        return hook

    def _start_step(self) -> None:
        """First gradient of a measured step: .grad must not hold anything yet."""
        self._step_started = True
        for p in self._big_params:
            if p.grad is not None:
                self._leftover = squared_norm([local_shard(p.grad)])
                return
        self._leftover = None

    def _end_of_backward(self) -> None:
        self._flush_queued = False
        self._flush_bucket()
        if self._accumulated:
            self._backward_count += 1
            self._accumulated = False
            seen, self._small_norms = self._small_norms, []
            self._micro_sq.append(sum_of_squares(seen))  # this micro-batch's |h_i|^2
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
            try:
                self._small_norms.extend(norms(self._bucket))
            except (RuntimeError, NotImplementedError) as err:  # today: only a sparse gradient gets here
                bad = next((g for g in self._bucket if g.layout != torch.strided), None)
                if bad is None:
                    raise
                raise UnsupportedSetupError(
                    f"A gradient reached the monitor as a {bad.layout} tensor (an embedding called with sparse=True, "
                    "e.g. torch.nn.functional.embedding(..., sparse=True)): the monitor measures dense gradients "
                    "only. Use sparse=False while measuring.") from err
            self._bucket = []
            self._bucket_nbytes = 0

    # ------------------------------------------------------------------ step
    def _scale(self) -> torch.Tensor | float:
        if self.scaler is None or not self.scaler.is_enabled():
            return 1.0
        scale = getattr(self.scaler, "_scale", None)  # device tensor: no host sync
        return scale.float().reshape(()) if isinstance(scale, torch.Tensor) else float(self.scaler.get_scale())

    def step(self, batch_size: int | None = None, *, sizes: Any = None, loss_normalisation: str | None = None,
             loss_total: Any = None) -> None:
        """Record the current optimizer step. Call after the last ``backward`` of the step and
        before ``scaler.unscale_``, gradient clipping, ``optimizer.step()`` and ``zero_grad()``.
        Under data parallelism every rank must call it (it runs one small all-reduce).

        Args:
            batch_size: examples per micro-batch on this rank for this step, when every
                micro-batch holds as many (defaults to the constructor's ``micro_batch_size``).
            sizes: instead of ``batch_size``, one size per micro-batch of this step on this
                rank, in the order of their ``backward`` calls: the examples it holds, or its
                tokens when the monitor measures in tokens (what its loss sums or averages
                over). Numbers, 0-d tensors (read on the device, without synchronising) or a
                1-D tensor. The ranks may hold different sizes.
            loss_normalisation: how this step's micro-batch losses are normalised (default:
                the constructor's; see the module docstring).
            loss_total: with ``"step"`` or ``"global_step"``, the count every micro-batch's
                summed loss was divided by, when it is not the total of ``sizes`` (this rank's,
                or every rank's): e.g. the Hugging Face Trainer's ``num_items_in_batch``, which
                for GPT-2 counts one label per sequence that its loss does not use. A number or
                a 0-d tensor. ``B_simple`` does not depend on it, ``g_sq`` and ``trace_sigma`` do.

        Raises:
            ValueError: no micro-batch size known, ``sizes`` whose length is not the number of
                micro-batches seen (``backward`` calls) or with a size that is not positive, or
                parameters saw different numbers of micro-batches in this step.
            RuntimeError: no gradient was seen since the last ``step()``, ``.grad`` is empty,
                or ``.grad`` was changed after the last backward (unscale_, clipping, zero_grad,
                a DDP ``no_sync`` last micro-batch).
        """
        if self._auto is None:
            self._step_impl(batch_size, sizes, loss_normalisation, loss_total)
            return None
        start = time.perf_counter()
        measuring = self._measuring()
        try:
            self._step_impl(batch_size, sizes, loss_normalisation, loss_total)
        finally:
            self._auto.end_step(start, measuring)
        return None

    def _step_impl(self, batch_size: Any, sizes: Any, loss_normalisation: str | None, loss_total: Any) -> None:
        self._flush_bucket()
        measuring = self._measuring()
        self._step += 1
        self._step_started = False
        if not measuring:
            return None
        self._next_measure = self._step - 1 + self.every
        counts, self._counts = self._counts, [0] * len(self._params)
        k, self._backward_count = self._backward_count, 0
        micro_sq, self._micro_sq = self._micro_sq, []
        self._small_norms = []  # norms of a backward whose end was never reached (it raised)
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
        mode = (self.loss_normalisation if loss_normalisation is None
                else check_choice("loss_normalisation", loss_normalisation, _NORMALISATIONS))
        per_example = self._check_sizes(k, batch_size, sizes)
        if loss_total is not None:
            if mode == "micro_batch":
                raise ValueError("The 'loss_total' parameter applies to loss_normalisation='step' or 'global_step' "
                                 "only: with 'micro_batch' each micro-batch loss is a mean over its own examples.")
            if not isinstance(loss_total, torch.Tensor) and not _positive_number(loss_total):
                raise ValueError(f"The 'loss_total' parameter must be a positive finite number. Got {loss_total!r} "
                                 "instead.")
        grads = [local_shard(p.grad) for p in self._big_params if p.grad is not None]
        if not grads:
            raise RuntimeError(
                "GradientNoiseMonitor.step() found no .grad: optimizer.zero_grad() ran before it. Call "
                "monitor.step() after the last backward and before optimizer.step() and zero_grad()."
            )
        self._check_call_order()
        big = squared_norm(grads)  # this rank's shard under FSDP2, the whole reduced gradient otherwise
        n = self._size_tensor(k, batch_size, sizes, big.device)
        total = None if loss_total is None else torch.as_tensor(loss_total).to(big.device, torch.float64).reshape(())
        stats = self._step_stats(torch.stack([m.to(big.device) for m in micro_sq]).double(), n, mode, total,
                                 per_example, big if self.setup.kind == "fsdp2" else big / self.world_size, leftover)
        deciding = self._auto is not None and self._auto.due()
        if deciding:  # the cadence's inputs ride along: every rank then decides on the same numbers
            stats = torch.cat([stats, self._auto.window_stats(stats.device)])
        if self.setup.distributed:
            # One all-reduce of a few scalars: the weighted micro-batch norms and sizes of every rank,
            # the shards of .grad (FSDP2), leftovers and the duplicate counts (and, with every="auto",
            # each rank's hook and step times when the cadence is due).
            torch.distributed.all_reduce(stats, group=self.setup.group)
        if deciding:
            stats, agreed = stats[:-AutoCadence.N_STATS], stats[-AutoCadence.N_STATS:]
            self.every = self._auto.decide(agreed.tolist(), self.world_size, self._step - 1)
            self._next_measure = self._step - 1 + self.every
        # With "global_step" and no loss_total, the weights wait for the total over every rank.
        self._pending.append((self._step - 1, mode == "global_step" and total is None, per_example, stats))
        if len(self._pending) >= self.sync_every:
            self._materialize()
        return None

    def _check_sizes(self, k: int, batch_size: Any, sizes: Any) -> float | None:
        """Validate the sizes of this step's ``k`` micro-batches (host values only); return the
        size of one example in ``unit`` (``None`` when ``sizes`` are token counts)."""
        if sizes is None:
            b = batch_size if batch_size is not None else self.micro_batch_size
            if b is None:
                raise ValueError(
                    "The micro-batch size is unknown: pass 'micro_batch_size' to GradientNoiseMonitor, or "
                    "'batch_size' (equal micro-batches) or 'sizes' (one per micro-batch) to step().")
            check_positive_int("batch_size", b)
            if self.unit == "tokens" and not self.tokens_per_example:
                raise ValueError(
                    "The monitor measures in tokens (unit='tokens') without 'tokens_per_example': pass the tokens of "
                    "each micro-batch to step(sizes=...).")
            return float(self.tokens_per_example or 1)
        if batch_size is not None:
            raise ValueError("Pass 'batch_size' (equal micro-batches) or 'sizes' (one per micro-batch) to step(), "
                             "not both.")
        if isinstance(sizes, torch.Tensor):
            length = sizes.numel() if sizes.dim() == 1 else -1
        elif isinstance(sizes, (list, tuple)):
            length = len(sizes)
            bad = [s for s in sizes if not isinstance(s, torch.Tensor) and not _positive_number(s)]
            if bad:
                raise ValueError(f"The 'sizes' parameter must hold positive finite numbers. Got {bad[0]!r} in "
                                 f"{list(sizes)!r}.")
        else:
            raise TypeError(f"The 'sizes' parameter must be a list, a tuple or a 1-D tensor. Got "
                            f"{type(sizes).__name__} instead.")
        if length != k:
            got = f"{length} size(s)" if length >= 0 else f"a tensor of shape {tuple(sizes.shape)}"
            raise ValueError(
                f"The 'sizes' parameter must hold one size per micro-batch of the step: {k} backward passes reached "
                f".grad since the last step(), got {got}. Call backward once per micro-batch and list the sizes in "
                "the same order.")
        return 1.0 if self.unit == "examples" else None

    def _size_tensor(self, k: int, batch_size: Any, sizes: Any, device) -> torch.Tensor | float:
        """The ``k`` micro-batch sizes in ``unit``, float64 on ``device``, or one number when
        every micro-batch holds it (validated by :meth:`_check_sizes`)."""
        if sizes is None:
            b = batch_size if batch_size is not None else self.micro_batch_size
            return float(b * (self.tokens_per_example or 1))
        if isinstance(sizes, torch.Tensor):
            return sizes.to(device=device, dtype=torch.float64)
        if any(isinstance(s, torch.Tensor) for s in sizes):
            return torch.stack([torch.as_tensor(s).to(device=device, dtype=torch.float64).reshape(()) for s in sizes])
        return torch.tensor([float(s) for s in sizes], dtype=torch.float64, device=device)

    def _step_stats(self, micro_sq: torch.Tensor, n: torch.Tensor | float, mode: str, total: torch.Tensor | None,
                    per_example: float | None, big: torch.Tensor, leftover: torch.Tensor | None) -> torch.Tensor:
        """This rank's share of the step's sums (float64, summed over ranks by the all-reduce).

        ``micro_sq[i] = |c a_i g_i|^2`` is micro-batch ``i``'s squared norm as the hook saw it
        (``c`` the loss scale, ``a_i`` the weight of its mean loss, ``n_i`` its size; ``n`` one
        number when all are equal). Returned, in order: ``sum |c g_i|^2`` (``sum |c g_i|^2 /
        n_i^2`` for ``"global_step"`` without ``total``: the factor ``(N/W)^2`` waits for ``N``),
        ``|.grad|^2`` (this rank's share), ``sum a_i |c g_i|^2`` (for the Cauchy-Schwarz check;
        ``sum |c g_i|^2 / n_i`` likewise), 1 when the ordered pairs of micro-batches with
        bit-identical squared norms are at least ``K`` (``backward`` twice on each), the leftover,
        the loss scale, ``sum a_i``, ``sum a_i^2 / n_i``, ``sum 1 / n_i``, ``sum n_i``, the
        examples of the step (NaN when unknown), ``K`` and 1 for a size that is not positive.
        """
        k = len(micro_sq)
        equal = not isinstance(n, torch.Tensor)
        inv_sum, n_sum = (k / n, k * n) if equal else (n.reciprocal().sum(), n.sum())
        deferred = mode == "global_step" and total is None  # a_i = (W / N) n_i: N, over all ranks, comes later
        if mode == "micro_batch":
            a = 1.0 / k if self.loss_divided_by_accumulation else 1.0
        elif deferred:
            a = n
        else:
            a = n / (n_sum if total is None else total) * (self.world_size if mode == "global_step" else 1)
        if isinstance(a, torch.Tensor) and a.dim():  # one weight per micro-batch
            small, jensen = (micro_sq / a.square()).sum(), (micro_sq / a).sum()
            a_sum, q = a.sum(), (a.square() / n).sum()
        else:
            summed = micro_sq.sum()
            small, jensen, a_sum, q = summed / (a * a), summed / a, k * a, a * a * inv_sum
        if deferred:
            a_sum, q = 0.0, 0.0
        examples = n_sum / per_example if per_example else math.nan
        duplicate = (micro_sq.unsqueeze(0) == micro_sq.unsqueeze(1)).sum() >= 2 * k if k >= 2 else 0.0
        return pack([small, big, jensen, duplicate, 0.0 if leftover is None else leftover, self._scale(), a_sum, q,
                      inv_sum, n_sum, examples, float(k), 0.0 if equal else (n <= 0).any()], micro_sq)

    def _materialize(self) -> None:
        if self._step - self._params_checked_at >= self.sync_every:
            self._check_parameters()
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        values = torch.stack([s for *_, s in pending]).detach().cpu().numpy()  # (n, 13) float64
        w = self.world_size
        for (step, global_total, per_example, _), row in zip(pending, values):
            small, big, jensen, dup, left, scale_sum, a_sum, q, inv_n_sum, n_sum, examples, k_sum, bad = row
            if bad or not (inv_n_sum > 0 and math.isfinite(inv_n_sum) and math.isfinite(n_sum)):
                raise ValueError(
                    f"A micro-batch size given to GradientNoiseMonitor.step() at step {step} was not a positive finite "
                    "number: every micro-batch must hold at least one example (token).")
            if global_total:  # a_i = kappa n_i with kappa = W / N
                kappa = w / n_sum
                small, jensen, a_sum, q = small / kappa**2, jensen / kappa, float(w), kappa**2 * n_sum
            c2 = (scale_sum / w) ** 2
            # Hook gradients are c a_i g_i (g_i: gradient of micro-batch i's mean loss); .grad is the
            # mean over ranks of c sum_i a_i g_i, i.e. (c sum_all a_i / W) times the a-weighted mean of all g_i.
            b_small = _snap(k_sum / inv_n_sum)
            rec = self.tracker.update(
                step, small_sq=small / (k_sum * c2), big_sq=big / (c2 * (a_sum / w) ** 2), b_small=b_small,
                b_big=_snap(a_sum * a_sum / q), accumulation=_snap(k_sum / w, whole=True),
                micro_batch_size=_snap(b_small / per_example, whole=True) if per_example else math.nan,
                world_size=w, global_batch=_snap(examples, whole=True))
            self._check_plausible(rec, left, int(k_sum), jensen / (c2 * a_sum), dup > 0)

    # ------------------------------------------------------------------ results
    @property
    def records(self) -> list[dict]:
        """One dict per measured step (host floats; safe to log to TensorBoard, W&B or CSV).

        Keys: ``step``, ``accumulation`` (K per rank; the mean over ranks if they differ),
        ``micro_batch_size`` (examples per micro-batch; with ``sizes``, their harmonic mean, NaN
        for token counts), ``world_size`` (W), ``global_batch`` (examples of the step over all
        ranks, ``W K b``; NaN for token counts), ``b_small`` and ``b_big`` (in ``unit``: ``b``
        and ``W K b`` for equal micro-batches, else the sizes of the module docstring),
        ``small_sq`` and ``big_sq`` (squared norms), ``skipped`` (non-finite gradients), the
        per-step unbiased ``g_sq`` and ``trace_sigma``, their bias-corrected EMAs,
        ``b_simple_ema``, and ``flag`` where a step failed a plausibility check (``excess``,
        ``identical``, ``duplicate``).
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

    @property
    def cadence(self) -> dict:
        """How often the monitor measures, and (with ``every="auto"``) why.

        Keys: ``every`` (measure every ``every``-th optimizer step), ``auto``; with
        ``every="auto"`` also ``target`` (the share of the step time allowed), ``decided_at_step``
        (``None`` until the first decision, after a few measured steps), the timings it decided
        on (mean over ranks of each rank's median): ``measured_step_cost_s`` and
        ``skipped_step_cost_s`` (seconds inside the monitor at a measured and an unmeasured step),
        ``step_time_s`` (between two ``step()`` calls, the monitor's time included),
        ``expected_overhead`` (its share of the step time at the chosen cadence, from those), and
        ``interval_width_factor``: ``sqrt(every)``, how much wider the interval of ``B_simple``
        over a given stretch of training is than measuring every step (fewer measured steps; less
        when successive steps are correlated), and ``note`` when the target cannot be met.
        """
        if self._auto is None:
            return {"every": self.every, "auto": False}
        return {"every": self.every, "auto": True, **self._auto.report(self.every)}

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
                plausibility check (forgotten ``zero_grad``, identical micro-batches, ``backward``
                twice per micro-batch); the error carries the provisional estimate where there
                is one.
        """
        self._materialize()
        self._check_records()
        return self.tracker.estimate(start=start, stop=stop, confidence=confidence, min_steps=min_steps)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Everything needed to continue the measurement after a checkpoint/resume."""
        self._materialize()
        return {"step": self._step, "world_size": self.world_size, "tracker": self.tracker.state_dict(),
                "every": self.every, "next_measure": self._next_measure}

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
        if self._auto is not None and {"every", "next_measure"} <= set(state):
            # the agreed cadence goes on where it was (and is decided again after a few measured steps)
            self.every = int(state["every"])
            self._next_measure = max(int(state["next_measure"]), self._step)
        else:  # the next multiple of the cadence, as measuring every ``every``-th step from the start would
            self._next_measure = -(-self._step // self.every) * self.every

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
#: On a CPU, incoming (not adopted) gradients are held until this many bytes wait, then their norms are
#: taken in one fused kernel: one call per parameter cost more than the norms themselves on models with
#: many small parameters, and holding many more defeats the allocator's reuse of their memory.
_CPU_BUCKET_BYTES = 2**20


#: How a micro-batch's loss is normalised (see the module docstring).
_NORMALISATIONS = ("micro_batch", "step", "global_step")


def _positive_number(x: Any) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def _snap(x: float, whole: bool = False) -> float | int:
    """``x`` rounded to the nearest integer when it is one up to float rounding (the sums behind
    a batch size are float64), as an int when ``whole``; ``x`` itself otherwise."""
    if math.isfinite(x) and abs(x - round(x)) <= 1e-9 * max(1.0, abs(x)):
        return int(round(x)) if whole else float(round(x))
    return x
