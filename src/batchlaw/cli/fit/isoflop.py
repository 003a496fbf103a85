"""``batchlaw fit isoflop``: the optimum of each compute budget (Approach 2 of Hoffmann et al. 2022, or
Porian et al. 2024's Akima spline), power laws through the optima, and Approach 3 on the same runs."""

from __future__ import annotations

import json

from ..._format import fmt_num


def add_parser(fsub) -> None:
    iso = fsub.add_parser("isoflop", help="Approach 2 (an optimum per compute budget) beside Approach 3",
                          description="For each compute budget fit a parabola of loss in log N to the runs around the "
                          "profile's lowest loss, or with --method akima minimise an Akima spline through the profile "
                          "under seed noise (Porian et al. 2024); a budget without a minimum inside its profile is "
                          "skipped with a warning. Fit power laws to the optima N_opt(C) and D_opt(C) = C / (6 N_opt). "
                          "The same runs are fitted by Approach 3 (L = E + A/N^alpha + B/D^beta, variable projection) "
                          "and the two compared.")
    iso.add_argument("csv", help="CSV file with a header row, one row per run")
    iso.add_argument("--params-col", required=True, help="column with the model size N (parameters)")
    iso.add_argument("--tokens-col", required=True, help="column with the training tokens D")
    iso.add_argument("--budget-col", required=True, help="column with the compute budget of the run's isoFLOP group")
    iso.add_argument("--loss-col", required=True, help="column with the final loss")
    iso.add_argument("--method", choices=("parabola", "akima"), default="parabola",
                     help="how each budget's optimum is found: a local parabola, or Porian et al. 2024's Akima spline "
                     "with a seed-noise bootstrap and a weighted power-law fit (needs --loss-noise) "
                     "(default: %(default)s)")
    iso.add_argument("--window", type=int, default=None,
                     help="--method parabola: runs on each side of a profile's lowest loss that its parabola uses "
                     "(default: 2)")
    iso.add_argument("--loss-noise", type=float, default=None,
                     help="--method akima: standard deviation of the final loss between seeds, in loss units "
                     "(Porian et al. measured 0.002 on RefinedWeb)")
    iso.add_argument("--no-approach3", action="store_true", help="skip the Approach 3 fit and the comparison")
    iso.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default: %(default)s)")
    iso.add_argument("--json", action="store_true", help="print JSON (schema batchlaw.fit.isoflop/1)")
    iso.set_defaults(func=_cmd_fit_isoflop)


def _cmd_fit_isoflop(args) -> int:
    import sys
    import warnings

    from ..._csv import read_columns
    from ...fit import fit_isoflop

    if args.method == "akima" and args.loss_noise is None:
        raise ValueError("The '--loss-noise' option is required with '--method akima': the standard deviation of the "
                         "final loss between seeds, in loss units (Porian et al. 2024 measured 0.002 on RefinedWeb).")
    for option, value, method in (("--loss-noise", args.loss_noise, "akima"), ("--window", args.window, "parabola")):
        if value is not None and args.method != method:
            raise ValueError(f"The '{option}' option applies to '--method {method}' only. Got {value!r} with "
                             f"'--method {args.method}'.")
    cols = [args.params_col, args.tokens_col, args.budget_col, args.loss_col]
    t = read_columns(args.csv, cols, numeric=cols)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fit_isoflop(t[args.params_col], t[args.tokens_col], t[args.budget_col], t[args.loss_col],
                          method=args.method, window=args.window, loss_noise=args.loss_noise, n_boot=args.bootstrap,
                          approach3=not args.no_approach3)
    for w in caught:
        print(f"batchlaw: warning: {w.message}", file=sys.stderr)
    out = {"schema": "batchlaw.fit.isoflop/1", **out}
    if args.json:
        print(json.dumps(out, indent=2, default=float))
        return 0
    print("Approach 2 (a parabola in log N around each profile's minimum):" if args.method == "parabola" else
          f"Approach 2 (Akima spline per profile, seed noise {args.loss_noise:g} in loss, Porian et al. 2024):")
    print(f"{'budget (FLOPs)':>15} {'N_opt':>10} {'D_opt':>10} {'loss':>8} runs  N_opt 95% CI")
    for o in out["optima"]:
        lo, hi = o["params_ci"]
        print(f"{o['compute']:>15.3g} {fmt_num(o['params']):>10} {fmt_num(o['tokens']):>10} {o['loss']:>8.4f} "
              f"{o['n_runs']:>4}  {fmt_num(lo)} to {fmt_num(hi)}")
    for s in out["skipped"]:
        print(f"{s['compute']:>15.3g} skipped: {s['reason']}")
    for key in ("params", "tokens"):
        law = out[f"{key}_law"]
        ci = law["ci"].get("exp_compute")
        noise = law.get("noise_ci", {}).get("exp_compute")
        print(f"{key}_opt = {law['coef']:.3g} * C^{law['exponent']:.3f}"
              + (f" (exponent 95% CI {ci[0]:.3f} to {ci[1]:.3f}" if ci else "")
              + (f"; seed noise alone, as published: {noise[0]:.3f} to {noise[1]:.3f}" if ci and noise else "")
              + (")" if ci else ""))
    a3 = out.get("approach3")
    if a3 and "error" not in a3:
        ci = a3["ci"]

        def iv(k):
            return f"{a3[k]:.3g}" + (f" ({ci[k][0]:.3g} to {ci[k][1]:.3g})" if k in ci else "")

        print(f"Approach 3 on the same runs (variable projection): E = {iv('E')}, alpha = {iv('alpha')}, "
              f"beta = {iv('beta')}")
        print(f"  N_opt ~ C^{iv('params_exponent')} (Approach 2: {out['params_law']['exponent']:.3f}); "
              "N_opt per budget, Approach 2 / Approach 3: "
              + ", ".join(f"{b['compute']:.3g}: {b['ratio']:.2f}" for b in out["comparison"]["budgets"]))
    elif a3:
        print(f"Approach 3: no fit: {a3['error']}")
    return 0
