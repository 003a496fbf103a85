"""Fit: laws with uncertainty. Pure NumPy/SciPy; importing this package never imports torch."""

from .steps import HUBER_DELTA, StepsFit, fit_steps_law, steps_law, zhang_cbs

__all__ = ["HUBER_DELTA", "StepsFit", "fit_steps_law", "steps_law", "zhang_cbs"]
