"""``NoiseScaleCallback`` for the Hugging Face ``transformers.Trainer``, and the accelerate pattern;
``BatchControllerCallback``: the online batch controller driving ``gradient_accumulation_steps``.

::

    from batchlaw.integrations.hf import NoiseScaleCallback

    trainer = Trainer(model=model, args=TrainingArguments(..., gradient_accumulation_steps=4), ...)
    NoiseScaleCallback().attach(trainer)     # before the report_to loggers, so they get the metrics
    trainer.train()

Where it measures. The Trainer clips the gradients before it calls any callback of the
optimizer step (``on_pre_optimizer_step`` sees clipped, unscaled gradients), so the callback
does not measure from a Trainer event. When training begins it installs the
:class:`~batchlaw.noise.GradientNoiseMonitor` and a hook of its own on the model's parameters;
at the end of every backward pass the hook asks accelerate's ``GradientState`` whether this was
the last micro-batch of the optimizer step (the Trainer sets ``sync_gradients`` before each
micro-batch) and, if so, steps the monitor right there: after the last backward (and after
DDP's all-reduce) and before unscaling and clipping. The fp16 loss scale is read from the
accelerate optimizer's ``GradScaler``.

How the Trainer weighs the micro-batches of a step, and what the callback tells the monitor:

* A model whose ``forward`` takes ``**kwargs`` (every ``transformers`` model) gets
  ``num_items_in_batch``, the Trainer's count of the labels other than ``-100`` in the whole
  step, and its loss is the sum over its labels divided by that: each micro-batch weighs its own
  share ``n_i / N``, and the shares differ as soon as padding or masking does. The callback
  counts the labels each micro-batch's loss sums over (``labels[..., 1:]`` for a causal language
  model's loss, which predicts the next token) and steps the monitor with those sizes,
  ``loss_total=num_items_in_batch`` and ``loss_normalisation="step"`` (``"global_step"`` under
  DDP with ``average_tokens_across_devices``, where ``N`` counts every rank's labels and the loss
  is multiplied by the world size). With one label per token the sizes are tokens, so the
  callback must measure in tokens (``tokens_per_example`` then sets the unit only: the sizes are
  the label counts, e.g. 15 predicted tokens per 16-token block).
* Any other model returns a mean loss per micro-batch, which the Trainer divides by the number
  of micro-batches of the step: the callback passes the examples of each micro-batch (a short
  last one included) with ``loss_normalisation="micro_batch"``.

With accelerate in your own loop, no callback is needed::

    accelerator = Accelerator(gradient_accumulation_steps=4)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    monitor = GradientNoiseMonitor(model, micro_batch_size=8, scaler=accelerator.scaler)
    for batch in loader:
        with accelerator.accumulate(model):
            accelerator.backward(loss_fn(model, batch))   # accelerate divides by 4
            if accelerator.sync_gradients:
                monitor.step()                            # before clip_grad_norm_ and step
                accelerator.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
"""

from __future__ import annotations

import math
import warnings
import weakref
from typing import Any

import torch

from ..noise import GradientNoiseMonitor
from ._common import batch_size_of, dataset_sampler, require, set_monitor_options
from .loggers import noise_metrics, window_estimate

_transformers = require("transformers", "hf", "batchlaw.integrations.hf")
_accelerate_state = require("accelerate.state", "hf", "batchlaw.integrations.hf")
TrainerCallback = _transformers.TrainerCallback

__all__ = ["NoiseScaleCallback", "BatchControllerCallback"]


def _shifts_labels(model, trainer) -> bool:
    """Whether the model's loss sums over ``labels[..., 1:]`` (a causal language model's loss
    predicts the next token: ``transformers``' ``ForCausalLMLoss``, also where the Trainer does not
    recognise it, e.g. GPT-2)."""
    if getattr(trainer, "_loss_shifts_labels", False):
        return True
    try:
        from transformers.loss.loss_utils import ForCausalLMLoss
    except ImportError:  # pragma: no cover - older transformers
        return False
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return False
    try:
        return getattr(model, "loss_function", None) is ForCausalLMLoss
    except Exception:  # noqa: BLE001 - a model whose loss_function property fails has no such loss
        return False


def _report_to(args) -> list[str]:
    report = getattr(args, "report_to", None)
    if report is None:
        return []
    report = [report] if isinstance(report, str) else list(report)
    return [r for r in report if r not in ("none", None)]


