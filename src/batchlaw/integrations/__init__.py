"""Where users train: Lightning and Hugging Face callbacks, and adapters for the loggers they read.

* :mod:`batchlaw.integrations.lightning`: ``NoiseScaleCallback`` for ``lightning.Trainer``
  (``pip install 'batchlaw[lightning]'``).
* :mod:`batchlaw.integrations.hf`: ``NoiseScaleCallback`` for ``transformers.Trainer``
  (``pip install 'batchlaw[hf]'``).
* :mod:`batchlaw.integrations.loggers`: :func:`~batchlaw.integrations.loggers.log_to` for plain
  loops (TensorBoard ``SummaryWriter``, W&B, CSV, a function).

Nothing here is imported by ``import batchlaw``; lightning and transformers are imported only
when their module is.
"""

from __future__ import annotations

__all__ = ["log_to"]


def __getattr__(name: str):
    if name == "log_to":
        from .loggers import log_to

        return log_to
    raise AttributeError(f"module 'batchlaw.integrations' has no attribute {name!r}")
