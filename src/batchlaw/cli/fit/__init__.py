"""``batchlaw fit ...``: laws fitted to any CSV a user brings."""

from __future__ import annotations

from . import cbs, chinchilla, curve, hparams, isoflop, powerlaw


def add_parsers(sub) -> None:
    p = sub.add_parser("fit", help="fit laws to a CSV of your own results",
                       description="Fit a law to any CSV: your own runs, or a paper's table.")
    fsub = p.add_subparsers(dest="law", metavar="LAW")
    fsub.required = True
    for command in (cbs, chinchilla, isoflop, hparams, powerlaw, curve):
        command.add_parser(fsub)
