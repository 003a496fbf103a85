"""``batchlaw schedule compare``: batch-size schedules raced to a held-out target loss."""

from __future__ import annotations


def add_parsers(sub) -> None:
    return None
