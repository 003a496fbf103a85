"""Decide: learning-rate rules as the batch size changes, LR schedules counted in data seen,
and batch-size schedules (fixed ramp, noise-scale ramp, CBS ramp, Seesaw)."""

from .batch import LR_RULES, BatchChoice, BatchSchedule, apply_choice, layout, rescale_lr
from .lr_rules import linear_rule, mccandlish_lr, sqrt_rule, surge_lr
from .lr_schedule import LRSchedule
from .ramps import CBSRamp, ConstantBatch, FixedRamp, NoiseScaleRamp, Seesaw

__all__ = [
    "BatchChoice", "BatchSchedule", "CBSRamp", "ConstantBatch", "FixedRamp", "LRSchedule", "LR_RULES",
    "NoiseScaleRamp", "Seesaw", "apply_choice", "layout", "linear_rule", "mccandlish_lr", "rescale_lr",
    "sqrt_rule", "surge_lr",
]
