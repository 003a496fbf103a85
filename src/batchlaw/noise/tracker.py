"""NoiseScaleTracker: per-step squared norms in, records and a B_simple estimate out. No torch.

The tracker is the state half of the noise-scale measurement; the maths is in
:mod:`batchlaw.noise.estimators`. Whatever produces the two squared norms at the same weights
feeds it the same way: the :class:`~batchlaw.noise.GradientNoiseMonitor` (micro-batch vs
accumulated gradient), a data-parallel communication hook (one rank's gradient vs the
all-reduced one) or sharded gradients (squared norms summed over shards first).
"""

from __future__ import annotations

import math

import numpy as np

from .._validation import check_choice, check_probability
from ..errors import InsufficientDataError
from .estimators import (
    MIN_STEPS,
    BiasCorrectedEMA,
    NoiseScaleEstimate,
    estimate_b_simple,
    unbiased_g_sq,
    unbiased_trace_sigma,
)

__all__ = ["NoiseScaleTracker"]

_STATE_VERSION = 1


class NoiseScaleTracker:
    """Accumulates per-step measurements and estimates ``B_simple`` from them.

    Args:
        unit: unit of the batch sizes passed to :meth:`update`: ``"examples"`` or ``"tokens"``.
        ema_beta: smoothing of the running ``|G|^2`` and ``tr(Sigma)`` in the records.

    Examples:
        >>> tr = NoiseScaleTracker()
        >>> rec = tr.update(0, small_sq=5.0, big_sq=2.0, b_small=2, b_big=8)
        >>> rec["g_sq"], rec["trace_sigma"], rec["b_simple_ema"]
        (1.0, 8.0, 8.0)
    """

    def __init__(self, unit: str = "examples", ema_beta: float = 0.95) -> None:
        self.unit = check_choice("unit", unit, ("examples", "tokens"))
        self.ema_beta = check_probability("ema_beta", ema_beta, open_low=False)
        self.records: list[dict] = []
        self.skipped_steps = 0
        self._ema_g = BiasCorrectedEMA(self.ema_beta)
        self._ema_t = BiasCorrectedEMA(self.ema_beta)

    def update(self, step: int, *, small_sq: float, big_sq: float, b_small: float, b_big: float,
               **extra) -> dict:
        """Add one step: ``small_sq`` is the mean squared norm of gradients over ``b_small``
        examples (or tokens), ``big_sq`` the squared norm over ``b_big`` at the same weights.

        Non-finite norms mark the step skipped (and count it); ``b_big == b_small`` (a single
        micro-batch) is recorded without estimates. ``extra`` keys are stored in the record.

        Returns:
            The record (also appended to :attr:`records`).
        """
        small_sq, big_sq = float(small_sq), float(big_sq)
        rec = {"step": int(step), **extra, "b_small": float(b_small), "b_big": float(b_big),
               "small_sq": small_sq, "big_sq": big_sq}
        finite = math.isfinite(small_sq) and math.isfinite(big_sq)
        rec["skipped"] = not finite
        self.skipped_steps += not finite
        if finite and b_big > b_small:
            g = float(unbiased_g_sq(small_sq, big_sq, b_small, b_big))
            t = float(unbiased_trace_sigma(small_sq, big_sq, b_small, b_big))
            ge, te = self._ema_g.update(g), self._ema_t.update(t)
            rec.update(g_sq=g, trace_sigma=t, g_sq_ema=ge, trace_sigma_ema=te,
                       b_simple_ema=te / ge if ge > 0 else math.inf)
        else:
            rec.update(g_sq=math.nan, trace_sigma=math.nan, g_sq_ema=self._ema_g.value,
                       trace_sigma_ema=self._ema_t.value, b_simple_ema=math.nan)
        self.records.append(rec)
        return rec

    def usable(self, *, start: int | None = None, stop: int | None = None):
        """``(steps, g_sq, trace_sigma)`` arrays of the finite two-batch-size steps in ``[start, stop)``."""
        rows = [
            (r["step"], r["g_sq"], r["trace_sigma"])
            for r in self.records
            if not r["skipped"] and r["b_big"] > r["b_small"]
            and (start is None or r["step"] >= start) and (stop is None or r["step"] < stop)
        ]
        arr = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
        return arr[:, 0].astype(int), arr[:, 1], arr[:, 2]

    def estimate(self, *, start: int | None = None, stop: int | None = None, confidence: float = 0.95,
                 min_steps: int = MIN_STEPS) -> NoiseScaleEstimate:
        """``B_simple`` over the steps in ``[start, stop)``: see :func:`estimate_b_simple`.

        Raises:
            InsufficientDataError: too few usable steps, only single-batch-size steps, or a mean
                ``|G|^2 <= 0``; the error carries the provisional estimate.
        """
        _, g, t = self.usable(start=start, stop=stop)
        if g.size == 0 and any(r["b_big"] == r["b_small"] for r in self.records):
            raise InsufficientDataError(
                "Every measured step had a single micro-batch, which gives one batch size only. "
                "Accumulate K >= 2 micro-batches per step, or backpropagate the batch in chunks "
                "with batchlaw.noise.split_backward."
            )
        return estimate_b_simple(g, t, unit=self.unit, confidence=confidence, min_steps=min_steps)

    def state_dict(self) -> dict:
        return {"version": _STATE_VERSION, "unit": self.unit, "skipped": self.skipped_steps,
                "records": [dict(r) for r in self.records],
                "ema_g": self._ema_g.state_dict(), "ema_t": self._ema_t.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"Unsupported noise-scale state version {state.get('version')!r}.")
        if state["unit"] != self.unit:
            raise ValueError(
                f"The state was measured in {state['unit']}, this tracker measures in {self.unit}: "
                "use the same unit (tokens_per_example) as the run that saved it."
            )
        self.skipped_steps = int(state["skipped"])
        self.records = [dict(r) for r in state["records"]]
        self._ema_g.load_state_dict(state["ema_g"])
        self._ema_t.load_state_dict(state["ema_t"])
