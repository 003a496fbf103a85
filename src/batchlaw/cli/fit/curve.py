"""``batchlaw fit curve``: learning-curve extrapolation (:mod:`batchlaw.fit.curves`), with a prediction
and a backtest."""

from __future__ import annotations

import json
import math
import warnings

from ._common import _ci_text, _losses_with_divergence


def add_parser(fsub) -> None:
    cu = fsub.add_parser("curve", help="learning-curve extrapolation: L_inf + a t^-b, or schedule-aware with --lr-col",
                         description="Fit L(t) = L_inf + a t^-b (constant-LR runs), or with --lr-col a schedule-aware "
                         "law: Tissue et al. 2024, L = L0 + A S1^-alpha - C S2 (S1: summed learning rate, S2: "
                         "annealing area), or with --law multipower the multi-power law of Luo et al. 2025 (for "
                         "cosine, WSD or any decaying schedule). Predict the loss at a later step with a predictive "
                         "interval (moving-block bootstrap over the curve, so the autocorrelated noise of a smoothed "
                         "loss and the floor's uncertainty are in it), and backtest on the first half of the curve. "
                         "With --lr-col, rows with an empty loss give the planned schedule ahead; with --run-col, "
                         "several runs (e.g. a stable phase and a short cooldown from one of its checkpoints) share "
                         "one schedule-aware law, and a run with only empty losses is a planned run to predict.")
    cu.add_argument("csv", help="CSV file with a header row, one row per logged step")
    cu.add_argument("--step-col", required=True,
                    help="column with the optimizer step, counted from the start of the run (a log may begin later, "
                    "e.g. resumed logging: fine for the power law; the schedule-aware laws sum the learning rate from "
                    "step 1, so with --lr-col the rows must start at step 1 or at the first step of a log kept every "
                    "that many steps)")
    cu.add_argument("--loss-col", required=True, help="column with the (training or validation) loss")
    cu.add_argument("--lr-col", default=None,
                    help="column with the learning rate at each step: fit a schedule-aware law (rows with an empty "
                    "loss extend the schedule to predict ahead)")
    cu.add_argument("--law", dest="curve_law", choices=("power", "tissue", "multipower"), default=None,
                    help="the law: power (default without --lr-col), tissue (default with it) or multipower (needs "
                    "--lr-col)")
    cu.add_argument("--run-col", default=None,
                    help="column naming each row's run: fit several runs with one schedule-aware law (each run's "
                    "schedule must start at step 1, or at its first logging step: give a branch's earlier steps as "
                    "rows with an empty loss; a run that starts later is refused)")
    cu.add_argument("--warmup-steps", type=float, default=None,
                    help="steps of learning-rate warmup: rows before twice this step are left out of the fit, as "
                    "the warmup's transient is not the law's; refused when too few rows remain (default: from "
                    "--lr-col, else 0)")
    cu.add_argument("--predict-at", type=float, default=None, help="step to predict the loss at (a number > 0)")
    cu.add_argument("--predict-run", default=None,
                    help="with --run-col: the run to predict (default: the last run in the file)")
    cu.add_argument("--bootstrap", type=int, default=1000,
                    help="bootstrap resamples (0: point estimates only, no intervals; default: %(default)s)")
    cu.add_argument("--json", action="store_true", help="print JSON (schema batchlaw.fit.curve/2)")
    cu.set_defaults(func=_cmd_fit_curve)