class NoiseScaleCallback(TrainerCallback):
    """Measures ``B_simple`` while ``Trainer.train`` runs and writes it into the Trainer's logs.

    Whenever the Trainer logs its training loss (``logging_steps``), the callback adds the latest
    step's record and the ``B_simple`` estimate over the last ``window`` optimizer steps to that
    log entry: ``gns/b_simple``, ``gns/b_simple_lo``, ``gns/b_simple_hi``, ``gns/b_simple_ema``,
    ``gns/g_sq``, ``gns/trace_sigma`` (and EMAs), ``gns/small_sq``, ``gns/big_sq``,
    ``gns/b_small``, ``gns/b_big`` and ``gns/accumulation``
    (:mod:`batchlaw.integrations.loggers`; non-finite values left out). They land in
    ``trainer.state.log_history`` and, when the callback runs before the ``report_to``
    integrations (:meth:`attach` puts it there), in TensorBoard, W&B and the others.
    Batch sizes and ``B_simple`` are in :attr:`unit`. Use ``gradient_accumulation_steps >= 2``:
    one micro-batch per step gives one batch size and no estimate.

    Args:
        micro_batch_size: examples per micro-batch on each device; default: the first dimension
            of the model's first tensor input (``input_ids`` when present) in each training
            forward pass.
        tokens_per_example: measure in tokens (``B_simple`` in tokens).
        every: measure every ``every``-th optimizer step, or ``"auto"``: the monitor times its own
            hooks and picks the cadence that keeps its cost under ``overhead_target`` of the step
            time, the same on every rank (:attr:`GradientNoiseMonitor.cadence
            <batchlaw.noise.GradientNoiseMonitor.cadence>` says what it chose and why).
        overhead_target: with ``every="auto"``, the share of the step time the monitor may take.
        window: optimizer steps the logged ``b_simple`` estimate covers (``None``: all).
        ema_beta: smoothing of the logged EMAs.
        prefix: metric-name prefix.

    Attributes:
        monitor: the :class:`~batchlaw.noise.GradientNoiseMonitor` (once training has begun;
            its records stay readable after training).

    Raises:
        ValueError: a bad argument; DeepSpeed, FSDP, reentrant activation checkpointing,
            multi-GPU ``DataParallel``, or a Trainer with a ``compute_loss_func`` or
            ``loss_is_scaled_for_ga=True`` (when training begins); a loss normalised by label
            tokens while measuring in examples, or labels that do not reach the model (label
            smoothing), at the first such micro-batch.

    Example:
        >>> cb = NoiseScaleCallback(micro_batch_size=8)
        >>> cb.unit
        'examples'

    References:
        McCandlish, Kaplan, Amodei et al. 2018, "An Empirical Model of Large-Batch Training",
        arXiv:1812.06162, eq. 2.9 and Appendix A.1.
    """

    def __init__(self, *, micro_batch_size: int | None = None, tokens_per_example: int | None = None,
                 every: int | str = 1, overhead_target: float = 0.01, window: int | None = 200,
                 ema_beta: float = 0.95, prefix: str = "gns/") -> None:
        set_monitor_options(self, micro_batch_size=micro_batch_size, tokens_per_example=tokens_per_example,
                            every=every, overhead_target=overhead_target, window=window, ema_beta=ema_beta,
                            prefix=prefix)
        self.monitor: GradientNoiseMonitor | None = None
        self._attached = False
        self._trainer = None
        self._handles: list[Any] = []
        self._sizes: list[int] = []  # examples of each micro-batch of the step
        self._items: list[Any] = []  # per micro-batch: (labels its loss sums over, a 0-d tensor; per token?)
        self._num_items = None  # the Trainer's num_items_in_batch for this step
        self._shifts_labels = False
        self._global_items = False
        self._queued = False
        self._gradient_state = None
        self._logged_step = -1

    # ------------------------------------------------------------------ placement
    def attach(self, trainer) -> NoiseScaleCallback:
        """Add this callback to ``trainer`` ahead of its other callbacks (the ``report_to``
        integrations among them), so the metrics it adds to a log entry reach them. Returns self."""
        handler = getattr(trainer, "callback_handler", None)
        if handler is None or not hasattr(handler, "callbacks"):
            raise TypeError(f"The 'trainer' parameter must be a transformers.Trainer. Got {type(trainer).__name__}.")
        if self in handler.callbacks:
            handler.callbacks.remove(self)
        handler.callbacks.insert(0, self)
        self._attached = True
        self._trainer = weakref.ref(trainer)
        return self

    # ------------------------------------------------------------------ checks
    def _check_trainer(self) -> None:
        """Refuse Trainers whose loss normalisation the callback cannot see (when it knows the Trainer)."""
        trainer = self._trainer() if self._trainer is not None else None
        if trainer is None:
            return
        if getattr(trainer, "compute_loss_func", None) is not None:
            raise ValueError(
                "NoiseScaleCallback does not support a Trainer with compute_loss_func: the Trainer then normalises "
                "the loss by num_items_in_batch where the callback cannot count each micro-batch's share. Measure "
                "with batchlaw.noise.GradientNoiseMonitor in your own loop (step(sizes=...)).")
        if getattr(trainer, "loss_is_scaled_for_ga", None) is True:
            raise ValueError(
                "NoiseScaleCallback does not support a Trainer with loss_is_scaled_for_ga=True: its compute_loss "
                "weighs the micro-batches in a way the callback cannot see. Measure with "
                "batchlaw.noise.GradientNoiseMonitor in your own loop (step(sizes=...)).")

    @staticmethod
    def _check_supported(args) -> None:
        if getattr(args, "deepspeed", None):
            raise ValueError(
                "NoiseScaleCallback does not support DeepSpeed: the micro-batch and accumulated "
                "gradients it reads are partitioned there. Use DDP (torchrun) or a single device."
            )
        if getattr(args, "fsdp", None):
            raise ValueError(
                "NoiseScaleCallback does not support FSDP in the Trainer. Use DDP (torchrun) or a "
                "single device, or measure with batchlaw.noise.GradientNoiseMonitor in your own loop."
            )
        for name in ("activation_checkpointing_kwargs", "gradient_checkpointing_kwargs"):
            kw = getattr(args, name, None)
            if isinstance(kw, dict) and kw.get("use_reentrant") is True and (
                    getattr(args, "activation_checkpointing", False) or getattr(args, "gradient_checkpointing", False)):
                raise ValueError(
                    f"NoiseScaleCallback does not support reentrant activation checkpointing ({name}="
                    f"{kw!r}): the recomputation runs backward passes inside the backward pass, which ends "
                    "them early for the callback. Use {'use_reentrant': False} (the default)."
                )
        if getattr(args, "n_gpu", 1) > 1:
            raise ValueError(
                f"NoiseScaleCallback does not support torch.nn.DataParallel (n_gpu={args.n_gpu}): launch "
                "with torchrun for DDP, or make one GPU visible (CUDA_VISIBLE_DEVICES)."
            )

    # ------------------------------------------------------------------ training
    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        self._check_supported(args)
        self._check_trainer()
        if model is None:
            raise ValueError("NoiseScaleCallback needs the model: the Trainer passed none to on_train_begin.")
        if not self._attached and _report_to(args):
            warnings.warn(
                "NoiseScaleCallback was added with callbacks=[...] or add_callback, so the Trainer calls it "
                f"after the report_to integrations ({', '.join(_report_to(args))}): its metrics reach "
                "trainer.state.log_history but not them. Use NoiseScaleCallback(...).attach(trainer) instead.",
                stacklevel=2,
            )
        if args.gradient_accumulation_steps < 2 and getattr(args, "world_size", 1) < 2:
            warnings.warn(
                "gradient_accumulation_steps=1 on one process gives one batch size per step, so no "
                "noise-scale estimate: set gradient_accumulation_steps >= 2 (and divide "
                "per_device_train_batch_size by it).",
                stacklevel=2,
            )
        self._remove_hooks()
        scaler = getattr(optimizer, "scaler", None)  # accelerate's AcceleratedOptimizer holds the fp16 GradScaler
        target, group = self._monitored_model(model)
        self.monitor = GradientNoiseMonitor(
            target, micro_batch_size=self.micro_batch_size, tokens_per_example=self.tokens_per_example,
            scaler=scaler, loss_divided_by_accumulation=True, every=self.every,
            overhead_target=self.overhead_target, ema_beta=self.ema_beta,
            process_group=group,
        )
        self._gradient_state = _accelerate_state.GradientState()
        self._sizes, self._items, self._num_items, self._queued = [], [], None, False
        self._shifts_labels = _shifts_labels(model, self._trainer() if self._trainer is not None else None)
        self._global_items = bool(getattr(args, "average_tokens_across_devices", False)) and args.world_size > 1
        # Every trainable parameter, not just one: a parameter unused in a micro-batch must not
        # hide that micro-batch's backward. Only the first hook of a backward pass queues.
        self._handles.extend(p.register_hook(self._on_grad) for p in model.parameters() if p.requires_grad)
        self._handles.append(model.register_forward_pre_hook(self._on_forward, with_kwargs=True))
        return control

    def _monitored_model(self, model):
        """The module and process group for the monitor: under DDP the Trainer's wrapper when
        :meth:`attach` gave us the Trainer, else the default group that the Trainer's DDP
        averages ``.grad`` over (synchronised by the time the monitor steps)."""
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return model, "auto"
        trainer = self._trainer() if self._trainer is not None else None
        wrapped = getattr(trainer, "model_wrapped", None)
        if isinstance(wrapped, torch.nn.parallel.DistributedDataParallel):
            return wrapped, "auto"
        return model, dist.group.WORLD

    def _on_forward(self, module, args, kwargs) -> None:
        if not (module.training and torch.is_grad_enabled()):
            return None  # evaluation inside training
        if kwargs and kwargs.get("num_items_in_batch") is not None:
            self._count_items(kwargs)
        if self.micro_batch_size is not None:
            self._sizes.append(self.micro_batch_size)
            return None
        b = batch_size_of(kwargs) if kwargs else None
        b = b if b is not None else batch_size_of(args)
        if b is None:
            raise ValueError(
                "NoiseScaleCallback cannot tell the micro-batch size from the model's inputs (no tensor "
                "in them): pass NoiseScaleCallback(micro_batch_size=...)."
            )
        self._sizes.append(b)
        return None

    def _count_items(self, kwargs) -> None:
        """Count the labels this micro-batch's loss sums over (its share of ``num_items_in_batch``)."""
        labels = kwargs.get("shift_labels")
        if labels is None:
            labels = kwargs.get("labels")
            if labels is None:
                raise ValueError(
                    "The Trainer normalises the loss by num_items_in_batch but the labels do not reach the model "
                    "(label smoothing takes them out of the inputs): NoiseScaleCallback cannot count each "
                    "micro-batch's share of the step. Turn label_smoothing_factor off while measuring, or measure with "
                    "batchlaw.noise.GradientNoiseMonitor in your own loop (step(sizes=...)).")
            if self._shifts_labels:
                labels = labels[..., 1:]
        if labels.dim() >= 2 and self.unit != "tokens":
            raise ValueError(
                "The Trainer normalises the loss by the number of label tokens of the step (num_items_in_batch), so "
                "each micro-batch weighs by its tokens and the noise scale must be measured in tokens: pass "
                "NoiseScaleCallback(tokens_per_example=...) (the label counts are then the micro-batch sizes).")
        self._items.append((labels.ne(-100).sum().to(torch.float64), labels.dim() >= 2))
        self._num_items = kwargs["num_items_in_batch"]

    def _on_grad(self, grad):
        if not self._queued:
            torch.autograd.Variable._execution_engine.queue_callback(self._end_of_backward)
            self._queued = True
        return None

    def _end_of_backward(self) -> None:
        self._queued = False
        if not self._gradient_state.sync_gradients:
            return
        # The last micro-batch of the step. Step the monitor after every other end-of-backward
        # callback (DDP finishes its all-reduce in one): a callback queued now runs after them.
        torch.autograd.Variable._execution_engine.queue_callback(self._step_monitor)

    def _step_monitor(self) -> None:
        sizes, self._sizes = self._sizes, []
        items, self._items = self._items, []
        num_items, self._num_items = self._num_items, None
        if not sizes:
            raise RuntimeError(
                "NoiseScaleCallback saw a backward pass without a training forward pass of the model it "
                "was given: pass NoiseScaleCallback(micro_batch_size=...) and check the Trainer's model."
            )
        tpe = self.tokens_per_example or 1
        if not items:  # a mean loss per micro-batch, divided by the micro-batches of the step
            self.monitor.step(sizes=[b * tpe for b in sizes], loss_normalisation="micro_batch")
            return
        if len(items) != len(sizes):
            raise RuntimeError(
                f"NoiseScaleCallback saw {len(sizes)} training forward passes in this step but num_items_in_batch in "
                f"only {len(items)} of them: it cannot tell how the Trainer weighed the micro-batches.")
        per_token = items[0][1]
        self.monitor.step(sizes=[c if per_token else c * tpe for c, _ in items], loss_total=num_items,
                          loss_normalisation="global_step" if self._global_items else "step")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.monitor is None or logs is None or "loss" not in logs or state.global_step == self._logged_step:
            return control
        records = self.monitor.records
        if not records:
            return control
        metrics = noise_metrics(records[-1], window_estimate(self.monitor, window=self.window), prefix=self.prefix)
        metrics = {k: v for k, v in metrics.items() if math.isfinite(v)}
        logs.update(metrics)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(metrics)
        self._logged_step = state.global_step
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self._remove_hooks()
        return control

    def _remove_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        if self.monitor is not None:
            self.monitor.remove()


