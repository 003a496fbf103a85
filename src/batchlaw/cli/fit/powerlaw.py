"""``batchlaw fit powerlaw``: y = c * x1^a1 * x2^a2 ... in any columns, with the shared engine."""

from __future__ import annotations

import json


def add_parser(fsub) -> None:
    pw = fsub.add_parser("powerlaw", help="y = c * x1^a1 * x2^a2 ... (e.g. CBS vs tokens and params)",
                         description="Fit a power law in one or more columns with the shared engine (log-space Huber, "
                         "bootstrap intervals over rows). For critical-batch-size laws, give one row per sweep: its "
                         "CBS or B_crit, its training tokens D and model size N (Zhang et al. 2024: CBS grows with D, "
                         "hardly with N).")
    pw.add_argument("csv", help="CSV file with a header row")
    pw.add_argument("--y-col", required=True, help="column of the quantity (e.g. cbs)")
    pw.add_argument("--x-col", action="append", required=True, help="input column (repeat for several)")
    pw.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default: %(default)s)")
    pw.add_argument("--json", action="store_true", help="print JSON")
    pw.set_defaults(func=_cmd_fit_powerlaw)


def _cmd_fit_powerlaw(args) -> int:
    from ..._csv import read_columns
    from ...fit import fit_power_law

    if len(set(args.x_col)) != len(args.x_col) or args.y_col in args.x_col:
        raise ValueError("Each --x-col must be a different column, and none may be the --y-col.")
    t = read_columns(args.csv, [args.y_col, *args.x_col], numeric=[args.y_col, *args.x_col])
    fit = fit_power_law(t[args.y_col], inputs={c: t[c] for c in args.x_col}, y_name=args.y_col, n_boot=args.bootstrap)
    out = {"coef": fit.values["coef"], "exponents": {c: fit.values[f"exp_{c}"] for c in args.x_col},
           "n_points": fit.n_points, "ci": {k: list(v) for k, v in fit.ci.items()},
           "goodness": {"rmse_log": fit.rmse_log, "r2_log": fit.r2_log}}
    if args.json:
        print(json.dumps(out, indent=2, default=float))
        return 0
    terms = " * ".join(f"{c}^{fit.values[f'exp_{c}']:.3f}" for c in args.x_col)
    print(f"{args.y_col} = {fit.values['coef']:.4g} * {terms}  ({fit.n_points} points, R^2 {fit.r2_log:.3f} in logs)")
    for c in args.x_col:
        lo, hi = fit.ci.get(f"exp_{c}", (None, None))
        if lo is not None:
            print(f"  exponent of {c}: 95% CI {lo:.3f} to {hi:.3f}")
    return 0
