"""Argument types, checks and exit statuses shared by the commands."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

#: Exit statuses of every command (documented in docs/reference-cli.md).
EXIT_OK = 0
EXIT_NO_RESULT = 1  # no result could be computed (said in the output)
EXIT_BAD_INPUT = 2  # a bad option, file or value, named in the message
EXIT_INTERNAL = 3  # a bug in batchlaw
EXIT_USER_CODE = 4  # an error in the user's own workload, model or module, with its file and line
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
EXIT_BROKEN_PIPE = 141  # the reader of stdout went away, e.g. `| head` (128 + SIGPIPE, as Unix tools)


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


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r} ({err})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def add_workload_arguments(p: argparse.ArgumentParser, default: str = "bytemlp") -> None:
    """``--workload`` and ``--workload-arg``, for every command that trains."""
    p.add_argument("--workload", default=default,
                   help="built-in workload (linreg, bytemlp, bytegpt, nqm) or your own as package.module:ClassName, "
                   "a batchlaw.workloads.Workload subclass importable from the current directory or PYTHONPATH "
                   "(default: %(default)s)")
    p.add_argument("--workload-arg", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                   help="constructor argument of the workload, e.g. dim=64 or condition=100; values are read as "
                   "JSON when they parse, else as strings (repeatable)")


def workload_from_args(args: argparse.Namespace):
    """``(ref, kwargs, workload)`` from ``--workload`` / ``--workload-arg``, for every command that trains.

    Imports and builds the workload (a ``module:Class`` reference is found in the current
    directory too, as ``python -m`` would), and runs a workload of the user's once on a tiny
    batch (:func:`~batchlaw.workloads.check_workload`), so a bad reference or a broken workload
    fails here, before any work, with a one-line error.
    """
    from ..workloads import WORKLOADS, check_workload, resolve_workload, workload_spec

    if os.getcwd() not in sys.path and "" not in sys.path:  # as `python -m` does: modules here are importable
        sys.path.insert(0, os.getcwd())
    ref, kwargs = workload_spec(args.workload, dict(args.workload_arg))
    workload = resolve_workload(ref, kwargs)
    if ref not in WORKLOADS:
        check_workload(workload)
    return ref, kwargs, workload
