"""``NoiseScaleCallback`` for PyTorch Lightning (>= 2): the gradient noise scale in your loggers;
``BatchControllerCallback``: the online batch controller driving ``accumulate_grad_batches``.

::

    from batchlaw.integrations.lightning import NoiseScaleCallback

    trainer = lightning.Trainer(accumulate_grad_batches=4, callbacks=[NoiseScaleCallback()])
    trainer.fit(model, train_loader)

Where it measures. The :class:`~batchlaw.noise.GradientNoiseMonitor` must see the accumulated
gradient after the last backward of an optimizer step and before the loss scale is removed
and the gradients are clipped. Lightning's ``on_before_optimizer_step`` comes too late for
``precision="16-mixed"`` (the precision plugin has called ``scaler.unscale_`` by then; clipping
follows the hook), so the callback steps the monitor in ``on_after_backward`` of the micro-batch
after which Lightning steps the optimizer (its own ``_should_accumulate`` test). That point
is before unscaling and clipping for every precision, and after DDP's gradient all-reduce.

What it handles: ``accumulate_grad_batches`` (K counted per step, including the short last
step of an epoch), ``precision`` ``"32-true"``, ``"16-true"``, ``"bf16-true"``,
``"bf16-mixed"`` and ``"16-mixed"`` (the loss scale is read from the precision plugin's
``GradScaler``), gradient clipping set on the Trainer (measured before it), the single-device
and DDP strategies. Anything else (FSDP, DeepSpeed, manual optimization, ``"64-true"``, other
precision plugins) is refused by name when fitting starts.

The loss Lightning backpropagates is the ``training_step`` loss divided by
``trainer.accumulate_grad_batches``; the callback tells the monitor so through the loss scale
it reads, so ``g_sq`` and ``trace_sigma`` are those of one micro-batch's mean loss even on a
short last step.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from .._validation import check_positive_int
from ..noise import GradientNoiseMonitor
from ._common import batch_size_of, dataset_sampler, require, set_monitor_options, step_batch_size
from .loggers import noise_metrics, window_estimate

_pl = require("lightning.pytorch", "lightning", "batchlaw.integrations.lightning")
Callback = _pl.Callback

__all__ = ["NoiseScaleCallback", "BatchControllerCallback"]

_SUPPORTED_STRATEGIES = (_pl.strategies.SingleDeviceStrategy, _pl.strategies.DDPStrategy)
_SUPPORTED_PRECISION = (_pl.plugins.precision.Precision, _pl.plugins.precision.MixedPrecision,
                        _pl.plugins.precision.HalfPrecision)


class _LightningLossScale:
    """The factor between the gradient of one micro-batch's mean loss and what autograd sees.

    Lightning backpropagates ``scaler.scale(loss / trainer.accumulate_grad_batches)``; the
    monitor divides both squared norms by this factor squared (it is built with
    ``loss_divided_by_accumulation=False``). Read at ``monitor.step()``, i.e. after the last
    backward of the step, before any change of the accumulation count.
    """

    def __init__(self, trainer, scaler) -> None:
        self._trainer = trainer
        self._scaler = scaler

    def is_enabled(self) -> bool:
        return True

    def _amp(self) -> bool:
        return self._scaler is not None and self._scaler.is_enabled()

    @property
    def _scale(self):  # device tensor when AMP scales the loss: no host synchronisation
        if self._amp() and isinstance(getattr(self._scaler, "_scale", None), torch.Tensor):
            return self._scaler._scale / self._trainer.accumulate_grad_batches
        return None

    def get_scale(self) -> float:
        scale = float(self._scaler.get_scale()) if self._amp() else 1.0
        return scale / self._trainer.accumulate_grad_batches

    @property
    def _per_optimizer_states(self) -> dict:  # lets the monitor's unscale_-before-step guard see the real scaler
        return getattr(self._scaler, "_per_optimizer_states", {}) if self._scaler is not None else {}


class NoiseScaleCallback(Callback):
    """Measures ``B_simple`` while ``trainer.fit`` runs and logs it to every configured logger.

    Attaches a :class:`~batchlaw.noise.GradientNoiseMonitor` to the LightningModule when fitting
    starts and removes it when fitting ends (the records stay readable in :attr:`monitor`).
    With ``accumulate_grad_batches=1`` there is one batch size per step and no estimate: use
    ``accumulate_grad_batches >= 2``.

    Every time Lightning writes its logs (``Trainer(log_every_n_steps=...)``) the callback logs,
    through ``LightningModule.log_dict`` (so CSV, TensorBoard, W&B and any other logger receive
    them), the latest step's record and the ``B_simple`` estimate over the last ``window``
    optimizer steps: ``gns/b_simple``, ``gns/b_simple_lo``, ``gns/b_simple_hi``,
    ``gns/b_simple_ema``, ``gns/g_sq``, ``gns/trace_sigma`` (their EMAs too), ``gns/small_sq``,
    ``gns/big_sq``, ``gns/b_small``, ``gns/b_big``, ``gns/accumulation`` and ``gns/world_size``
    (:mod:`batchlaw.integrations.loggers` lists them). Non-finite values are left out. Batch sizes
    and ``B_simple`` are all in :attr:`unit`.

    Args:
        micro_batch_size: examples per micro-batch on each device; default: the first dimension
            of the first tensor of each training batch.
        tokens_per_example: measure in tokens (``B_simple`` in tokens).
        every: measure every ``every``-th optimizer step, or ``"auto"``: the monitor times its own
            hooks and picks the cadence that keeps its cost under ``overhead_target`` of the step
            time, the same on every rank (:attr:`GradientNoiseMonitor.cadence
            <batchlaw.noise.GradientNoiseMonitor.cadence>` says what it chose and why).
        overhead_target: with ``every="auto"``, the share of the step time the monitor may take.
        window: optimizer steps the logged ``b_simple`` estimate covers (``None``: all).
        ema_beta: smoothing of the logged EMAs.
        prefix: metric-name prefix.
        schedule: optional batch-size schedule with ``step(examples_seen, monitor) -> choice``
            (:mod:`batchlaw.schedule`): before every optimizer step the callback asks it for the
            step's accumulation count and learning rate and sets
            ``trainer.accumulate_grad_batches`` and the optimizer's ``lr``. The micro-batch size
            and the world size must match the schedule's (the DataLoader is not rebuilt).
            Lightning counts accumulation from the start of each epoch and zeroes gradients on
            the micro-batches whose index is a multiple of the count, so a new count takes effect
            at the first step boundary where the micro-batches seen in the epoch are a multiple
            of it (at once when the count doubles from an even position; at the latest at the next
            epoch); until then the previous count and learning rate stay.

    Attributes:
        monitor: the :class:`~batchlaw.noise.GradientNoiseMonitor` (after fitting has started).
        examples_seen: examples consumed by the optimizer steps so far, over all ranks.
        choices: the schedule's choices that were applied, as dicts (with a ``step`` key).

    Raises:
        ValueError: a bad argument; an unsupported strategy, precision plugin or manual
            optimization (when fitting starts); a schedule choice the Trainer cannot follow.

    Example:
        >>> cb = NoiseScaleCallback(micro_batch_size=8, window=100)
        >>> cb.unit
        'examples'

    References:
        McCandlish, Kaplan, Amodei et al. 2018, "An Empirical Model of Large-Batch Training",
        arXiv:1812.06162, eq. 2.9 and Appendix A.1.
    """

    def __init__(self, *, micro_batch_size: int | None = None, tokens_per_example: int | None = None,
                 every: int | str = 1, overhead_target: float = 0.01, window: int | None = 200,
                 ema_beta: float = 0.95, prefix: str = "gns/",
                 schedule: Any = None) -> None:
        super().__init__()
        set_monitor_options(self, micro_batch_size=micro_batch_size, tokens_per_example=tokens_per_example,
                            every=every, overhead_target=overhead_target, window=window, ema_beta=ema_beta,
                            prefix=prefix)
        if schedule is not None and not callable(getattr(schedule, "step", None)):
            raise TypeError(
                "The 'schedule' parameter must have a step(examples_seen, monitor) method (a "
                f"batchlaw.schedule batch-size schedule). Got {type(schedule).__name__} instead."
            )
        self.schedule = schedule
        self.monitor: GradientNoiseMonitor | None = None
        self.examples_seen = 0
        self.choices: list[dict] = []
        self._sizes: list[int] = []  # micro-batch sizes (examples) of the current optimizer step
        self._stepped = False  # monitor.step() ran for the current optimizer step
        self._pending = None  # a schedule choice waiting for an aligned step boundary
        self._restored: dict | None = None
        self._world_size = 1

    # ------------------------------------------------------------------ checks
    @staticmethod
    def _check_supported(trainer, pl_module) -> None:
        strategy = type(trainer.strategy).__name__
        if not isinstance(trainer.strategy, _SUPPORTED_STRATEGIES):
            raise ValueError(
                f"NoiseScaleCallback does not support the {strategy} strategy: the micro-batch and "
                "accumulated gradients it reads are not whole there. Supported: a single device and "
                "strategy='ddp' (any start method). For sharded training, measure with "
                "batchlaw.noise.GradientNoiseMonitor in your own loop."
            )
        precision = type(trainer.precision_plugin).__name__
        if type(trainer.precision_plugin) not in _SUPPORTED_PRECISION:
            raise ValueError(
                f"NoiseScaleCallback does not support the {precision} precision plugin. Supported "
                "precision settings: '32-true', '16-true', 'bf16-true', '16-mixed', 'bf16-mixed' "
                "(float64 parameters, '64-true', are not measured: the norms are taken in float32)."
            )
        if not pl_module.automatic_optimization:
            raise ValueError(
                "NoiseScaleCallback supports automatic optimization only. With manual optimization "
                "(automatic_optimization = False) create a batchlaw.noise.GradientNoiseMonitor in "
                "the LightningModule and call monitor.step() after the last manual_backward of a "
                "step, before clipping and optimizer.step()."
            )
        if getattr(trainer.strategy, "handles_gradient_accumulation", False):
            raise ValueError(
                f"NoiseScaleCallback does not support strategies that accumulate gradients themselves ({strategy})."
            )

    # ------------------------------------------------------------------ fit lifecycle
    def on_fit_start(self, trainer, pl_module) -> None:
        self._check_supported(trainer, pl_module)
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if scaler is not None and not hasattr(scaler, "get_scale"):
            raise ValueError(
                f"The precision plugin's scaler ({type(scaler).__name__}) has no get_scale(): not supported."
            )
        self._world_size = int(trainer.world_size)
        if trainer.accumulate_grad_batches < 2 and self._world_size < 2 and self.schedule is None:
            warnings.warn(
                "accumulate_grad_batches=1 on one device gives one batch size per step, so no noise-scale "
                "estimate: set accumulate_grad_batches >= 2 (and divide the DataLoader's batch size by it).",
                stacklevel=2,
            )
        if self.monitor is not None:
            self.monitor.remove()
        # Under DDP the strategy's model is the DistributedDataParallel wrapper: the monitor reads
        # the world size from its process group and averages the micro-batch norms over the ranks.
        model = trainer.strategy.model if isinstance(trainer.strategy, _pl.strategies.DDPStrategy) else pl_module
        self.monitor = GradientNoiseMonitor(
            model, micro_batch_size=self.micro_batch_size, tokens_per_example=self.tokens_per_example,
            scaler=_LightningLossScale(trainer, scaler), loss_divided_by_accumulation=False,
            every=self.every, overhead_target=self.overhead_target, ema_beta=self.ema_beta,
        )
        if self._restored is not None:
            self._load_restored()
        self._sizes, self._stepped, self._pending = [], False, None

    def on_fit_end(self, trainer, pl_module) -> None:
        self._detach()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            self._detach()

    def _detach(self) -> None:
        if self.monitor is not None:
            self.monitor.remove()

    # ------------------------------------------------------------------ per batch
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self.monitor is None:
            return
        if not self._sizes and self.schedule is not None:
            self._schedule_step(trainer)
        b = self.micro_batch_size if self.micro_batch_size is not None else batch_size_of(batch)
        if b is None:
            raise ValueError(
                "NoiseScaleCallback cannot tell the micro-batch size from a training batch of type "
                f"{type(batch).__name__} (no tensor in it): pass NoiseScaleCallback(micro_batch_size=...)."
            )
        self._sizes.append(b)

    def on_after_backward(self, trainer, pl_module) -> None:
        if self.monitor is None or self._stepped:
            return
        if not trainer.fit_loop.epoch_loop._should_accumulate():  # Lightning steps after this micro-batch
            self._step_monitor()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self.monitor is None or self._stepped:
            return
        # The on_after_backward test missed this step (a Lightning version that decides otherwise).
        # Without a loss scaler the gradients are still whole and unclipped here; with one they
        # have been unscaled already and the measurement would be wrong.
        if getattr(trainer.precision_plugin, "scaler", None) is None:
            self._step_monitor()
            return
        raise RuntimeError(
            "NoiseScaleCallback could not find the last backward of this optimizer step before the "
            "loss scale was removed (precision='16-mixed'). Report the Lightning version; meanwhile "
            "use precision='bf16-mixed' or '32-true'."
        )

    def _step_monitor(self) -> None:
        b = step_batch_size(self._sizes)
        self.monitor.step(batch_size=b)
        self.examples_seen += sum(self._sizes) * self._world_size
        self._stepped = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.monitor is None or not self._stepped:
            return
        self._stepped = False
        self._sizes = []
        if trainer.loggers and self._should_log(trainer):
            metrics = noise_metrics(self.monitor.records[-1] if self.monitor.records else None,
                                    window_estimate(self.monitor, window=self.window), prefix=self.prefix)
            metrics = {k: v for k, v in metrics.items() if math.isfinite(v)}
            if metrics:
                pl_module.log_dict(metrics, on_step=True, on_epoch=False, batch_size=1)

    @staticmethod
    def _should_log(trainer) -> bool:
        connector = getattr(trainer, "_logger_connector", None)
        flag = getattr(connector, "should_update_logs", None)
        if isinstance(flag, bool):
            return flag
        return trainer.global_step % max(trainer.log_every_n_steps, 1) == 0 or trainer.should_stop

    # ------------------------------------------------------------------ batch-size schedule
    def _schedule_step(self, trainer) -> None:
        choice = self.schedule.step(int(self.examples_seen), self.monitor)
        b = self.micro_batch_size if self.micro_batch_size is not None else None
        for field in ("micro_batch_size", "accumulation", "world_size", "lr"):
            if not hasattr(choice, field):
                raise TypeError(f"The schedule's step() returned {type(choice).__name__} without '{field}'.")
        if choice.world_size != trainer.world_size:
            raise ValueError(
                f"The schedule lays the batch out over world_size={choice.world_size} ranks but the "
                f"Trainer runs {trainer.world_size}: build the schedule with world_size={trainer.world_size}."
            )
        loader_b = b if b is not None else self._loader_batch_size(trainer)
        if loader_b is not None and choice.micro_batch_size != loader_b:
            raise ValueError(
                f"The schedule chose micro_batch_size={choice.micro_batch_size} but the training DataLoader "
                f"gives {loader_b} per device: the Lightning callback changes the accumulation count only. "
                f"Build the schedule with max_micro_batch={loader_b} and batches of at least "
                f"min_accumulation * {loader_b} * world_size examples."
            )
        self._pending = choice
        self._apply_pending(trainer)

    @staticmethod
    def _loader_batch_size(trainer) -> int | None:
        loader = getattr(trainer, "train_dataloader", None)
        return getattr(loader, "batch_size", None) if loader is not None else None

    def _apply_pending(self, trainer) -> None:
        choice = self._pending
        k = check_positive_int("accumulation", choice.accumulation)
        # micro-batches of this epoch before the current one (Lightning has counted the current one)
        seen_in_epoch = trainer.fit_loop.epoch_loop.batch_progress.current.ready - 1
        if k != trainer.accumulate_grad_batches and seen_in_epoch % k != 0:
            return  # not aligned: Lightning would skip zero_grad or step early (see class docstring)
        trainer.accumulate_grad_batches = k
        if choice.lr is not None:
            if trainer.lr_scheduler_configs:
                raise ValueError(
                    "The batch-size schedule sets the learning rate but the LightningModule also returns "
                    "an LR scheduler from configure_optimizers, which would overwrite it: drop the LR "
                    "scheduler (give the schedule an LRSchedule instead)."
                )
            for optimizer in trainer.optimizers:
                for group in optimizer.param_groups:
                    group["lr"] = float(choice.lr)
                    betas, eps = getattr(choice, "betas", None), getattr(choice, "eps", None)
                    if betas is not None and "betas" in group:
                        group["betas"] = tuple(betas)
                    if eps is not None and "eps" in group:
                        group["eps"] = eps
        as_dict = choice.to_dict() if hasattr(choice, "to_dict") else dict(vars(choice))
        self.choices.append({**as_dict, "applied_at_step": int(trainer.global_step)})
        self._pending = None

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"examples_seen": int(self.examples_seen), "choices": list(self.choices)}
        if self.monitor is not None:
            state["monitor"] = self.monitor.state_dict()
        if self.schedule is not None and hasattr(self.schedule, "state_dict"):
            state["schedule"] = self.schedule.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = dict(state_dict)
        if self.monitor is not None:
            self._load_restored()

    def _load_restored(self) -> None:
        state, self._restored = self._restored, None
        self.examples_seen = int(state.get("examples_seen", 0))
        self.choices = list(state.get("choices", []))
        if "monitor" in state:
            self.monitor.load_state_dict(state["monitor"])
        if "schedule" in state and self.schedule is not None and hasattr(self.schedule, "load_state_dict"):
            self.schedule.load_state_dict(state["schedule"])


class BatchControllerCallback(NoiseScaleCallback):
    """A :class:`~batchlaw.schedule.BatchController` driving the Trainer: the batch grows through
    ``accumulate_grad_batches`` (the DataLoader's micro-batch stays), the learning rate follows the
    controller's rule, and the noise scale is measured as by :class:`NoiseScaleCallback`.

    With ``loss_fn`` the controller may also branch: when fitting starts it is bound to the
    LightningModule (or its DDP wrapper) and the first optimizer, and draws branch examples with
    ``sample_fn`` (default: items of the training DataLoader's map-style dataset, drawn at random
    with the controller's own generator and put together by its ``collate_fn``; the Trainer's data
    stream is never touched). Branch examples are counted in ``controller.branch_examples``,
    apart from :attr:`examples_seen`.

    Build the controller with ``max_micro_batch`` = the DataLoader's batch size and
    ``world_size`` = the number of devices, so that each of its batches is a whole number of
    micro-batches per device. A change of the accumulation count waits for an aligned step
    boundary (see :class:`NoiseScaleCallback`).

    Args:
        controller: the :class:`~batchlaw.schedule.BatchController`.
        loss_fn: ``loss_fn(model, batch) -> 0-d tensor`` for branches (e.g.
            ``lambda m, b: m.loss(b)``, without ``self.log`` calls); ``None``: no branches.
        sample_fn: ``sample_fn(n, generator) -> batch`` on the module's device; default from the
            training DataLoader.
        eval_fn: ``eval_fn(model) -> float`` held-out loss for branches; default: a probe batch.
        **kwargs: :class:`NoiseScaleCallback` options (``micro_batch_size``, ``tokens_per_example``,
            ``window``, ...).

    Example:
        >>> from batchlaw.schedule import BatchController
        >>> cb = BatchControllerCallback(BatchController(16, 0.1, max_batch=128, lr_rule="linear", max_micro_batch=8))
        >>> cb.controller.max_batch
        128
    """

    def __init__(self, controller, *, loss_fn=None, sample_fn=None, eval_fn=None, **kwargs) -> None:
        from ..schedule import BatchController

        if not isinstance(controller, BatchController):
            raise TypeError(f"The 'controller' parameter must be a batchlaw.schedule.BatchController. Got "
                            f"{type(controller).__name__} instead.")
        for name, fn in (("loss_fn", loss_fn), ("sample_fn", sample_fn), ("eval_fn", eval_fn)):
            if fn is not None and not callable(fn):
                raise TypeError(f"The '{name}' parameter must be callable or None. Got {type(fn).__name__}.")
        super().__init__(schedule=controller, **kwargs)
        self.controller = controller
        self.loss_fn, self.sample_fn, self.eval_fn = loss_fn, sample_fn, eval_fn

    def on_fit_start(self, trainer, pl_module) -> None:
        super().on_fit_start(trainer, pl_module)
        if self.loss_fn is None:
            return
        if len(trainer.optimizers) != 1:
            raise ValueError(f"BatchControllerCallback branches one optimizer; the module has {len(trainer.optimizers)}.")
        sample = self.sample_fn
        if sample is None:
            loader = trainer.train_dataloader
            if loader is None:
                trainer.fit_loop.setup_data()
                loader = trainer.train_dataloader
            sample = dataset_sampler(getattr(loader, "dataset", None), getattr(loader, "collate_fn", None),
                                     pl_module.device)
        model = trainer.strategy.model if isinstance(trainer.strategy, _pl.strategies.DDPStrategy) else pl_module
        self.controller.bind(model, trainer.optimizers[0], loss_fn=self.loss_fn, sample_fn=sample, eval_fn=self.eval_fn)

    def _detach(self) -> None:
        super()._detach()
        self.controller.unbind()
