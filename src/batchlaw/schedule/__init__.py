"""Decide: learning-rate rules as the batch size changes."""

from .lr_rules import linear_rule, mccandlish_lr, sqrt_rule, surge_lr

__all__ = ["linear_rule", "mccandlish_lr", "sqrt_rule", "surge_lr"]
