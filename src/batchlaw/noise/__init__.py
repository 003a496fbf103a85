"""Measure: the gradient noise scale B_simple during training (McCandlish et al. 2018)."""

from .estimators import (
    BiasCorrectedEMA,
    NoiseScaleEstimate,
    estimate_b_simple,
    unbiased_g_sq,
    unbiased_trace_sigma,
    windowed_estimates,
)
from .monitor import GradientNoiseMonitor
from .norms import squared_norm
from .split import split_backward
from .tracker import NoiseScaleTracker

__all__ = [
    "BiasCorrectedEMA",
    "GradientNoiseMonitor",
    "NoiseScaleEstimate",
    "NoiseScaleTracker",
    "estimate_b_simple",
    "split_backward",
    "squared_norm",
    "unbiased_g_sq",
    "unbiased_trace_sigma",
    "windowed_estimates",
]
