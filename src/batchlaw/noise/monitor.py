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

from collections import defaultdict
from typing import Any

import torch

from .._validation import check_positive_int, check_probability
from .estimators import MIN_STEPS, NoiseScaleEstimate
from .tracker import NoiseScaleTracker

__all__ = ["GradientNoiseMonitor", "squared_norm"]

def squared_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Sum of squared L2 norms of ``tensors`` in float32, with one fused kernel per (device, dtype).

    Returns a 0-d float32 tensor on the device of the first tensor; never synchronises.
    """
    groups: dict[tuple, list[torch.Tensor]] = defaultdict(list)
    for t in tensors:
        groups[(t.device, t.dtype)].append(t)
    out_device = tensors[0].device
    total = None
    for (device, _), group in groups.items():
        norms = torch._foreach_norm(group, 2, dtype=torch.float32)
        part = torch.stack(norms).square().sum()
        if device != out_device:
            part = part.to(out_device, non_blocking=True)
        total = part if total is None else total + part
    return total


class GradientNoiseMonitor:
    """Measures ``B_simple = tr(Sigma) / |G|^2`` during training, without changing it.

    Args:
        model: the module being trained; every parameter with ``requires_grad`` is watched.
        micro_batch_size: examples in one micro-batch (``b``). May instead be passed to every
            :meth:`step` call (for a last, smaller batch).
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

    Raises:
        ValueError: a bad argument, or a model with no trainable parameters.

    Examples:
        >>> import torch
        >>> model = torch.nn.Linear(4, 1)
        >>> monitor = GradientNoiseMonitor(model, micro_batch_size=8)
        >>> for _ in range(2):
        ...     model(torch.randn(8, 4)).pow(2).mean().backward()
        >>> monitor.step()
        >>> monitor.records[-1]["accumulation"]
        2
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
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"The 'model' parameter must be a torch.nn.Module. Got {type(model).__name__}.")
        self._params = [p for p in model.parameters() if p.requires_grad]
        if not self._params:
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
        self.unit = "tokens" if self.tokens_per_example else "examples"

        self._step = 0  # optimizer steps seen
        self._counts = [0] * len(self._params)  # micro-batch gradients seen per parameter
        self._bucket: list[torch.Tensor] = []
        self._bucket_nbytes = 0
        self._small_parts: list[torch.Tensor] = []  # device scalars: sum of |h|^2 per bucket
        self._flush_queued = False
        self._pending: list[tuple[int, int, float, torch.Tensor]] = []  # (step, K, b, [small, big])
        self.tracker = NoiseScaleTracker(self.unit, self.ema_beta)
        self._handles = [p.register_hook(self._make_hook(i)) for i, p in enumerate(self._params)]

    # ------------------------------------------------------------------ hooks
    def _measuring(self) -> bool:
        return self._step % self.every == 0

    def _make_hook(self, index: int):
        def hook(grad: torch.Tensor) -> None:
            if not self._measuring():
                return None
            self._counts[index] += 1
            self._bucket.append(grad)
            self._bucket_nbytes += grad.numel() * grad.element_size()
            if self._bucket_nbytes >= self.bucket_bytes:
                self._flush_bucket()
            elif not self._flush_queued:
                # Norms must be taken before the next backward: autograd may adopt an incoming
                # gradient as .grad and add later micro-batches into it in place.
                torch.autograd.Variable._execution_engine.queue_callback(self._end_of_backward)
                self._flush_queued = True
            return None  # never replace the gradient

        return hook

    def _end_of_backward(self) -> None:
        self._flush_queued = False
        self._flush_bucket()

    def _flush_bucket(self) -> None:
        if self._bucket:
            self._small_parts.append(squared_norm(self._bucket))
            self._bucket = []
            self._bucket_nbytes = 0

    # ------------------------------------------------------------------ step
    def _scale(self) -> torch.Tensor | float:
        if self.scaler is None or not self.scaler.is_enabled():
            return 1.0
        scale = getattr(self.scaler, "_scale", None)  # device tensor: no host sync
        return scale.float().reshape(()) if isinstance(scale, torch.Tensor) else float(self.scaler.get_scale())

    def step(self, batch_size: int | None = None) -> None:
        """Record the current optimizer step. Call after the last ``backward`` of the step and
        before ``scaler.unscale_``, gradient clipping and ``optimizer.step()``.

        Args:
            batch_size: examples per micro-batch for this step (defaults to the constructor's
                ``micro_batch_size``).

        Raises:
            ValueError: no micro-batch size known, or parameters saw different numbers of
                micro-batches in this step (K changed mid-step).
            RuntimeError: no gradient was seen since the last ``step()``.
        """
        self._flush_bucket()
        measuring = self._measuring()
        self._step += 1
        if not measuring:
            return None
        seen = self._counts
        self._counts = [0] * len(self._params)
        counts = [c for c in seen if c > 0]
        small_parts, self._small_parts = self._small_parts, []
        if not counts:
            raise RuntimeError(
                "GradientNoiseMonitor.step() was called but no gradient reached the model since the "
                "last step(): call it after loss.backward() and before optimizer.zero_grad()."
            )
        k = max(counts)
        if min(counts) != k:
            raise ValueError(
                "The number of micro-batches changed mid-step: some parameters received "
                f"{min(counts)} gradients and others {k} since the last step(). Call backward the "
                "same number of times for the whole model between two step() calls (parameters "
                "unused in a micro-batch break this too; freeze them with requires_grad=False)."
            )
        b = batch_size if batch_size is not None else self.micro_batch_size
        if b is None:
            raise ValueError(
                "The micro-batch size is unknown: pass 'micro_batch_size' to GradientNoiseMonitor "
                "or 'batch_size' to step()."
            )
        b = check_positive_int("batch_size", b)
        grads = [p.grad for p, c in zip(self._params, seen) if c > 0 and p.grad is not None]
        big = squared_norm(grads)
        small = torch.stack([s.to(big.device) for s in small_parts]).sum()
        c = self._scale() / (k if self.loss_divided_by_accumulation else 1)
        # Hook gradients are c * g_k (g_k: gradient of micro-batch k's mean loss), .grad = c * sum_k g_k.
        pair = torch.stack([small / k, big / k**2]) / (c * c if isinstance(c, float) else c.square())
        self._pending.append((self._step - 1, k, float(b), pair))
        if len(self._pending) >= self.sync_every:
            self._materialize()
        return None

    def _materialize(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        values = torch.stack([p for *_, p in pending]).detach().cpu().double().numpy()  # (n, 2)
        tpe = self.tokens_per_example or 1
        for (step, k, b, _), (small_sq, big_sq) in zip(pending, values):
            self.tracker.update(step, small_sq=small_sq, big_sq=big_sq, b_small=b * tpe, b_big=b * k * tpe,
                                accumulation=k, micro_batch_size=b)

    # ------------------------------------------------------------------ results
    @property
    def records(self) -> list[dict]:
        """One dict per measured step (host floats; safe to log to TensorBoard, W&B or CSV).

        Keys: ``step``, ``accumulation`` (K), ``micro_batch_size`` (examples), ``b_small`` and
        ``b_big`` (in ``unit``), ``small_sq`` and ``big_sq`` (squared norms), ``skipped``
        (non-finite gradients), the per-step unbiased ``g_sq`` and ``trace_sigma``, their
        bias-corrected EMAs, and ``b_simple_ema``. Reading this synchronises with the device.
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
            InsufficientDataError: too few usable steps, every step had a single micro-batch,
                or a mean ``|G|^2 <= 0``; the error carries the provisional estimate.
        """
        self._materialize()
        return self.tracker.estimate(start=start, stop=stop, confidence=confidence, min_steps=min_steps)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Everything needed to continue the measurement after a checkpoint/resume."""
        self._materialize()
        return {"step": self._step, "tracker": self.tracker.state_dict()}

    def load_state_dict(self, state: dict) -> None:
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
