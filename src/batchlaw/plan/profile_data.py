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


__all__ = ["PROFILE_SCHEMA", "HardwareProfile", "load_profile", "check_profile", "LatencyCurve", "ServingOverhead",
           "SERVING_VARIATION_WARN", "serving_variation_note"]

PROFILE_SCHEMA = "batchlaw.profile/1"
#: a server whose throughput at one batch size varied more than this (max/min - 1) between the rounds of
#: ``batchlaw profile serve`` changed capacity while it was measured: a plan from it is said to be doubtful
SERVING_VARIATION_WARN = 0.2


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


def serving_variation_note(serving: dict | None) -> str | None:
    """A warning in words when a profile's serving block measured a capacity that moved (see
    :data:`SERVING_VARIATION_WARN`), else ``None``."""
    v = (serving or {}).get("throughput_variation")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= SERVING_VARIATION_WARN:
        return None
    return (f"the server's throughput varied by {v:.0%} between the rounds of `batchlaw profile serve`: its capacity "
            "changed while it was measured (other work on the machine?), and a plan from it may not hold when "
            "deployed. Measure again on the machine and in the conditions you deploy in, or plan with headroom")


def _draw(percentiles, n: int, seed: int, stream: int = 0) -> np.ndarray:
    """``n`` draws by inverse transform from 101 percentiles (linear between them), seeded."""
    u = np.random.default_rng([seed, stream]).uniform(0.0, 100.0, n)
    return np.interp(u, np.arange(101.0), np.asarray(percentiles))