def _cmd_fit_curve(args) -> int:
    from ..._csv import read_columns
    from ...errors import InsufficientDataError
    from ...fit.curves import PROFILED_LAWS, Schedule, backtest_curve, fit_curve, predict_curve

    law = args.curve_law
    if law in ("tissue", "multipower") and not args.lr_col:
        raise ValueError(f"--law {law} takes the learning-rate schedule as input: give --lr-col.")
    if args.run_col and not args.lr_col:
        raise ValueError("--run-col fits several runs with one schedule-aware law: give --lr-col too.")
    if args.run_col and law == "power":
        raise ValueError("--law power fits one run; several runs (--run-col) share a law only through their "
                         "schedules: use --law tissue or multipower.")
    if args.warmup_steps is not None and not (math.isfinite(args.warmup_steps) and args.warmup_steps >= 0):
        raise ValueError(f"--warmup-steps must be a finite number of steps >= 0; got {args.warmup_steps:g}.")
    if args.predict_at is not None and not (math.isfinite(args.predict_at) and args.predict_at > 0):
        raise ValueError(f"--predict-at must be a step: a finite number > 0; got {args.predict_at:g}.")
    if args.bootstrap < 0:
        raise ValueError(f"--bootstrap must be a number of resamples >= 0 (0: no intervals); got {args.bootstrap}.")
    if args.run_col and args.run_col in (args.step_col, args.lr_col, args.loss_col):
        raise ValueError(f"The '--run-col' option names the column {args.run_col!r}, which is also the step, learning-"
                         "rate or loss column: give the column that names each row's run.")
    if args.predict_run is not None and not args.run_col:
        raise ValueError("--predict-run names a run of --run-col; give --run-col.")
    num = [args.step_col] + ([args.lr_col] if args.lr_col else [])
    t = read_columns(args.csv, [*num, args.loss_col] + ([args.run_col] if args.run_col else []), numeric=num)
    loss_all = _losses_with_divergence(t[args.loss_col], args.loss_col, args.csv)
    has = [not math.isnan(v) for v in loss_all]
    if not args.lr_col and not all(has):
        line = has.index(False) + 2
        raise ValueError(f"Column {args.loss_col!r}, line {line} of {args.csv!r}: the loss is empty or not finite. "
                         "Remove the row (rows without a loss are only meaningful with --lr-col, as the planned "
                         "schedule ahead).")
    steps = [s_ for s_, h in zip(t[args.step_col], has) if h]
    loss = [v for v, h in zip(loss_all, has) if h]
    lr = [v for v, h in zip(t[args.lr_col], has) if h] if args.lr_col else None
    kw: dict = {}
    target = None
    if args.run_col:
        labels = [str(v) for v in t[args.run_col]]
        runs = list(dict.fromkeys(labels))
        kw["schedules"] = {
            name: Schedule([s_ for s_, r in zip(t[args.step_col], labels) if r == name],
                           [v for v, r in zip(t[args.lr_col], labels) if r == name]) for name in runs}
        kw["run"] = [r for r, h in zip(labels, has) if h]
        if args.predict_run is not None and args.predict_run not in runs:
            raise ValueError(f"--predict-run {args.predict_run!r} is not a run of column {args.run_col!r}; runs: "
                             f"{', '.join(runs)}.")
        target = args.predict_run if args.predict_run is not None else runs[-1]
    elif args.lr_col:
        kw["schedule"] = Schedule(t[args.step_col], t[args.lr_col])
        kw["lr"] = lr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fit's warnings are in fit.warnings; the backtest's refit repeats them
        fit = fit_curve(steps, loss, law=law, n_boot=args.bootstrap, warmup_steps=args.warmup_steps, **kw)
        names = {"y_inf": "L_inf", "alpha": "b"} if fit.kind == "power" else {}
        out = {"schema": "batchlaw.fit.curve/2", "law": fit.kind,
               **{names.get(k, k): v for k, v in fit.values.items()}, "n_points": fit.n_points,
               "ci": {names.get(k, k): list(v) for k, v in fit.ci.items()},
               "goodness": {"rmse_log": fit.rmse_log, "r2_log": fit.r2_log}, "bootstrap_block": fit.block,
               "warnings": list(fit.warnings)}
        out["runs"] = [str(r) for r in fit.run_names] if args.run_col else []
        if args.predict_at is not None:
            out["prediction"] = predict_curve(fit, args.predict_at, run=target)
        if args.run_col:
            out["backtest"] = {"error": "not run for several runs: compare --predict-at with a run whose final loss "
                                        "you know, or backtest each run alone"}
        else:
            try:
                out["backtest"] = backtest_curve(steps, loss, lr=lr, law=law, n_boot=min(args.bootstrap, 500),
                                                 warmup_steps=args.warmup_steps)
            except InsufficientDataError as err:
                out["backtest"] = {"error": str(err)}
    if args.json:
        print(json.dumps(out, indent=2, default=float))
        return 0
    runs_text = f" ({len(fit.run_names)} runs: {', '.join(map(str, fit.run_names))})" if args.run_col else ""
    if fit.kind == "power":
        print(f"L(t) = L_inf + a t^-b from {fit.n_points} points: L_inf = {_ci_text(fit, 'y_inf')}, "
              f"a = {_ci_text(fit, 'a')}, b = {_ci_text(fit, 'alpha')}")
    elif fit.kind == "tissue":
        print(f"L = L0 + A S1^-alpha - C S2 (Tissue et al. 2024) from {fit.n_points} points{runs_text}: "
              f"L0 = {_ci_text(fit, 'L0')}, A = {_ci_text(fit, 'A')}, alpha = {_ci_text(fit, 'alpha')}, "
              f"C = {_ci_text(fit, 'C')}")
    else:
        print(f"multi-power law (Luo et al. 2025) from {fit.n_points} points{runs_text}: "
              + ", ".join(f"{k} = {_ci_text(fit, k)}" for k in fit.values))
        print(f"  drop shape: {len(fit.profile_thetas)} of 9 fits with beta, gamma pinned on a grid match the points "
              "as well (the spread of their predictions is in the interval)")
    profiled = "; predictions also by their profile likelihood" if fit.kind in PROFILED_LAWS else ""
    if fit.boot:
        print(f"  intervals: moving-block bootstrap over the curve, blocks of {fit.block} points{profiled}")
    else:
        print("  no intervals (--bootstrap 0)")
    for w in fit.warnings:
        print(f"  warning: {w}")
    if "prediction" in out:
        pr = out["prediction"]
        of = f" of run {pr['run']}" if "run" in pr else ""
        lo, hi = pr["interval"]
        iv = "no interval: --bootstrap 0" if lo is None else f"95% predictive interval {lo:.4f} to {hi:.4f}"
        print(f"predicted loss at step {pr['step']:g}{of}: {pr['loss']:.4f} ({iv})")
        if "warning" in pr:
            print(f"  warning: {pr['warning']}")
    bt = out["backtest"]
    if "error" not in bt:
        where = "" if bt["inside"] is None else f"; {'inside' if bt['inside'] else 'outside'} the interval"
        print(f"backtest: fitted on the first {bt['fraction']:.0%} ({bt['fit_points']} points), predicted the final "
              f"loss {bt['final_loss']:.4f} as {bt['predicted']:.4f} ({bt['rel_error']:+.2%}{where})")
    else:
        print(f"backtest: {bt['error']}")
    return 0
