"""Exceptions shared by every layer of batchlaw."""

from __future__ import annotations

from typing import Any

__all__ = ["InsufficientDataError"]


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