@dataclass(frozen=True)
class ServingOverhead:
    """What a real server adds to the forward latency ``L(b)`` of a batch (seconds; requests).

    A batch of ``b`` keeps its replica busy ``S(b) = L(b) + batch_s + per_request_s * b`` on average
    (dispatch, and per-request serialisation, proxy and client work on a shared CPU), plus a draw of
    the busy-time jitter (stalls while the CPU serves other work: zero mean, so it adds variance and
    no mean); each request is then delayed by ``fixed_s`` more, which keeps no replica busy, plus a
    draw of the dispatch jitter. A batch that waits for its max queue delay starts ``timer_lateness_s``
    after the delay runs out (a timer's wake-up on a busy CPU is late). Each jitter is an empirical distribution given by its percentiles
    0, 1, ..., 100 (seconds, so they may be negative). ``batchlaw profile serve`` measures all of them
    on a running server.

    Args:
        batch_s: overhead per batch ``o_0`` (s, >= 0).
        per_request_s: overhead per request in a batch ``o_1`` (s, >= 0).
        fixed_s: delay of every request outside the batch ``c`` (s, >= 0).
        jitter_s: 101 ascending percentiles of the delay jitter (s, about its median), or ``None``.
        busy_jitter_s: 101 ascending percentiles of the busy-time jitter per batch (s, about its
            mean), or ``None``.
        timer_lateness_s: how late a batch that waits for a non-zero max queue delay starts (s, >= 0).

    Examples:
        >>> o = ServingOverhead(batch_s=0.001, per_request_s=0.0005, fixed_s=0.002)
        >>> round(o.busy(LatencyCurve([1, 8], [0.01, 0.02]), 8), 6)
        0.025
    """

    batch_s: float = 0.0
    per_request_s: float = 0.0
    fixed_s: float = 0.0
    jitter_s: tuple[float, ...] | None = None
    busy_jitter_s: tuple[float, ...] | None = None
    timer_lateness_s: float = 0.0

    def __post_init__(self):
        for name in ("batch_s", "per_request_s", "fixed_s", "timer_lateness_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"Serving overhead: {name} = {v!r} is not a finite number of seconds >= 0.")
        for name in ("jitter_s", "busy_jitter_s"):
            v = getattr(self, name)
            if v is None:
                continue
            j = np.asarray(v, dtype=float)
            if j.shape != (101,) or not np.all(np.isfinite(j)) or np.any(np.diff(j) < 0):
                raise ValueError(f"Serving overhead: {name} must be 101 ascending finite percentiles 0..100 "
                                 f"(seconds). Got {np.size(j)} value(s).")
            object.__setattr__(self, name, tuple(j.tolist()))

    def busy(self, latency: LatencyCurve, b):
        """``S(b)``: seconds a batch of ``b`` keeps its replica busy (a float, or an array for an array)."""
        out = np.asarray(latency(b), dtype=float) + self.batch_s + self.per_request_s * np.asarray(b, dtype=float)
        return float(out) if np.ndim(out) == 0 else out

    def delays(self, n: int, seed: int = 0) -> np.ndarray | None:
        """Per-request delay outside the batch (``fixed_s`` + a jitter draw) for ``n`` requests, drawn by
        inverse transform from the percentiles with a fixed seed (the same draws for every setting a
        search compares); ``None`` when there is no delay at all."""
        if self.jitter_s is None:
            return None if self.fixed_s == 0 else np.full(n, self.fixed_s)
        return self.fixed_s + _draw(self.jitter_s, n, seed)

    def busy_jitter(self, n: int, seed: int = 0) -> np.ndarray | None:
        """Busy-time jitter of ``n`` batches (s), or ``None`` when there is none (drawn like :meth:`delays`,
        from another stream of the same seed)."""
        return None if self.busy_jitter_s is None else _draw(self.busy_jitter_s, n, seed, stream=1)

    @property
    def min_delay_s(self) -> float:
        """The least delay a request gets outside its batch (s)."""
        return self.fixed_s + (self.jitter_s[0] if self.jitter_s is not None else 0.0)

    def to_dict(self) -> dict:
        return {"batch_s": self.batch_s, "per_request_s": self.per_request_s, "fixed_s": self.fixed_s,
                "jitter_s": None if self.jitter_s is None else list(self.jitter_s),
                "busy_jitter_s": None if self.busy_jitter_s is None else list(self.busy_jitter_s),
                "timer_lateness_s": self.timer_lateness_s}

    @classmethod
    def from_dict(cls, data: dict, source: str = "") -> ServingOverhead:
        """From a profile's ``serving`` block; a one-line ValueError naming the source otherwise."""
        if not isinstance(data, dict):
            raise ValueError(f"The serving overhead in {source!r} is {type(data).__name__}, not an object.")
        try:
            return cls(data.get("batch_s", 0.0), data.get("per_request_s", 0.0), data.get("fixed_s", 0.0),
                       data.get("jitter_s"), data.get("busy_jitter_s"), data.get("timer_lateness_s", 0.0))
        except (TypeError, ValueError) as err:
            raise ValueError(f"The serving overhead in {source!r} is malformed: {err} Measure it again with "
                             "`batchlaw profile serve`.") from None


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
    serving: dict | None = None

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

    def serving_overhead(self) -> ServingOverhead | None:
        """The overhead ``batchlaw profile serve`` measured on a real server, or ``None`` if not measured."""
        return None if self.serving is None else ServingOverhead.from_dict(self.serving, self.source)


def _integer(value, minimum: int = 1) -> int | None:
    """``value`` as an int if it is an integer (an integral float too) >= ``minimum``, else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return int(value) if value == int(value) and value >= minimum else None


def _positive(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _check_rows(rows, key: str, time_key: str, table: str) -> list[dict]:
    """The rows of one table of a profile, each checked; the message names the row and the field."""
    if not isinstance(rows, list):
        raise ValueError(f"'{table}' is {type(rows).__name__}, not a list of rows")
    out, seen = [], set()
    for i, r in enumerate(rows):
        where = f"{table} row {i}"
        if not isinstance(r, dict):
            raise ValueError(f"{where} is {type(r).__name__}, not an object")
        b = _integer(r.get(key))
        if b is None:
            raise ValueError(f"{where}: {key} = {r.get(key)!r} is not an integer >= 1")
        where = f"{table} row {i} ({key} {b})"
        if b in seen:
            raise ValueError(f"{where}: {key} {b} appears twice")
        seen.add(b)
        status = r.get("status")
        if status not in ("ok", "oom"):
            raise ValueError(f"{where}: status = {status!r} is not 'ok' or 'oom'")
        t = r.get(time_key)
        if status == "ok" and not _positive(t):
            raise ValueError(f"{where}: {time_key} = {t!r} is not a finite number > 0")
        if status == "oom" and t is not None:
            raise ValueError(f"{where}: an out-of-memory row has {time_key} = {t!r} (should be null)")
        mem = r.get("peak_memory_bytes")
        if mem is not None and not (_positive(mem) or mem == 0):
            raise ValueError(f"{where}: peak_memory_bytes = {mem!r} is not a finite number >= 0")
        row = {**r, key: b}
        if table == "train" and status == "ok":
            rate = r.get("throughput_per_s")
            if rate is not None and not (_positive(rate) and math.isclose(rate, b / t, rel_tol=1e-6)):
                raise ValueError(f"{where}: throughput_per_s = {rate!r} is not micro_batch / step_time_s = {b / t:.6g}")
            row["throughput_per_s"] = b / t
        out.append(row)
    ok = [r[key] for r in out if r["status"] == "ok"]
    oom = [r[key] for r in out if r["status"] == "oom"]
    if ok and oom and max(ok) > min(oom):
        raise ValueError(f"{table}: {key} {max(ok)} fitted but the smaller {min(oom)} ran out of memory")
    return out


def check_profile(data, source: str) -> dict:
    """A ``batchlaw.profile/1`` dict, checked field by field (a copy, rows with integer sizes and each
    training row's ``throughput_per_s``), or a one-line ValueError naming the file, the row and the field.

    Checked: the schema; ``parameters`` (integer >= 1); ``tokens_per_example`` (``null`` or integer >= 1);
    each ``train`` / ``forward`` row (an integer size >= 1 that appears once, ``status`` "ok" or "oom",
    a finite positive time for "ok" rows and none for "oom" rows, a memory >= 0); no size that fitted
    above one that ran out of memory.
    """
    if not isinstance(data, dict) or data.get("schema") != PROFILE_SCHEMA:
        got = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"The profile {source!r} must have schema {PROFILE_SCHEMA!r}. Got {got!r} instead.")
    try:
        params = _integer(data.get("parameters"))
        if params is None:
            raise ValueError(f"parameters = {data.get('parameters')!r} is not an integer >= 1")
        tpe = data.get("tokens_per_example")
        if tpe is not None and _integer(tpe) is None:
            raise ValueError(f"tokens_per_example = {tpe!r} is not null or an integer >= 1")
        train = _check_rows(data.get("train", []), "micro_batch", "step_time_s", "train")
        forward = _check_rows(data.get("forward", []), "batch", "latency_s", "forward")
    except ValueError as err:
        raise ValueError(f"The profile {source!r} is malformed: {err}. Write it again with `batchlaw profile`.") from None
    return {**data, "parameters": params, "tokens_per_example": None if tpe is None else int(tpe),
            "train": train, "forward": forward}


def load_profile(path: str | Path) -> HardwareProfile:
    """Read a ``batchlaw.profile/1`` JSON file, with one-line errors for anything else.

    Raises:
        ValueError: missing file, not JSON, another schema, or a field out of range (see
            :func:`check_profile`).
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"The profile {str(path)!r} does not exist or is not a file. Write one with `batchlaw profile`.")
    try:
        data = json.loads(p.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"The profile {str(path)!r} is not JSON ({err}).") from None
    data = check_profile(data, str(path))
    serving = data.get("serving")
    if serving is not None:
        ServingOverhead.from_dict(serving, str(path))  # refused at once if malformed
    return HardwareProfile(data["train"], data["forward"], data["parameters"], data["tokens_per_example"],
                           str(data.get("device", "?")), str(path), serving)
