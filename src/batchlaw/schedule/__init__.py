"""Decide: learning-rate rules as the batch size changes, LR schedules counted in data seen,
batch-size schedules (fixed ramp, noise-scale ramp, CBS ramp, Seesaw) and the online
:class:`BatchController` that grows the batch when the measured evidence says it pays."""

from .batch import LR_RULES, BatchChoice, BatchSchedule, apply_choice, layout, rescale_lr
from .controller import BatchController
from .lr_rules import linear_rule, mccandlish_lr, sqrt_rule, surge_lr
from .lr_schedule import LRSchedule
from .ramps import CBSRamp, ConstantBatch, FixedRamp, NoiseScaleRamp, Seesaw
from .sequential import PairedSPRT

__all__ = [
    "BatchChoice", "BatchController", "BatchSchedule", "CBSRamp", "ConstantBatch", "FixedRamp", "LRSchedule",
    "LR_RULES", "NoiseScaleRamp", "PairedSPRT", "Seesaw", "apply_choice", "layout", "linear_rule", "mccandlish_lr",
    "rescale_lr", "sqrt_rule", "surge_lr",
]
