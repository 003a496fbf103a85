"""The ``batchlaw`` command line: ``batchlaw --help`` lists the commands."""

from __future__ import annotations

import argparse
import os
import sys

from .. import __version__
from . import demo, fit, measure, plan, sweep

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchlaw",
        description="Where to set the batch-size dial, from measurements of your own training.",
    )
    parser.add_argument("--version", action="version", version=f"batchlaw {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in (measure, demo, sweep, fit, plan):
        module.add_parsers(sub)
    return parser


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def main(argv: list[str] | None = None) -> int:
    """Run one command; errors are one line on stderr, never a traceback.

    Exit codes: 0 done, 1 an estimate the data cannot support (said in the output), 2 bad
    input (options, files) with a message naming it, 3 an internal error (a bug: set
    ``BATCHLAW_DEBUG=1`` to see the traceback), 130 interrupted.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("batchlaw: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError) as err:  # InsufficientDataError and StoreError are ValueErrors
        print(f"batchlaw: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except OSError as err:
        where = f"{err.filename!r}: " if err.filename else ""
        print(f"batchlaw: error: {where}{_one_line(err.strerror or err)}. Check the path and its permissions.",
              file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - the last line of defence against a traceback
        if os.environ.get("BATCHLAW_DEBUG"):
            raise
        print(f"batchlaw: internal error: {type(err).__name__}: {_one_line(err)} (a bug in batchlaw: rerun with "
              "BATCHLAW_DEBUG=1 for the traceback and report it)", file=sys.stderr)
        return 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
