"""Noise-scale records into the logger you already use: TensorBoard, W&B, CSV, or a function.

A :class:`~batchlaw.noise.GradientNoiseMonitor` keeps one record per measured optimizer step.
:func:`log_to` writes every record it has not written yet, raw squared norms and batch sizes
included (so anyone can recompute ``|G|^2``, ``tr(Sigma)`` and ``B_simple`` from the log with
McCandlish et al. 2018, App. A.1), and the windowed ``B_simple`` with its interval ends at the
latest step::

    writer = SummaryWriter("runs/exp1")
    noise_log = log_to(monitor, writer, "gns.csv")
    for step in range(steps):
        ...                     # K micro-batches, backward
        monitor.step()
        optimizer.step(); optimizer.zero_grad()
        if step % 50 == 0:
            noise_log.log()     # writes the records of the last 50 steps, then the estimate
    noise_log.close()

Metric names (with the default prefix ``"gns/"``). Every batch size and ``B_simple`` in a record
is in one unit, the monitor's (examples, or tokens when it was given ``tokens_per_example``),
which each sink carries beside the numbers (a ``unit`` column in CSV, ``<prefix>unit`` text in
TensorBoard and in a W&B run's config; the Lightning and Hugging Face callbacks' ``unit``
attribute). The monitor's records also hold ``micro_batch_size`` and ``global_batch`` in
examples: they are not logged, being ``b_small`` and ``b_big`` divided by ``tokens_per_example``,
so a log never shows one batch in two units:

========================== ===================================================================
``gns/small_sq``           mean squared norm of the micro-batch gradients of the step
``gns/big_sq``             squared norm of the accumulated gradient of the step
``gns/b_small``            micro-batch size (``b``, in the unit)
``gns/b_big``              batch of the accumulated gradient (``K b``, times the world size
                           with data parallelism; in the unit)
``gns/accumulation``       micro-batches in the step per rank (``K``, a count)
``gns/skipped``            1 when a norm was inf/NaN (AMP overflow), else 0
``gns/g_sq``               per-step unbiased ``|G|^2`` (noisy, may be negative)
``gns/trace_sigma``        per-step unbiased ``tr(Sigma)`` (noisy)
``gns/g_sq_ema``           bias-corrected EMA of ``g_sq``
``gns/trace_sigma_ema``    bias-corrected EMA of ``trace_sigma``
``gns/b_simple_ema``       ``trace_sigma_ema / g_sq_ema``
``gns/b_simple``           ``B_simple`` over the last ``window`` measured steps (ratio of means)
``gns/b_simple_lo``        lower end of its interval (Fieller, ``confidence`` level)
``gns/b_simple_hi``        upper end (absent in TensorBoard/W&B when unbounded; ``inf`` in CSV)
``gns/world_size``         data-parallel ranks (when the monitor records it; a count)
========================== ===================================================================

The three ``b_simple`` estimate keys appear once ``min_steps`` (10) usable steps exist.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..errors import InsufficientDataError

__all__ = [
    "RECORD_KEYS",
    "ESTIMATE_KEYS",
    "noise_metrics",
    "window_estimate",
    "NoiseScaleLogger",
    "TensorBoardSink",
    "WandbSink",
    "CSVSink",
    "FunctionSink",
    "as_sink",
    "log_to",
]

#: Record fields written for every measured step (in this order in a CSV file); batch sizes in the
#: monitor's unit only (its ``micro_batch_size`` and ``global_batch``, in examples, are left out).
RECORD_KEYS = (
    "small_sq", "big_sq", "b_small", "b_big", "accumulation", "world_size", "skipped", "g_sq", "trace_sigma",
    "g_sq_ema", "trace_sigma_ema", "b_simple_ema",
)
#: Fields of the windowed estimate, written at the step it was computed.
ESTIMATE_KEYS = ("b_simple", "b_simple_lo", "b_simple_hi")


def window_estimate(monitor, *, window: int | None = 200, confidence: float = 0.95):
    """``B_simple`` over the last ``window`` measured steps, or ``None`` when too few steps exist.

    Args:
        monitor: a :class:`~batchlaw.noise.GradientNoiseMonitor` (or anything with ``records``
            and ``estimate(start=..., confidence=...)``).
        window: optimizer steps back from the latest record (``None``: the whole run).
        confidence: level of the interval.

    Returns:
        A :class:`~batchlaw.noise.NoiseScaleEstimate`, or ``None`` while
        :class:`~batchlaw.errors.InsufficientDataError` says the data cannot support one yet.
    """
    records = monitor.records
    if not records:
        return None
    start = None if window is None else records[-1]["step"] - window + 1
    try:
        return monitor.estimate(start=start, confidence=confidence)
    except InsufficientDataError:
        return None


def noise_metrics(record: dict | None, estimate=None, *, prefix: str = "gns/") -> dict[str, float]:
    """Flat ``{name: float}`` of one monitor record and (optionally) an estimate.

    Booleans become 0/1; fields a record lacks are left out, and so are fields not in
    :data:`RECORD_KEYS` (the record's batch sizes in examples: every batch size written is in the
    monitor's unit). Values may be NaN/inf (the caller decides what its logger accepts).

    Args:
        record: one entry of ``GradientNoiseMonitor.records`` (or ``None``).
        estimate: a :class:`~batchlaw.noise.NoiseScaleEstimate` or ``None``.
        prefix: put before every name.

    Examples:
        >>> rec = {"step": 3, "small_sq": 5.0, "big_sq": 2.0, "b_small": 2.0, "b_big": 8.0,
        ...        "skipped": False, "g_sq": 1.0}
        >>> noise_metrics(rec)["gns/b_big"], noise_metrics(rec)["gns/skipped"]
        (8.0, 0.0)
        >>> "gns/micro_batch_size" in noise_metrics({**rec, "micro_batch_size": 1})
        False
    """
    out: dict[str, float] = {}
    if record is not None:
        for key in RECORD_KEYS:
            if key in record and record[key] is not None:
                out[prefix + key] = float(record[key])
    if estimate is not None:
        out[prefix + "b_simple"] = float(estimate.b_simple)
        out[prefix + "b_simple_lo"] = float(estimate.ci[0])
        out[prefix + "b_simple_hi"] = float(estimate.ci[1])
    return out


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if math.isfinite(v)}


# ---------------------------------------------------------------------------- sinks
class TensorBoardSink:
    """Scalars into a ``torch.utils.tensorboard.SummaryWriter`` (or anything with ``add_scalar``).

    Non-finite values are left out (an unbounded interval end, a skipped step's estimates).
    The unit is written once as text under ``<prefix>unit``.
    """

    def __init__(self, writer: Any) -> None:
        if not hasattr(writer, "add_scalar"):
            raise TypeError(
                f"TensorBoardSink needs an object with add_scalar (a SummaryWriter). Got {type(writer).__name__}."
            )
        self.writer = writer
        self._unit_written = False

    def write(self, metrics: dict[str, float], step: int, *, unit: str, prefix: str) -> None:
        if not self._unit_written and hasattr(self.writer, "add_text"):
            self.writer.add_text(prefix + "unit", unit, step)
            self._unit_written = True
        for key, value in _finite(metrics).items():
            self.writer.add_scalar(key, value, step)

    def flush(self) -> None:
        if hasattr(self.writer, "flush"):
            self.writer.flush()

    def close(self) -> None:
        self.flush()


class WandbSink:
    """Metrics into a W&B run (``wandb.init(...)``'s return value, or the ``wandb`` module).

    The noise-scale metrics get their own x-axis, ``<prefix>step`` (the monitor's optimizer
    step), through ``define_metric``, so they never disturb the run's own step counter.
    Non-finite values are left out. The unit goes into the run's config as ``<prefix>unit``.
    """

    def __init__(self, run: Any) -> None:
        if not (hasattr(run, "log") and hasattr(run, "define_metric")):
            raise TypeError(f"WandbSink needs a wandb run (wandb.init(...)). Got {type(run).__name__}.")
        self.run = run
        self._defined = False

    def write(self, metrics: dict[str, float], step: int, *, unit: str, prefix: str) -> None:
        if not self._defined:
            self.run.define_metric(prefix + "step")
            self.run.define_metric(prefix + "*", step_metric=prefix + "step")
            config = getattr(self.run, "config", None)
            if config is not None and hasattr(config, "update"):
                config.update({prefix + "unit": unit}, allow_val_change=True)
            self._defined = True
        self.run.log({**_finite(metrics), prefix + "step": step})

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None


class CSVSink:
    """One row per measured step in a CSV file; appends to a file written before by a CSVSink.

    Columns: ``step``, ``unit``, then :data:`RECORD_KEYS` and :data:`ESTIMATE_KEYS` without
    prefix; cells a step has no value for are empty. ``inf`` and ``nan`` are written as such,
    so the file reads back with ``pandas.read_csv`` or :mod:`csv`.

    Raises:
        ValueError: the file exists with a different header.
    """

    COLUMNS = ("step", "unit", *RECORD_KEYS, *ESTIMATE_KEYS)

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if self.path.exists() and self.path.stat().st_size > 0:
            with self.path.open(newline="") as fh:
                header = next(csv.reader(fh), [])
            if tuple(header) != self.COLUMNS:
                raise ValueError(
                    f"The CSV file {str(self.path)!r} exists with other columns ({', '.join(header[:5])}, ...): "
                    "give a new path, or remove the file."
                )
            self._fh = self.path.open("a", newline="")
            self._writer = csv.writer(self._fh)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("w", newline="")
            self._writer = csv.writer(self._fh)
            self._writer.writerow(self.COLUMNS)

    def write(self, metrics: dict[str, float], step: int, *, unit: str, prefix: str) -> None:
        row = [step, unit]
        for key in self.COLUMNS[2:]:
            value = metrics.get(prefix + key)
            row.append("" if value is None else repr(value))
        self._writer.writerow(row)

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


class FunctionSink:
    """Calls ``fn(metrics, step)`` (all values, NaN/inf included) for every record."""

    def __init__(self, fn: Callable[[dict[str, float], int], Any]) -> None:
        if not callable(fn):
            raise TypeError(f"FunctionSink needs a callable fn(metrics, step). Got {type(fn).__name__}.")
        self.fn = fn

    def write(self, metrics: dict[str, float], step: int, *, unit: str, prefix: str) -> None:
        self.fn(dict(metrics), step)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None


_SINK_TYPES = (TensorBoardSink, WandbSink, CSVSink, FunctionSink)


def as_sink(target: Any):
    """The sink for ``target``: a sink object as is; a ``SummaryWriter`` (has ``add_scalar``); a
    W&B run or the ``wandb`` module (has ``log`` and ``define_metric``); a path (``str`` or
    ``os.PathLike``) for a CSV file; or a callable ``fn(metrics, step)``.

    Raises:
        TypeError: none of these.
    """
    if isinstance(target, _SINK_TYPES):
        return target
    if hasattr(target, "add_scalar"):
        return TensorBoardSink(target)
    if hasattr(target, "log") and hasattr(target, "define_metric"):
        return WandbSink(target)
    if isinstance(target, (str, os.PathLike)):
        return CSVSink(target)
    if callable(target):
        return FunctionSink(target)
    raise TypeError(
        "A log target must be a torch.utils.tensorboard.SummaryWriter, a wandb run, a CSV path or a "
        f"callable fn(metrics, step). Got {type(target).__name__} instead."
    )


class NoiseScaleLogger:
    """Writes a monitor's records to one or more sinks; see :func:`log_to`.

    Args:
        monitor: the :class:`~batchlaw.noise.GradientNoiseMonitor` to read.
        sinks: targets accepted by :func:`as_sink`.
        prefix: put before every metric name.
        window: optimizer steps the logged ``b_simple`` estimate covers (``None``: all).
        confidence: level of the logged interval.

    Attributes:
        written: number of records written so far.
    """

    def __init__(self, monitor, sinks: Iterable[Any], *, prefix: str = "gns/", window: int | None = 200,
                 confidence: float = 0.95) -> None:
        if not hasattr(monitor, "records") or not hasattr(monitor, "estimate"):
            raise TypeError(f"The 'monitor' parameter must be a GradientNoiseMonitor. Got {type(monitor).__name__}.")
        self.monitor = monitor
        self.sinks = [as_sink(s) for s in sinks]
        if not self.sinks:
            raise ValueError(
                "log_to needs at least one target (a SummaryWriter, a wandb run, a CSV path or a function)."
            )
        if not isinstance(prefix, str):
            raise TypeError(f"The 'prefix' parameter must be a string. Got {prefix!r} instead.")
        self.prefix = prefix
        if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 3):
            raise ValueError(f"The 'window' parameter must be an integer >= 3 or None. Got {window!r} instead.")
        self.window = window
        self.confidence = confidence
        self.written = 0

    def log(self) -> int:
        """Write the records not written yet, the estimate with the last one; return how many."""
        records = self.monitor.records
        new = records[self.written:]
        if not new:
            return 0
        estimate = window_estimate(self.monitor, window=self.window, confidence=self.confidence)
        unit = self.monitor.unit
        for i, record in enumerate(new):
            metrics = noise_metrics(record, estimate if i == len(new) - 1 else None, prefix=self.prefix)
            for sink in self.sinks:
                sink.write(metrics, int(record["step"]), unit=unit, prefix=self.prefix)
        for sink in self.sinks:
            sink.flush()
        self.written = len(records)
        return len(new)

    def close(self) -> None:
        """Write what is left and close the sinks this logger opened (CSV files)."""
        self.log()
        for sink in self.sinks:
            sink.close()

    def __enter__(self) -> NoiseScaleLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def log_to(monitor, *targets: Any, prefix: str = "gns/", window: int | None = 200,
           confidence: float = 0.95) -> NoiseScaleLogger:
    """A :class:`NoiseScaleLogger` writing ``monitor``'s records to ``targets``.

    Call ``.log()`` as often as you like (every step, or every N steps: each call writes every
    record not yet written, so no step is lost) and ``.close()`` at the end.

    Args:
        monitor: a :class:`~batchlaw.noise.GradientNoiseMonitor`.
        *targets: ``SummaryWriter``, W&B run, CSV path, or ``fn(metrics, step)`` (see :func:`as_sink`).
        prefix: put before every metric name.
        window: optimizer steps the logged ``b_simple`` estimate covers (``None``: the whole run).
        confidence: level of the logged interval.

    Returns:
        The logger.

    Raises:
        TypeError: a target of an unknown kind.

    Examples:
        >>> import torch
        >>> from batchlaw.noise import GradientNoiseMonitor
        >>> model = torch.nn.Linear(4, 1)
        >>> monitor = GradientNoiseMonitor(model, micro_batch_size=8)
        >>> rows = []
        >>> noise_log = log_to(monitor, lambda metrics, step: rows.append((step, metrics["gns/b_big"])))
        >>> for _ in range(2):
        ...     model(torch.randn(8, 4)).pow(2).mean().backward()
        >>> monitor.step()
        >>> noise_log.log()
        1
        >>> rows
        [(0, 16.0)]

    References:
        McCandlish, Kaplan, Amodei et al. 2018, arXiv:1812.06162, Appendix A.1 (the estimators
        that recompute ``|G|^2`` and ``tr(Sigma)`` from ``small_sq``, ``big_sq``, ``b_small``, ``b_big``).
    """
    return NoiseScaleLogger(monitor, targets, prefix=prefix, window=window, confidence=confidence)