def _hf_loss(model, batch):
    out = model(**batch)
    return out["loss"] if isinstance(out, dict) or hasattr(out, "keys") else out[0]


class BatchControllerCallback(NoiseScaleCallback):
    """A :class:`~batchlaw.schedule.BatchController` driving the ``transformers.Trainer`` through
    gradient-accumulation steps (the Trainer has no batch-size schedule of its own).

    The micro-batch stays ``per_device_train_batch_size``; the controller's batch is laid out as
    ``per_device_train_batch_size x K x world size`` and the callback sets
    ``args.gradient_accumulation_steps = K`` between optimizer steps. The Trainer counts the
    accumulation from the start of each epoch (an optimizer step after every ``K``-th micro-batch),
    so a new ``K`` takes effect at the first step boundary where the micro-batches of the epoch so
    far are a multiple of it; until then the previous one stays. Before every optimizer step the
    callback sets the learning rate (and Adam betas/eps under the square-root rule) for the batch
    that step really had: **the controller's learning rate replaces the Trainer's** (give the
    controller an :class:`~batchlaw.schedule.LRSchedule` for warm-up or decay). Give
    ``num_train_epochs`` (a data budget): ``max_steps`` counts optimizer steps, which a growing
    batch makes fewer.

    Branches (``branch=True``, the default): when training begins the controller is bound to the
    model and optimizer, with ``loss_fn`` (default ``model(**batch)["loss"]``) and ``sample_fn``
    (default: items of the training dataset drawn at random with the controller's own generator,
    put together by the Trainer's data collator, on the model's device; the Trainer's data stream
    is never touched).

    Args:
        controller: the :class:`~batchlaw.schedule.BatchController`, built with
            ``max_micro_batch=per_device_train_batch_size`` and the world size.
        branch: let the controller branch.
        loss_fn: ``loss_fn(model, batch) -> 0-d tensor`` for branches; default ``model(**batch)["loss"]``.
        sample_fn: ``sample_fn(n, generator) -> batch`` on the model's device; default: items of the
            training dataset through the Trainer's data collator.
        eval_fn: ``eval_fn(model) -> float``, a held-out loss for branches; default: a probe batch.
        **kwargs: :class:`NoiseScaleCallback` options.

    Attributes:
        examples_seen: training examples of the optimizer steps so far, over all ranks.
        applied: ``[[global_step, K], ...]``: when each accumulation count took effect.

    Raises:
        ValueError: the Trainer's first step does not match the controller's first batch.

    Example:
        >>> from batchlaw.schedule import BatchController
        >>> cb = BatchControllerCallback(BatchController(16, 1e-3, max_batch=128, max_micro_batch=8), branch=False)
        >>> cb.controller.base_batch
        16
    """

    def __init__(self, controller, *, branch: bool = True, loss_fn=None, sample_fn=None, eval_fn=None,
                 **kwargs) -> None:
        from ..schedule import BatchController

        if not isinstance(controller, BatchController):
            raise TypeError(f"The 'controller' parameter must be a batchlaw.schedule.BatchController. Got "
                            f"{type(controller).__name__} instead.")
        if not isinstance(branch, bool):
            raise TypeError(f"The 'branch' parameter must be True or False. Got {branch!r}.")
        for name, fn in (("loss_fn", loss_fn), ("sample_fn", sample_fn), ("eval_fn", eval_fn)):
            if fn is not None and not callable(fn):
                raise TypeError(f"The '{name}' parameter must be callable or None. Got {type(fn).__name__}.")
        super().__init__(**kwargs)
        self.controller = controller
        self.branch = branch
        self.loss_fn, self.sample_fn, self.eval_fn = loss_fn, sample_fn, eval_fn
        self.examples_seen = 0
        self.applied: list[list[int]] = []
        self._world = 1
        self._epoch_micro = 0  # training micro-batches of this epoch so far (this rank)
        self._update_start = 0  # examples seen before the current optimizer step
        self._last_batch = None  # global batch of the last optimizer step
        self._want_k = None
        self._args = None

    def on_train_begin(self, args, state, control, model=None, optimizer=None, train_dataloader=None, **kwargs):
        control = super().on_train_begin(args, state, control, model=model, optimizer=optimizer, **kwargs)
        dist = torch.distributed
        self._world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        self._args = args
        if self.branch:
            loss_fn = self.loss_fn or _hf_loss
            sample = self.sample_fn
            if sample is None:
                if train_dataloader is None:
                    raise ValueError("BatchControllerCallback needs the training DataLoader to draw branch examples: "
                                     "pass sample_fn=... (or branch=False).")
                collate = getattr(train_dataloader, "collate_fn", None)
                sample = dataset_sampler(getattr(train_dataloader, "dataset", None), collate,
                                         next(model.parameters()).device)
            self.controller.bind(model, optimizer, loss_fn=loss_fn, sample_fn=sample, eval_fn=self.eval_fn)
        from ..schedule import layout

        ctl = self.controller
        micro, k = layout(ctl.base_batch, world_size=ctl.world_size, max_micro_batch=ctl.max_micro_batch,
                          min_accumulation=ctl.min_accumulation)
        if (micro, k, ctl.world_size) != (args.per_device_train_batch_size, args.gradient_accumulation_steps,
                                          self._world):
            raise ValueError(
                f"The controller starts at {ctl.base_batch} examples = {micro} per device x "
                f"K={k} x {ctl.world_size} ranks, but the Trainer runs per_device_train_batch_size="
                f"{args.per_device_train_batch_size}, gradient_accumulation_steps={args.gradient_accumulation_steps} "
                f"on {self._world} ranks. Build the controller with max_micro_batch=per_device_train_batch_size, "
                "world_size and base_batch = per_device_train_batch_size x gradient_accumulation_steps x world size.")
        self._want_k = ctl.step(self.examples_seen, self.monitor).accumulation  # may grow at once: applied when aligned
        self._epoch_micro, self._update_start = 0, self.examples_seen
        return control

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._epoch_micro = 0
        self._apply_k(args, state)
        return control

    def _apply_k(self, args, state) -> None:
        """Set the wanted accumulation count if the micro-batches of this epoch so far are a multiple of it."""
        if self._want_k is not None and self._want_k != args.gradient_accumulation_steps \
                and self._epoch_micro % self._want_k == 0:
            args.gradient_accumulation_steps = self._want_k
            self.applied.append([int(state.global_step), int(self._want_k)])

    def _on_forward(self, module, args, kwargs) -> None:
        if module.training and torch.is_grad_enabled():
            self._epoch_micro += 1
        return super()._on_forward(module, args, kwargs)

    def _step_monitor(self) -> None:
        self._last_batch = sum(self._sizes) * self._world
        super()._step_monitor()

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        if self._last_batch and optimizer is not None:  # the learning rate of the batch this step really had
            lr = self.controller.lr_settings(self._update_start, self._last_batch)
            for group in optimizer.param_groups:
                group["lr"] = lr["lr"]
                if lr["betas"] is not None and "betas" in group:
                    group["betas"] = tuple(lr["betas"])
                if lr["eps"] is not None and "eps" in group:
                    group["eps"] = lr["eps"]
        return control

    def on_step_end(self, args, state, control, **kwargs):
        self.examples_seen += self._last_batch or 0
        self._update_start = self.examples_seen
        self._want_k = self.controller.step(self.examples_seen, self.monitor).accumulation
        self._apply_k(args, state)
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self.controller.unbind()
        return super().on_train_end(args, state, control, **kwargs)
