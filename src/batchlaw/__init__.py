"""batchlaw: where to set the batch-size dial, and which learning rate goes with it.

Layers (data flows one way): measure (:mod:`batchlaw.noise`) -> fit -> decide -> show.
Importing :mod:`batchlaw` does not import torch; the torch-based parts load on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import InsufficientDataError

__all__ = ["__version__", "InsufficientDataError", "GradientNoiseMonitor", "split_backward"]


def __getattr__(name: str):
    if name in ("GradientNoiseMonitor", "split_backward"):
        from . import noise

        return getattr(noise, name)
    raise AttributeError(f"module 'batchlaw' has no attribute {name!r}")
