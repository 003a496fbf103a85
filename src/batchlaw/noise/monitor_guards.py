"""The monitor's guards: setups and call orders it refuses by name, steps it flags as impossible.

:class:`MonitorGuards` holds the checks of :class:`~batchlaw.noise.GradientNoiseMonitor`
apart from its hooks and arithmetic; the monitor inherits them. They read the monitor's state
(``scaler``, ``setup``, ``tracker``, the hooked parameters, the ``.grad`` version seen at the
end of the last backward) and never touch gradients or parameters.

* **Call order** (host checks at each ``step()``): ``GradScaler.unscale_``, clipping or
  ``zero_grad`` between the last backward and ``step()``; a last micro-batch inside DDP's
  ``no_sync()``; FSDP2 gradient synchronisation off.
* **Impossible steps** (Cauchy-Schwarz): the big-batch gradient is the weighted mean of the
  micro-batch gradients, so ``|G_big|^2 <= sum_i a_i |g_i|^2 / sum_i a_i`` with equality iff
  every ``g_i`` is the same. Above the bound, ``.grad`` held more than the step's micro-batches
  (a forgotten ``zero_grad``); at it, every micro-batch held the same examples (judged only where
  the spread has 8 or more degrees of freedom: a one-weight model's micro-batches agree by
  chance); micro-batch norms in bit-identical pairs mean ``backward`` ran twice per micro-batch.
* **The model changed under the hooks**: parameters replaced or added after the monitor was made.
* **Parameters it cannot measure** (:func:`refuse_unmeasurable`, at construction): sparse
  embeddings, complex and meta-device parameters.
"""

from __future__ import annotations

import warnings

import torch

from ..errors import InsufficientDataError
from .distributed import UnsupportedSetupError, gradient_sync_on

__all__ = ["MonitorGuards", "refuse_unmeasurable"]

#: Relative tolerance of the Cauchy-Schwarz checks (float32 norms of sums; bf16 gradients).
_EXCESS_TOL = 1e-2
_IDENTICAL_TOL = 1e-5
#: Degrees of freedom of the micro-batch spread (gradient elements x (micro-batches - 1)) below which "identical" is
#: not flagged: fresh micro-batches fall within _IDENTICAL_TOL of each other by chance with probability about
#: _IDENTICAL_TOL^(dof / 2): one step in a few hundred for a one-weight model (a fuzz find), about 1e-20 at 8.
_IDENTICAL_MIN_DOF = 8


