"""Argument types shared by the commands."""

from __future__ import annotations

import argparse
import json


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
    """``(ref, kwargs, workload)`` from ``--workload`` / ``--workload-arg``: imports and builds the
    workload, so a bad reference fails here with a one-line error."""
    import os
    import sys

    from ..workloads import resolve_workload, workload_spec

    if os.getcwd() not in sys.path and "" not in sys.path:  # as `python -m` does: modules here are importable
        sys.path.insert(0, os.getcwd())
    ref, kwargs = workload_spec(args.workload, dict(args.workload_arg))
    return ref, kwargs, resolve_workload(ref, kwargs)
