"""Fit: laws with uncertainty. Pure NumPy/SciPy; importing this package never imports torch."""

from .chinchilla import (
    EPOCH_2024,
    HOFFMANN_2022,
    chinchilla_loss,
    compute_optimal,
    fit_chinchilla,
    inference_optimal,
)
from .isoflop import fit_isoflop
from .varpro import fit_chinchilla_vp
from .engine import Law, LawFit, fit_law
from .laws import fit_power_law, fit_saturating
from .steps import HUBER_DELTA, StepsFit, fit_steps_law, steps_law, zhang_cbs

__all__ = [
    "EPOCH_2024", "HOFFMANN_2022", "HUBER_DELTA", "Law", "LawFit", "StepsFit", "chinchilla_loss", "compute_optimal",
    "fit_chinchilla", "fit_chinchilla_vp", "fit_isoflop", "fit_law", "fit_power_law", "fit_saturating", "fit_steps_law",
    "inference_optimal", "steps_law", "zhang_cbs",
]