class MonitorGuards:
    """The checks :class:`~batchlaw.noise.GradientNoiseMonitor` runs on itself (a mixin: it uses the monitor's
    attributes, documented there)."""

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

    def _check_plausible(self, rec: dict, leftover: float, n: int, bound: float, duplicate: bool) -> None:
        """Flag steps whose norms are impossible for ``n`` fresh micro-batch gradients.

        ``bound`` is the ``a``-weighted mean of the micro-batch squared norms ``|g_i|^2``; the
        big-batch gradient is the ``a``-weighted mean of the ``g_i``, so its squared norm is at
        most ``bound`` (Jensen / Cauchy-Schwarz), with equality iff all ``g_i`` are equal.
        """
        if rec["skipped"] or n < 2:
            return
        big = rec["big_sq"]
        if leftover > 0 or big > bound * (1 + _EXCESS_TOL):
            rec["flag"] = "excess"
            self._warn_once(
                "excess",
                f"At step {rec['step']} .grad held more than this step's micro-batch gradients "
                + ("(it was not empty before the first backward: " if leftover > 0 else "(")
                + "forgotten optimizer.zero_grad(), or a gradient added outside backward). B_simple would be "
                "wrong: zero the gradients after every optimizer step.")
        elif self._gradient_numel * (n - 1) >= _IDENTICAL_MIN_DOF and big >= bound * (1 - _IDENTICAL_TOL):
            rec["flag"] = "identical"
            self._warn_once(
                "identical",
                f"At step {rec['step']} all {n} micro-batch gradients were identical: the same examples were fed "
                "to every micro-batch (or every micro-batch is the whole data set). The noise scale needs different "
                "examples in each micro-batch.")
        elif duplicate:
            rec["flag"] = "duplicate"
            self._warn_once(
                "duplicate",
                f"At step {rec['step']} the micro-batch gradients came in pairs with bit-identical squared norms: "
                "backward ran twice on the same micro-batch. The monitor counts every backward that reaches .grad "
                "as one micro-batch, so B_simple comes out too large. Call backward once per micro-batch (add a "
                "micro-batch's losses before backward).")

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, RuntimeWarning, stacklevel=3)

    def _check_parameters(self) -> None:
        """Warn when the model's parameters are no longer the ones the monitor hooked (one pass
        over the model's parameters: run at estimate() and every ``sync_every`` steps)."""
        self._params_checked_at = self._step
        current = {id(p): p.requires_grad for p in self._model.parameters()}
        # FSDP2 swaps a sharded parameter for its unsharded one around forward and backward.
        pairs = zip(self._big_params, self._params) if self.setup.kind == "fsdp2" and self._params else (
            (p, p) for p in self._big_params)
        gone = sum(id(p) not in current and id(u) not in current for p, u in pairs)
        hooked = self._hooked_ids | {id(p) for p in self._params}
        new = sum(trainable and i not in hooked for i, trainable in current.items())
        if gone:
            self._warn_once(
                "replaced_params",
                f"{gone} of the {len(self._big_params)} parameters the GradientNoiseMonitor hooked are no longer in "
                "the model: they were replaced or reassigned after it was created (module.weight = Parameter(...), a "
                "layer swapped, to_empty()), and their replacements have no hooks, so B_simple is measured on the "
                "other parameters only. Create the monitor once the model is final.")
        elif new:
            self._warn_once(
                "new_params",
                f"The model has {new} trainable parameter(s) that were added after the GradientNoiseMonitor was "
                "created (or unfrozen since); they are not measured. Create the monitor once the model is complete.")

    def _check_records(self) -> None:
        self._check_parameters()
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
        twice = sum(f == "duplicate" for f in flags)
        if flags and twice > len(flags) / 2:
            raise InsufficientDataError(
                f"In {twice} of {len(flags)} measured steps the micro-batch gradients came in pairs with bit-identical "
                "squared norms: backward ran twice on each micro-batch, and each backward that reaches .grad counts "
                "as one micro-batch. Call backward once per micro-batch (add a micro-batch's losses first).")


def refuse_unmeasurable(model: torch.nn.Module) -> None:
    """Refuse, by name, the trainable parameters whose gradients the monitor cannot measure.

    Raises:
        UnsupportedSetupError: a sparse embedding, a complex or a meta-device parameter.

    Examples:
        >>> refuse_unmeasurable(torch.nn.Linear(2, 1))  # dense and real: nothing to refuse
        >>> refuse_unmeasurable(torch.nn.Embedding(10, 4, sparse=True))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        batchlaw.noise.distributed.UnsupportedSetupError: Module '(the model)' is a Embedding with sparse=True: ...
    """
    for name, m in model.named_modules():
        if (isinstance(m, (torch.nn.Embedding, torch.nn.EmbeddingBag)) and m.sparse
                and any(p.requires_grad for p in m.parameters(recurse=False))):
            raise UnsupportedSetupError(
                f"Module {name or '(the model)'!r} is a {type(m).__name__} with sparse=True: its gradients are sparse "
                "tensors, whose norms the monitor does not take. Use sparse=False while measuring.")
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.is_complex():
            raise UnsupportedSetupError(
                f"Parameter {name!r} is complex ({p.dtype}): the monitor measures real parameters only. Store it as a "
                "real tensor (torch.view_as_real) to measure it.")
        if p.is_meta:
            raise UnsupportedSetupError(
                f"Parameter {name!r} is on the meta device (no data yet): create the GradientNoiseMonitor after the "
                "model is materialised (to_empty() and initialisation, or loading its weights), since those replace "
                "the parameters it would hook.")
