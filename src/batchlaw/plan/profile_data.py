"""Read a hardware profile (``batchlaw.profile/1`` JSON) without torch, and interpolate it.

``batchlaw profile`` writes the file (see :mod:`batchlaw.profile`); the planner reads the step
time of one training micro-batch and the largest micro-batch that fits in memory, and the serving
planner reads the forward latency ``L(b)``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._validation import check_positive_float

__all__ = ["PROFILE_SCHEMA", "HardwareProfile", "load_profile", "LatencyCurve"]

PROFILE_SCHEMA = "batchlaw.profile/1"


class LatencyCurve:
    """``L(b)``: seconds for one batch of ``b``, linear between measured sizes, refused outside.

    Args:
        batches: measured batch sizes (ascending after sorting, at least one).
        seconds: latency at each.

    Examples:
        >>> LatencyCurve([1, 4], [0.01, 0.02])(2)
        0.013333333333333334
    """

    def __init__(self, batches, seconds):
        b = np.asarray(batches, dtype=float)
        s = np.asarray(seconds, dtype=float)
        if b.ndim != 1 or b.size == 0 or b.size != s.size:
            raise ValueError("A latency curve needs one latency per batch size and at least one point.")
        if not (np.all(np.isfinite(b)) and np.all(b >= 1) and np.all(np.isfinite(s)) and np.all(s > 0)):
            raise ValueError("Latency curve: batch sizes must be >= 1 and latencies finite and > 0. "
                             f"Got batches {b.tolist()} and latencies {s.tolist()}.")
        order = np.argsort(b)
        self.batches, self.seconds = b[order], s[order]
        if np.any(np.diff(self.batches) == 0):
            raise ValueError(f"Latency curve: batch sizes repeat: {self.batches.tolist()}.")

    @property
    def max_batch(self) -> int:
        return int(self.batches[-1])

    def __call__(self, b):
        arr = np.asarray(b, dtype=float)
        if np.any(arr > self.batches[-1]) or np.any(arr < 1):
            raise ValueError(f"The batch size {b} is outside the measured latency curve (1 to {self.max_batch}): "
                             "profile larger batches or lower 'max_batch'.")
        if self.batches.size == 1:  # one point: constant service time
            out = np.full_like(arr, self.seconds[0])
        else:
            out = np.interp(arr, self.batches, self.seconds, left=self.seconds[0])
        return float(out) if np.ndim(out) == 0 else out

    def to_dict(self) -> dict:
        return {"batch": self.batches.tolist(), "latency_s": self.seconds.tolist()}


@dataclass(frozen=True)
class HardwareProfile:
    """A profile read back: training step time vs micro-batch, memory ceiling, forward latency.

    Attributes:
        train: rows with ``micro_batch``, ``status`` (``"ok"`` or ``"oom"``), ``step_time_s``,
            ``peak_memory_bytes``.
        forward: rows with ``batch``, ``status``, ``latency_s``.
        parameters: trainable parameters of the profiled model.
        tokens_per_example: tokens per example (sequence) or ``None``.
        device: where it was measured.
        source: the file it came from.
    """

    train: list[dict]
    forward: list[dict]
    parameters: int
    tokens_per_example: int | None
    device: str
    source: str = ""

    @property
    def max_micro_batch(self) -> int | None:
        """Largest micro-batch whose training step fitted in memory."""
        ok = [r["micro_batch"] for r in self.train if r["status"] == "ok"]
        return max(ok) if ok else None

    @property
    def oom_micro_batch(self) -> int | None:
        """Smallest micro-batch that ran out of memory (``None`` if none did)."""
        oom = [r["micro_batch"] for r in self.train if r["status"] == "oom"]
        return min(oom) if oom else None

    def step_time(self, micro_batch: int) -> float:
        """Seconds of one training micro-batch step (forward, backward, optimizer), log-log
        interpolated between measured sizes; refused beyond the largest that fitted."""
        ok = sorted((r["micro_batch"], r["step_time_s"]) for r in self.train if r["status"] == "ok")
        if not ok:
            raise ValueError(f"The profile {self.source!r} has no micro-batch that fitted in memory.")
        b = np.array([o[0] for o in ok], dtype=float)
        t = np.array([o[1] for o in ok], dtype=float)
        if micro_batch > b[-1]:
            raise ValueError(f"Micro-batch {micro_batch} is larger than the largest that fitted in the profile "
                             f"({int(b[-1])}).")
        if micro_batch < b[0]:
            raise ValueError(f"Micro-batch {micro_batch} is below the profiled range (from {int(b[0])}).")
        if b.size == 1:
            return float(t[0])
        return float(np.exp(np.interp(math.log(micro_batch), np.log(b), np.log(t))))

    def forward_latency(self) -> LatencyCurve:
        """The serving latency curve ``L(b)`` from the forward rows."""
        ok = [(r["batch"], r["latency_s"]) for r in self.forward if r["status"] == "ok"]
        if not ok:
            raise ValueError(f"The profile {self.source!r} has no forward-latency measurements: "
                             "run `batchlaw profile` with forward latency on.")
        return LatencyCurve(*zip(*ok))


def load_profile(path: str | Path) -> HardwareProfile:
    """Read a ``batchlaw.profile/1`` JSON file, with one-line errors for anything else.

    Raises:
        ValueError: missing file, not JSON, another schema, or missing fields.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"The profile {str(path)!r} does not exist or is not a file. Write one with `batchlaw profile`.")
    try:
        data = json.loads(p.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"The profile {str(path)!r} is not JSON ({err}).") from None
    if not isinstance(data, dict) or data.get("schema") != PROFILE_SCHEMA:
        got = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"The profile {str(path)!r} must have schema {PROFILE_SCHEMA!r}. Got {got!r} instead.")
    try:
        train = [{"micro_batch": int(r["micro_batch"]), "status": str(r["status"]),
                  "step_time_s": None if r.get("step_time_s") is None else check_positive_float("step_time_s", r["step_time_s"]),
                  "peak_memory_bytes": r.get("peak_memory_bytes")} for r in data.get("train", [])]
        forward = [{"batch": int(r["batch"]), "status": str(r["status"]),
                    "latency_s": None if r.get("latency_s") is None else check_positive_float("latency_s", r["latency_s"])}
                   for r in data.get("forward", [])]
        params = int(data["parameters"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"The profile {str(path)!r} is malformed: {err}.") from None
    return HardwareProfile(train, forward, params, data.get("tokens_per_example"), str(data.get("device", "?")),
                           str(path))
