"""The ``batchlaw`` command line: ``batchlaw --help`` lists the commands."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from . import __version__
from ._format import fmt_num

__all__ = ["main", "build_parser"]


def _add_measure_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workload", default="bytemlp", help="built-in workload: linreg or bytemlp (default: %(default)s)")
    p.add_argument("--steps", type=int, default=300, help="optimizer steps (default: %(default)s)")
    p.add_argument("--micro-batch-size", type=int, default=None, help="examples per micro-batch (default: the workload's)")
    p.add_argument("--accumulation", type=int, default=4, help="micro-batches per optimizer step, >= 2 (default: %(default)s)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the workload's)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--every", type=int, default=1, help="measure every n-th step (default: %(default)s)")
    p.add_argument("--windows", type=int, default=6, help="windows in the printed trace (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the result as JSON (schema batchlaw.measure/1)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchlaw",
        description="Where to set the batch-size dial, from measurements of your own training.",
    )
    parser.add_argument("--version", action="version", version=f"batchlaw {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    p = sub.add_parser(
        "measure",
        help="train a built-in workload and measure its gradient noise scale",
        description="Train a built-in workload with gradient accumulation and the GradientNoiseMonitor "
        "attached; print the noise-scale trace (B_simple per window of steps, with 95%% intervals) and the "
        "estimate over the second half of the run.",
    )
    _add_measure_args(p)
    p.set_defaults(func=_cmd_measure)
    d = sub.add_parser(
        "demo",
        help="run the whole story on the default workload",
        description="The whole story on the default workload (bytemlp: a next-byte MLP on Python standard-library "
        "sources): measure the gradient noise scale during training, check the monitor against an analytic answer "
        "(linreg), measure the critical batch size with a sweep, fit S(B) = S_min (1 + B_crit/B), and write a report.",
    )
    d.add_argument("--out", default="batchlaw-out", help="directory for the report and the trial store (default: %(default)s)")
    d.add_argument("--jobs", type=int, default=2, help="parallel trials (default: %(default)s)")
    d.add_argument("--json", action="store_true", help="print the results as JSON")
    d.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    d.set_defaults(func=_cmd_demo)
    _add_sweep_parser(sub)
    _add_fit_parser(sub)
    _add_report_parser(sub)
    _add_plan_parser(sub)
    return parser


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


def _add_sweep_parser(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="measure the critical batch size directly: steps to a target loss over a grid of batch sizes",
        description="For each batch size, search the learning rate (a log grid that widens when the best sits "
        "at an edge) for the fewest steps to the target loss. Trials run in parallel and are stored in a SQLite "
        "file as each finishes; rerunning the same command resumes and never repeats a finished trial.",
    )
    p.add_argument("--workload", default="bytemlp", help="built-in workload: linreg, bytemlp or bytegpt (default: %(default)s)")
    p.add_argument("--workload-arg", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                   help="constructor argument of the workload, e.g. size=small or condition=100 (repeatable)")
    p.add_argument("--batch-sizes", type=_int_list, required=True, help="comma-separated batch sizes in examples")
    p.add_argument("--target-loss", type=float, required=True, help="loss to reach")
    p.add_argument("--target-on", choices=["heldout", "train"], default="heldout",
                   help="held-out loss, or a smoothed training loss (default: %(default)s)")
    p.add_argument("--store", required=True, help="SQLite file for the trials (created or resumed)")
    p.add_argument("--name", default="sweep", help="name of the sweep inside the store (default: %(default)s)")
    p.add_argument("--lr-base", type=float, default=None, help="learning rate at the smallest batch (default: the workload's)")
    p.add_argument("--lr-scaling", type=float, default=None,
                   help="exponent that moves the starting learning rate with the batch (default: the workload's: 1 SGD, 0.5 Adam)")
    p.add_argument("--lr-factor", type=float, default=2.0, help="spacing of the learning-rate grid (default: %(default)s)")
    p.add_argument("--lr-points", type=int, default=3, help="initial learning rates per batch size (default: %(default)s)")
    p.add_argument("--max-extensions", type=int, default=3, help="times a grid may widen (default: %(default)s)")
    p.add_argument("--max-steps", type=int, default=2000, help="budget per trial in steps (default: %(default)s)")
    p.add_argument("--eval-every", type=int, default=10, help="evaluation period in steps (default: %(default)s)")
    p.add_argument("--seeds", type=_int_list, default=(0,), help="comma-separated seeds (default: 0)")
    p.add_argument("--executor", choices=["local", "ray"], default="local", help="local process pool or Ray (default: %(default)s)")
    p.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local Ray instance)")
    p.add_argument("--jobs", type=int, default=2, help="parallel trials (local processes or local Ray CPUs) (default: %(default)s)")
    p.add_argument("--csv", default=None, help="also export the sweep's trials to this CSV file")
    p.add_argument("--json", action="store_true", help="print the analysis as JSON (schema batchlaw.sweep/1)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_cmd_sweep)


def _add_fit_parser(sub) -> None:
    p = sub.add_parser("fit", help="fit laws to a CSV of your own results",
                       description="Fit a law to any CSV: your own runs, or a paper's table.")
    fsub = p.add_subparsers(dest="law", metavar="LAW")
    fsub.required = True
    c = fsub.add_parser(
        "cbs", help="S(B) = S_min (1 + B_crit/B) from steps to target",
        description="Fit S(B) = S_min (1 + B_crit/B) (McCandlish et al. 2018) to steps-to-target per batch size, "
        "with bootstrap intervals, and the 20%%-over-linear critical batch size of Zhang et al. 2024.",
    )
    c.add_argument("csv", help="CSV file with a header row")
    c.add_argument("--batch-col", required=True, help="column with the batch size")
    c.add_argument("--steps-col", required=True, help="column with the steps to target")
    c.add_argument("--group-col", default=None, help="fit each value of this column separately")
    c.add_argument("--reference-batch", type=float, default=None, help="B0 for the CBS (default: the smallest batch)")
    c.add_argument("--unit", choices=["examples", "tokens", "sequences"], default="examples",
                   help="unit of the batch column (default: %(default)s)")
    c.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default: %(default)s)")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(func=_cmd_fit_cbs)

    ch = fsub.add_parser("chinchilla", help="L(N, D) = E + A/N^alpha + B/D^beta (Approach 3), allocation",
                         description="Fit L(N, D) = E + A/N^alpha + B/D^beta as the Epoch AI replication did (Huber "
                         "1e-3 on log loss, L-BFGS from a grid of starts), with bootstrap intervals over runs.")
    ch.add_argument("csv")
    ch.add_argument("--params-col", required=True, help="column with the model size N (parameters)")
    tok = ch.add_mutually_exclusive_group(required=True)
    tok.add_argument("--tokens-col", help="column with the training tokens D")
    tok.add_argument("--compute-col", help="column with the compute C in FLOPs (D = C / (6 N))")
    ch.add_argument("--loss-col", required=True, help="column with the final loss")
    ch.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default: %(default)s)")
    ch.add_argument("--compute", type=float, default=None, help="FLOP budget for the compute-optimal allocation")
    ch.add_argument("--inference-tokens", type=float, default=None, help="expected inference tokens (Sardana et al.)")
    ch.add_argument("--json", action="store_true")
    ch.set_defaults(func=_cmd_fit_chinchilla)

    iso = fsub.add_parser("isoflop", help="Approach 2: parabolas per compute budget, N_opt(C) and D_opt(C)",
                          description="For each compute budget fit a parabola of loss in log N; fit power laws to "
                          "the optima N_opt(C) and D_opt(C) = C / (6 N_opt).")
    iso.add_argument("csv")
    iso.add_argument("--params-col", required=True)
    iso.add_argument("--tokens-col", required=True)
    iso.add_argument("--budget-col", required=True, help="column with the compute budget of the run's isoFLOP group")
    iso.add_argument("--loss-col", required=True)
    iso.add_argument("--bootstrap", type=int, default=1000)
    iso.add_argument("--json", action="store_true")
    iso.set_defaults(func=_cmd_fit_isoflop)

    hp = fsub.add_parser("hparams", help="optimal LR and batch per (N, D), and their power laws",
                         description="From LR x batch grids over several (N, D): the optimum per group (raw argmin "
                         "and a smoothed quadratic vertex), then lr_opt = c N^a D^b and B_opt = c D^b (and vs C = 6 N D).")
    hp.add_argument("csv")
    for col in ("lr", "batch", "loss", "params", "tokens"):
        hp.add_argument(f"--{col}-col", required=True)
    hp.add_argument("--seq-len", type=int, default=None, help="tokens per sequence: batch column in sequences, laws in tokens")
    hp.add_argument("--bootstrap", type=int, default=1000)
    hp.add_argument("--json", action="store_true")
    hp.set_defaults(func=_cmd_fit_hparams)

    cu = fsub.add_parser("curve", help="learning-curve extrapolation L(t) = L_inf + a t^-b",
                         description="Fit L(t) = L_inf + a t^-b (constant-LR or WSD runs), predict the loss at a "
                         "later step with a predictive interval, and backtest on the first half of the curve.")
    cu.add_argument("csv")
    cu.add_argument("--step-col", required=True)
    cu.add_argument("--loss-col", required=True)
    cu.add_argument("--predict-at", type=float, default=None, help="step to predict the loss at")
    cu.add_argument("--bootstrap", type=int, default=1000)
    cu.add_argument("--json", action="store_true")
    cu.set_defaults(func=_cmd_fit_curve)


def _add_plan_parser(sub) -> None:
    p = sub.add_parser(
        "plan", help="what a run takes on more GPUs, and at what cost",
        description="For each GPU count: global batch, steps to the target through S(B) = S_min (1 + B_crit/B), "
        "wall-clock, GPU-hours, cost and efficiency against perfect scaling; a flag where the batch passes B_crit; "
        "a recommendation. Batch sizes in sequences.",
    )
    p.add_argument("--gpus", type=_int_list, required=True, help="GPU counts to compare, e.g. 8,16,32,64")
    p.add_argument("--micro-batch", type=int, required=True, help="sequences per GPU per micro-batch")
    p.add_argument("--accumulation", type=int, default=1, help="micro-batches per step (default: %(default)s)")
    p.add_argument("--seq-len", type=int, default=2048, help="tokens per sequence (default: %(default)s)")
    crit = p.add_mutually_exclusive_group(required=True)
    crit.add_argument("--b-crit", type=float, help="critical batch size (or B_noise) in sequences")
    crit.add_argument("--b-crit-tokens", type=float, help="critical batch size in tokens")
    crit.add_argument("--b-crit-store", help="a sweep store: use its fitted B_crit (examples = sequences)")
    crit.add_argument("--b-crit-law", help="COEF:EXP: B_crit = COEF * D^EXP tokens (D = --tokens)")
    p.add_argument("--tokens", type=float, default=None, help="training tokens needed at the reference batch")
    p.add_argument("--params", type=float, default=None, help="model parameters (for FLOP-based throughput and all-reduce bytes)")
    p.add_argument("--compute", type=float, default=None, help="FLOP budget: tokens and params from the Chinchilla allocation")
    p.add_argument("--inference-tokens", type=float, default=None, help="with --compute: inference-aware allocation")
    p.add_argument("--reference-batch", type=float, default=None, help="global batch at which --tokens holds (default: the smallest)")
    p.add_argument("--tokens-per-sec", type=float, default=None, help="training throughput per GPU, tokens/s")
    p.add_argument("--peak-flops", type=float, default=None, help="peak FLOP/s per GPU (with --mfu and --params)")
    p.add_argument("--mfu", type=float, default=0.4, help="model FLOP utilisation (default: %(default)s)")
    p.add_argument("--comm-overhead", type=float, default=0.0, help="communication as a fraction of compute time")
    p.add_argument("--bandwidth", type=float, default=None, help="all-reduce bus bandwidth per GPU, bytes/s (with --params)")
    p.add_argument("--grad-bytes-per-param", type=float, default=4.0, help="bytes per gradient element (default: %(default)s)")
    p.add_argument("--price", type=float, default=None, help="price per GPU-hour")
    p.add_argument("--min-efficiency", type=float, default=0.7, help="recommendation threshold (default: %(default)s)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_plan)


def _add_report_parser(sub) -> None:
    p = sub.add_parser(
        "report", help="HTML report with plots from a sweep store",
        description="Write a self-contained HTML report (with PNG plots) and trials.csv for every sweep in a "
        "store, and print a summary table.",
    )
    p.add_argument("store", help="SQLite file written by 'batchlaw sweep'")
    p.add_argument("--out", required=True, help="directory for report.html, the PNGs and trials.csv")
    p.add_argument("--reference-batch", type=float, default=None, help="B0 for the CBS (default: the smallest batch)")
    p.add_argument("--json", action="store_true", help="print the analyses as JSON")
    p.set_defaults(func=_cmd_report)


def _run_measure(args, workload_name: str | None = None, **overrides):
    from .measure import measure_noise
    from .workloads import get_workload

    workload = get_workload(workload_name or args.workload)
    params = dict(steps=args.steps, micro_batch_size=args.micro_batch_size, accumulation=args.accumulation,
                  lr=args.lr, seed=args.seed, every=args.every, windows=args.windows)
    params.update(overrides)
    return workload, measure_noise(workload, progress=not args.no_progress, **params)


def _print_measure(result) -> None:
    unit = result.config["unit"]
    w = result.workload
    cfg = result.config
    print(f"workload {w['name']}: {cfg['steps']} steps, {cfg['accumulation']} x {cfg['micro_batch_size']} "
          f"examples per step, lr {cfg['lr']:g}, {result.wall_time_s:.1f} s")
    print(f"held-out loss {result.eval_losses[0][1]:.4f} -> {result.eval_losses[-1][1]:.4f}")
    print(f"\nnoise-scale trace (B_simple in {unit}, 95% Fieller interval per window)")
    print(f"{'steps':>13}  {'B_simple':>10}  {'interval':>21}  note")
    for row in result.trace:
        lo, hi = row["ci"]
        interval = "-" if row["b_simple"] is None else f"{fmt_num(lo)} to {fmt_num(hi if hi is not None else math.inf)}"
        note = row["note"] + (f" (provisional {fmt_num(row['provisional'])})" if row.get("provisional") else "")
        print(f"{row['step_start']:>6}-{row['step_end']:<6}  {fmt_num(row['b_simple']):>10}  {interval:>21}  {note}")
    if result.skipped_steps:
        print(f"skipped {result.skipped_steps} step(s) with non-finite gradients")
    print()
    if result.estimate is not None:
        s, e = cfg["estimate_window"]
        print(f"steps {s}-{e}: {result.estimate}")
    else:
        print(f"no estimate: {result.note}")


def _cmd_measure(args) -> int:
    _, result = _run_measure(args)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        _print_measure(result)
    return 0


def _cmd_demo(args) -> int:
    from .report import headline, write_report
    from .sweep import LocalExecutor, SweepConfig, TrialStore, analyze_sweep, run_sweep

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress
    say = (lambda *a, **k: None) if args.json else print
    ns = argparse.Namespace(steps=600, micro_batch_size=None, accumulation=4, lr=None, seed=0, every=1,
                            windows=6, no_progress=args.no_progress)
    say("== 1. Gradient noise scale during training: next-byte MLP on Python standard-library sources ==")
    _, measured = _run_measure(ns, "bytemlp")
    if not args.json:
        _print_measure(measured)
    say("\n== 2. Known-answer check: linear regression at fixed weights, analytic B_simple ==")
    # A learning rate of 1e-12 keeps the weights where they started (to float precision).
    lin, check = _run_measure(ns, "linreg", lr=1e-12, steps=400, windows=4)
    analytic = lin.b_simple(lin.make_model(0))
    est = check.estimate
    inside = est is not None and est.ci[0] <= analytic <= est.ci[1]
    say(f"analytic B_simple = {analytic:.3g} examples; measured {est}")
    say(f"analytic value inside the interval: {'yes' if inside else 'NO'}; error {100 * (est.b_simple / analytic - 1):+.1f}%")

    say("\n== 3. The critical batch size, measured directly: steps to held-out loss 2.4 per batch size ==")
    config = SweepConfig(workload="bytemlp", name="demo-bytemlp", batch_sizes=(8, 16, 32, 64, 128, 256, 512, 1024),
                         target_loss=2.4, max_steps=4000, lr_base=2e-3, eval_every=20, seeds=(0, 1),
                         lr_scaling=0.5, lr_factor=2.0, lr_points=3, max_extensions=2)
    store_path = out_dir / "demo.db"
    executor = LocalExecutor(args.jobs)
    with TrialStore(store_path) as store:
        before = store.count(config.name)
        try:
            results = run_sweep(config, store, executor, progress=progress)
        finally:
            executor.close()
        store.export_csv(out_dir / "trials.csv", config.name)
    analysis = analyze_sweep(config.name, config.to_dict(), results)
    if before:
        say(f"(resumed: {before} trials were already stored in {store_path})")
    if not args.json:
        _print_analysis(analysis)
    html = write_report([analysis], out_dir)
    if args.json:
        print(json.dumps({"schema": "batchlaw.demo/2", "measure": measured.to_dict(),
                          "check": {"workload": "linreg", "analytic_b_simple": analytic,
                                    "estimate": est.to_dict() if est else None},
                          "sweep": analysis.to_dict(), "report": str(html)}, indent=2, default=float))
        return 0
    print("\n== What it means ==")
    print(headline(analysis))
    print(f"\nreport: {html}\ntrials: {store_path} (rerun to resume), {out_dir / 'trials.csv'}")
    return 0

def _print_analysis(a) -> None:
    unit = "examples"
    print(f"sweep {a.name!r}: {len(a.trials)} trials, workload {a.config['workload']}, target loss "
          f"{a.config['target_loss']:g} ({a.config['target_on']})")
    print(f"{'batch':>8} {'steps to target':>16} {'examples':>12} {'best lr':>10}  lrs tried")
    for p in a.points:
        steps = p["steps_to_target"]
        ex = None if steps is None else steps * p["batch_size"]
        edge = f" (best at the {p['lr_at_edge']} edge)" if p["lr_at_edge"] else ""
        lr = "-" if p["best_lr"] is None else f"{p['best_lr']:.3g}"
        print(f"{p['batch_size']:>8} {fmt_num(steps):>16} {fmt_num(ex):>12} {lr:>10}  {len(p['lrs_tried'])}"
              f"{'' if steps is not None else ' none reached the target'}{edge}")
    if a.fit is not None:
        print(f"\n{a.fit}")
    else:
        print(f"\nno fit: {a.fit_error}")
    if a.b_simple is not None:
        lo, hi = a.b_simple["ci"]
        print(f"run-averaged B_simple (noise scale, best trials) = {fmt_num(a.b_simple['b_simple'])} {unit} "
              f"(95% CI {fmt_num(lo)} to {fmt_num(hi if hi is not None else math.inf)}; {a.b_simple['n_trials']} trials)")
        if a.fit is not None:
            print(f"ratio B_crit / B_simple = {a.fit.b_crit / a.b_simple['b_simple']:.2f}")
    if a.tokens_per_example and a.fit is not None:
        t = a.tokens_per_example
        print(f"in tokens ({t} per example): B_crit = {fmt_num(a.fit.b_crit * t)}, CBS = {fmt_num(a.fit.cbs * t)}")


def _workload_defaults(name: str, kwargs: dict):
    from .workloads import get_workload

    return get_workload(name, **kwargs)


def _cmd_sweep(args) -> int:
    from .sweep import SweepConfig, TrialStore, analyze_sweep, make_executor, run_sweep

    kwargs = dict(args.workload_arg)
    wl = _workload_defaults(args.workload, kwargs)
    config = SweepConfig(
        workload=args.workload, batch_sizes=tuple(sorted(set(args.batch_sizes))), target_loss=args.target_loss,
        max_steps=args.max_steps, lr_base=args.lr_base if args.lr_base is not None else wl.default_lr,
        name=args.name, workload_kwargs=kwargs, target_on=args.target_on, eval_every=args.eval_every,
        seeds=tuple(args.seeds), lr_scaling=args.lr_scaling if args.lr_scaling is not None else wl.lr_scaling,
        lr_factor=args.lr_factor, lr_points=args.lr_points, max_extensions=args.max_extensions,
    )
    executor = make_executor(args.executor, args.jobs, args.ray_address)
    with TrialStore(args.store) as store:
        try:
            results = run_sweep(config, store, executor, progress=not args.no_progress)
        except KeyboardInterrupt:
            print(f"\ninterrupted: {store.count(config.name)} finished trials are stored in {args.store}; "
                  "run the same command again to resume.", file=sys.stderr)
            return 130
        finally:
            executor.close()
        if args.csv:
            store.export_csv(args.csv, config.name)
    analysis = analyze_sweep(config.name, config.to_dict(), results)
    if args.json:
        print(json.dumps({"schema": "batchlaw.sweep/1", **analysis.to_dict()}, indent=2, default=float))
    else:
        _print_analysis(analysis)
    return 0


def _cmd_fit_cbs(args) -> int:
    from ._csv import read_columns
    from .errors import InsufficientDataError
    from .fit import fit_steps_law

    cols = [args.batch_col, args.steps_col] + ([args.group_col] if args.group_col else [])
    table = read_columns(args.csv, cols, numeric=[args.batch_col, args.steps_col])
    groups: dict[str, tuple[list, list]] = {}
    for i in range(len(table[args.batch_col])):
        g = table[args.group_col][i] if args.group_col else "all"
        groups.setdefault(g, ([], []))
        groups[g][0].append(table[args.batch_col][i])
        groups[g][1].append(table[args.steps_col][i])
    out, failed = [], 0
    for g, (b, s) in groups.items():
        try:
            fit = fit_steps_law(b, s, reference_batch=args.reference_batch, unit=args.unit, n_boot=args.bootstrap)
        except InsufficientDataError as err:
            failed += 1
            out.append({"group": g, "n_points": len(b), "error": str(err)})
            continue
        out.append({"group": g, "n_points": fit.n_points, "s_min": fit.s_min, "s_min_ci": list(fit.s_min_ci),
                    "e_min": fit.e_min, "e_min_ci": list(fit.e_min_ci), "b_crit": fit.b_crit,
                    "b_crit_ci": list(fit.b_crit_ci), "cbs": fit.cbs, "cbs_ci": list(fit.cbs_ci),
                    "reference_batch": fit.reference_batch, "unit": fit.unit, "_fit": fit})
    if args.json:
        print(json.dumps({"groups": [{k: v for k, v in o.items() if k != "_fit"} for o in out]}, indent=2))
    else:
        for o in out:
            head = f"[{o['group']}] " if args.group_col else ""
            print(f"{head}{o['n_points']} points: " + (str(o["_fit"]) if "_fit" in o else f"no fit: {o['error']}"))
    return 1 if failed == len(out) else 0


def _ci_text(fit, key) -> str:
    lo, hi = fit.ci.get(key, (None, None))
    return f"{fmt_num(fit.values[key])} ({fmt_num(lo)} to {fmt_num(hi)})"


def _cmd_fit_chinchilla(args) -> int:
    from ._csv import read_columns
    from .fit import compute_optimal, fit_chinchilla, inference_optimal

    tok_col = args.tokens_col or args.compute_col
    t = read_columns(args.csv, [args.params_col, tok_col, args.loss_col], numeric=[args.params_col, tok_col, args.loss_col])
    n = t[args.params_col]
    d = t[tok_col] if args.tokens_col else [c / (6 * x) for c, x in zip(t[tok_col], n)]
    fit = fit_chinchilla(n, d, t[args.loss_col], n_boot=args.bootstrap)
    out = {k: fit.values[k] for k in ("E", "A", "B", "alpha", "beta")}
    out.update(n_points=fit.n_points, ci={k: list(v) for k, v in fit.ci.items()},
               goodness={"rmse_log": fit.rmse_log, "r2_log": fit.r2_log}, extrapolation=fit.extrapolation)
    if args.compute:
        alloc = compute_optimal(args.compute, fit.values)
        out["allocation"] = {k: alloc[k] for k in ("compute", "params", "tokens", "tokens_per_param")}
        out["allocation"]["loss"] = alloc["loss"]
        if fit.boot:
            import numpy as np

            boot = [compute_optimal(args.compute, {k: float(v[i]) for k, v in fit.boot.items()})
                    for i in range(len(fit.boot["E"]))]
            a = (1 - fit.confidence) / 2
            out["allocation"]["ci"] = {k: [float(np.quantile([b[k] for b in boot], a)),
                                           float(np.quantile([b[k] for b in boot], 1 - a))]
                                       for k in ("params", "tokens", "tokens_per_param")}
        if args.inference_tokens is not None:
            out["inference_aware"] = inference_optimal(args.compute, args.inference_tokens, fit.values)
    if args.json:
        print(json.dumps(out, indent=2, default=float))
        return 0
    print(f"L(N, D) = E + A/N^alpha + B/D^beta from {fit.n_points} runs (95% bootstrap intervals, {fit.n_boot} resamples):")
    for k in ("E", "A", "B", "alpha", "beta"):
        print(f"  {k:>5} = {_ci_text(fit, k)}")
    print(f"  fit: RMSE {fit.rmse_log:.4f} in log loss, R^2 {fit.r2_log:.4f}")
    if fit.extrapolation:
        e = fit.extrapolation
        print(f"  extrapolation check: refit without the {e['held_out_points']} largest-compute runs predicts them "
              f"with median error {e['median_abs_rel_error']:.2%} (max {e['max_abs_rel_error']:.2%})")
    if "allocation" in out:
        a = out["allocation"]
        ci = a.get("ci", {})
        print(f"compute-optimal at C = {a['compute']:.3g} FLOPs: N = {fmt_num(a['params'])} parameters, "
              f"D = {fmt_num(a['tokens'])} tokens, {a['tokens_per_param']:.1f} tokens per parameter"
              + (f" (95% CI {ci['tokens_per_param'][0]:.1f} to {ci['tokens_per_param'][1]:.1f})" if ci else ""))
    if "inference_aware" in out:
        i = out["inference_aware"]
        print(f"inference-aware ({i['inference_tokens']:.3g} inference tokens): N = {fmt_num(i['params'])}, "
              f"D = {fmt_num(i['tokens'])} ({i['tokens_per_param']:.0f} tokens/param); total compute "
              f"{i['total_compute']:.3g} vs {i['chinchilla_total_compute']:.3g} FLOPs for the compute-optimal model")
    return 0


def _cmd_fit_isoflop(args) -> int:
    from ._csv import read_columns
    from .fit import fit_isoflop

    cols = [args.params_col, args.tokens_col, args.budget_col, args.loss_col]
    t = read_columns(args.csv, cols, numeric=cols)
    out = fit_isoflop(t[args.params_col], t[args.tokens_col], t[args.budget_col], t[args.loss_col], n_boot=args.bootstrap)
    if args.json:
        print(json.dumps(out, indent=2, default=float))
        return 0
    print(f"{'budget (FLOPs)':>15} {'N_opt':>10} {'D_opt':>10} {'loss':>8} runs")
    for o in out["optima"]:
        print(f"{o['compute']:>15.3g} {fmt_num(o['params']):>10} {fmt_num(o['tokens']):>10} {o['loss']:>8.4f} {o['n_runs']}")
    for key in ("params", "tokens"):
        law = out[f"{key}_law"]
        ci = law["ci"].get("exp_compute")
        print(f"{key}_opt = {law['coef']:.3g} * C^{law['exponent']:.3f}" + (f" (exponent 95% CI {ci[0]:.3f} to {ci[1]:.3f})" if ci else ""))
    return 0


def _cmd_fit_hparams(args) -> int:
    from ._csv import read_columns
    from .fit.hparams import find_optima, fit_hparam_laws

    cols = [args.lr_col, args.batch_col, args.loss_col, args.params_col, args.tokens_col]
    t = read_columns(args.csv, cols, numeric=cols)
    batch = t[args.batch_col]
    if args.seq_len:
        batch = [b * args.seq_len for b in batch]
    optima = find_optima(t[args.params_col], t[args.tokens_col], t[args.lr_col], batch, t[args.loss_col])
    laws = fit_hparam_laws(optima, n_boot=args.bootstrap)
    unit = "tokens" if args.seq_len else "as in the batch column"
    out = {"lr_law": laws["lr_law"], "batch_law": laws["batch_law"], "lr_vs_compute": laws["lr_vs_compute"],
           "batch_vs_compute": laws["batch_vs_compute"], "batch_unit": unit,
           "optima": [{k: o[k] for k in ("params", "tokens", "lr", "batch", "loss", "method", "raw")} for o in optima]}
    if args.json:
        print(json.dumps(out, indent=2, default=float))
        return 0
    print(f"{'params':>10} {'tokens':>10} {'lr_opt':>10} {'B_opt':>10} {'loss':>8}  method")
    for o in optima:
        print(f"{fmt_num(o['params']):>10} {fmt_num(o['tokens']):>10} {o['lr']:>10.3g} {fmt_num(o['batch']):>10} "
              f"{o['loss']:>8.4f}  {o['method']}")
    lr, b = laws["lr_law"], laws["batch_law"]
    print(f"lr_opt = {lr['coef']:.3g} * N^{lr['exp_params']:.3f} * D^{lr['exp_tokens']:.3f}  "
          f"(95% CI: N exp {lr['ci']['exp_params'][0]:.3f} to {lr['ci']['exp_params'][1]:.3f}, "
          f"D exp {lr['ci']['exp_tokens'][0]:.3f} to {lr['ci']['exp_tokens'][1]:.3f})")
    print(f"B_opt = {b['coef']:.3g} * D^{b['exp_tokens']:.3f} ({unit}; 95% CI on the exponent "
          f"{b['ci']['exp_tokens'][0]:.3f} to {b['ci']['exp_tokens'][1]:.3f})")
    return 0


def _cmd_fit_curve(args) -> int:
    from ._csv import read_columns
    from .fit.curves import backtest_curve, fit_curve, predict_curve

    t = read_columns(args.csv, [args.step_col, args.loss_col], numeric=[args.step_col, args.loss_col])
    steps, loss = t[args.step_col], t[args.loss_col]
    fit = fit_curve(steps, loss, n_boot=args.bootstrap)
    out = {"L_inf": fit.values["y_inf"], "a": fit.values["a"], "b": fit.values["alpha"], "n_points": fit.n_points,
           "ci": {{"y_inf": "L_inf", "alpha": "b"}.get(k, k): list(v) for k, v in fit.ci.items()},
           "goodness": {"rmse_log": fit.rmse_log, "r2_log": fit.r2_log}}
    if args.predict_at:
        out["prediction"] = predict_curve(fit, args.predict_at, steps=steps, loss=loss)
    try:
        out["backtest"] = backtest_curve(steps, loss, n_boot=min(args.bootstrap, 500))
    except ValueError as err:
        out["backtest"] = {"error": str(err)}
    if args.json:
        print(json.dumps(out, indent=2, default=float))
        return 0
    print(f"L(t) = L_inf + a t^-b from {fit.n_points} points: L_inf = {_ci_text(fit, 'y_inf')}, "
          f"a = {_ci_text(fit, 'a')}, b = {_ci_text(fit, 'alpha')}")
    if "prediction" in out:
        pr = out["prediction"]
        print(f"predicted loss at step {pr['step']:g}: {pr['loss']:.4f} (95% predictive interval "
              f"{pr['interval'][0]:.4f} to {pr['interval'][1]:.4f})")
    bt = out["backtest"]
    if "error" not in bt:
        print(f"backtest: fitted on the first {bt['fraction']:.0%} ({bt['fit_points']} points), predicted the final "
              f"loss {bt['final_loss']:.4f} as {bt['predicted']:.4f} ({bt['rel_error']:+.2%}; "
              f"{'inside' if bt['inside'] else 'outside'} the interval)")
    return 0


def _cmd_plan(args) -> int:
    from .fit import EPOCH_2024, compute_optimal, inference_optimal
    from .plan import plan_run

    alloc = infer = None
    tokens, params = args.tokens, args.params
    if args.compute:
        alloc = compute_optimal(args.compute, EPOCH_2024)
        if args.inference_tokens is not None:
            infer = inference_optimal(args.compute, args.inference_tokens, EPOCH_2024)
        chosen = infer or alloc
        tokens = tokens or chosen["tokens"]
        params = params or chosen["params"]
    if tokens is None:
        raise ValueError("Give --tokens (training tokens at the reference batch) or --compute.")
    if args.b_crit is not None:
        b_crit = args.b_crit
    elif args.b_crit_tokens is not None:
        b_crit = args.b_crit_tokens / args.seq_len
    elif args.b_crit_law is not None:
        try:
            coef, exp = (float(v) for v in args.b_crit_law.split(":"))
        except ValueError:
            raise ValueError(f"--b-crit-law must be COEF:EXP, e.g. 0.58:0.571. Got {args.b_crit_law!r}.") from None
        b_crit = coef * tokens**exp / args.seq_len
    else:
        from .sweep.analysis import analyze_sweep
        from .sweep.store import TrialStore

        if not Path(args.b_crit_store).is_file():
            raise ValueError(f"The store {args.b_crit_store!r} does not exist.")
        with TrialStore(args.b_crit_store) as store:
            fits = [analyze_sweep(n, c, store.trials(n)).fit for n, c in store.sweeps().items()]
        fits = [f for f in fits if f is not None]
        if not fits:
            raise ValueError(f"No sweep in {args.b_crit_store!r} supports a B_crit fit.")
        b_crit = fits[-1].b_crit
    tps = args.tokens_per_sec
    if tps is None and args.peak_flops is not None:
        if params is None:
            raise ValueError("--peak-flops needs --params (throughput = peak * mfu / (6 N) tokens/s).")
        tps = args.peak_flops * args.mfu / (6.0 * params)
    grad_bytes = bw = None
    if args.bandwidth is not None:
        if params is None:
            raise ValueError("--bandwidth needs --params to size the all-reduce.")
        grad_bytes, bw = params * args.grad_bytes_per_param, args.bandwidth
    plan = plan_run(gpus=list(args.gpus), b_crit=b_crit, tokens=tokens, seq_len=args.seq_len,
                    micro_batch=args.micro_batch, accumulation=args.accumulation,
                    reference_batch=args.reference_batch, tokens_per_sec_per_gpu=tps,
                    comm_overhead=args.comm_overhead, grad_bytes=grad_bytes, bandwidth_bytes_per_s=bw,
                    price_per_gpu_hour=args.price, min_efficiency=args.min_efficiency)
    if args.json:
        out = {"schema": "batchlaw.plan/1", **plan.to_dict()}
        if alloc:
            out["compute_optimal"] = alloc
        if infer:
            out["inference_aware"] = infer
        print(json.dumps(out, indent=2, default=float))
        return 0
    print(f"B_crit = {fmt_num(b_crit)} sequences ({fmt_num(b_crit * args.seq_len)} tokens); "
          f"S_min = {fmt_num(plan.s_min)} steps; {fmt_num(tokens)} tokens at the reference batch")
    if alloc:
        print(f"compute-optimal for {args.compute:.3g} FLOPs (Epoch AI 2024 law): N = {fmt_num(alloc['params'])}, "
              f"D = {fmt_num(alloc['tokens'])} ({alloc['tokens_per_param']:.1f} tokens/param)")
    if infer:
        print(f"inference-aware ({args.inference_tokens:.3g} inference tokens): N = {fmt_num(infer['params'])}, "
              f"D = {fmt_num(infer['tokens'])}; total compute {infer['total_compute']:.3g} vs "
              f"{infer['chinchilla_total_compute']:.3g} FLOPs")
    print(plan.table())
    for d in plan.doubling:
        r1 = next(r for r in plan.rows if r.gpus == d["to"])
        line = f"{d['from']} -> {d['to']} GPUs: {1 / d['steps_ratio']:.2f}x fewer steps"
        if "speedup" in d:
            line += f", {d['speedup']:.2f}x faster for {d['gpu_hours_ratio']:.2f}x the GPU-hours"
        verdict = "worth it" if d.get("speedup", 1 / d["steps_ratio"]) >= 2 * args.min_efficiency else "poor value"
        if r1.over_critical:
            line += f"; the batch {r1.global_batch:,} is {r1.global_batch / b_crit:.1f}x B_crit"
        print(f"{line}: {verdict}.")
        r0 = next(r for r in plan.rows if r.gpus == d["from"])
        if r1.over_critical and args.micro_batch % 2 == 0:
            print(f"  alternative: {d['to']} GPUs at micro-batch {args.micro_batch // 2} keep the global batch at "
                  f"{r0.global_batch:,}: the same {fmt_num(r0.steps)} steps, up to 2x faster if each GPU keeps its "
                  "throughput at the smaller micro-batch.")
    print(f"recommendation: {plan.reason}")
    return 0


def _cmd_report(args) -> int:
    from .report import write_report
    from .sweep import TrialStore, analyze_sweep

    path = Path(args.store)
    if not path.is_file():
        raise ValueError(f"The store {args.store!r} does not exist. Run 'batchlaw sweep --store {args.store} ...' first.")
    with TrialStore(path) as store:
        analyses = [analyze_sweep(name, cfg, store.trials(name), reference_batch=args.reference_batch)
                    for name, cfg in store.sweeps().items()]
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        store.export_csv(out / "trials.csv")
    if not analyses:
        raise ValueError(f"The store {args.store!r} holds no sweep.")
    html = write_report(analyses, out)
    if args.json:
        print(json.dumps({"schema": "batchlaw.report/1", "report": str(html),
                          "sweeps": [a.to_dict() for a in analyses]}, indent=2, default=float))
    else:
        for a in analyses:
            _print_analysis(a)
            print()
        print(f"report: {html}")
    return 0


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
