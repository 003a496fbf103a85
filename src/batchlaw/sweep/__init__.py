"""Measure: the critical batch size directly, from sweeps of trials to a target loss."""

from .analysis import SweepAnalysis, analyze_sweep, batch_summary, pooled_b_simple
from .config import SweepConfig
from .runner import LocalExecutor, LRSearch, RayExecutor, make_executor, run_sweep
from .store import CSV_COLUMNS, TrialStore
from .trial import TrialSpec, run_trial

__all__ = [
    "CSV_COLUMNS", "LRSearch", "LocalExecutor", "RayExecutor", "SweepAnalysis", "SweepConfig", "TrialSpec",
    "TrialStore", "analyze_sweep", "batch_summary", "make_executor", "pooled_b_simple", "run_sweep", "run_trial",
]
