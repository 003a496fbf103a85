"""Exceptions shared by every layer of batchlaw."""

from __future__ import annotations

from typing import Any

__all__ = ["InsufficientDataError", "TrainingDivergedError", "UserCodeError"]


class InsufficientDataError(ValueError):
    """The data cannot support the requested estimate.

    Raised instead of returning a number that would mislead. The best value that could be
    computed anyway is kept in :attr:`provisional` (``None`` when there is none), so a caller
    who knows what they are doing can downgrade the error to a warning::

        try:
            est = monitor.estimate()
        except InsufficientDataError as err:
            est = err.provisional  # use with care

    Modelled on emcee's ``AutocorrError``.
    """

    def __init__(self, message: str, provisional: Any = None) -> None:
        super().__init__(message)
        self.provisional = provisional


class UserCodeError(Exception):
    """An error in the user's own code that batchlaw runs: a workload (its module, constructor or
    hooks) or a model factory.

    Not a bug in batchlaw and not a bad option: the message says what went wrong and
    :attr:`where` points at the user's file and line, the innermost frame of the user's code in
    the traceback (or the definition of the hook that broke the contract). The original
    exception is the ``__cause__``. ``batchlaw`` exits with status 4 on it.

    Attributes:
        where: ``"path/to/file.py:LINE"`` in the user's code, or ``None`` when unknown.
    """

    def __init__(self, message: str, where: str | None = None) -> None:
        super().__init__(message)
        self.where = where

    def __reduce__(self):  # survive pickling across processes (process pools, Ray)
        return (type(self), (str(self), self.where))


class TrainingDivergedError(RuntimeError):
    """A training run that batchlaw drives diverged: its loss became NaN or infinite.

    Nothing measured after that point means anything, so the run stops there instead of
    reporting "no estimate". ``batchlaw measure`` exits with status 1 on it.

    Attributes:
        step: the optimizer step (0-based) whose loss was not finite.
        loss: that loss (``nan``, ``inf`` or ``-inf``).
    """

    def __init__(self, message: str, step: int, loss: float) -> None:
        super().__init__(message)
        self.step = step
        self.loss = loss

    def __reduce__(self):  # survive pickling across processes (measure --nproc)
        return (type(self), (str(self), self.step, self.loss))
