"""Argument types shared by the commands."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one value")
    return values


def _key_value(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def check_output_file(option: str, path: str | Path) -> Path:
    """Check, before any work, that ``path`` can be written as a file; returns it.

    Raises:
        ValueError: the path is a directory, its directory does not exist, or it is not writable.
    """
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"The '{option}' path {str(p)!r} is a directory. Pass a file path.")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(f"The directory of the '{option}' path {str(p)!r} does not exist. Create it first.")
    if (p.exists() and not os.access(p, os.W_OK)) or (not p.exists() and not os.access(parent, os.W_OK)):
        raise ValueError(f"The '{option}' path {str(p)!r} is not writable. Choose another path.")
    return p


def check_output_dir(option: str, path: str | Path) -> Path:
    """Check, before any work, that ``path`` is or can be made a writable directory; creates it.

    Raises:
        ValueError: the path is a file, sits below a file, or is not writable.
    """
    p = Path(path)
    existing = p
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"The '{option}' path {str(p)!r} is not a directory ({str(existing)!r} is a file). "
                         "Pass a directory path.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"The '{option}' directory {str(existing)!r} is not writable. Choose another path.")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"The '{option}' directory {str(p)!r} cannot be created: {err.strerror or err}.") from None
    return p
