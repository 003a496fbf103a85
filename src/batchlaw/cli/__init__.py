"""The ``batchlaw`` command line: ``batchlaw --help`` lists the commands."""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from . import demo, fit, measure, plan, profile, sweep

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchlaw",
        description="Where to set the batch-size dial, from measurements of your own training.",
    )
    parser.add_argument("--version", action="version", version=f"batchlaw {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in (measure, demo, sweep, fit, plan, profile):
        module.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError) as err:  # InsufficientDataError is a ValueError
        print(f"batchlaw: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
