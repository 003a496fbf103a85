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
