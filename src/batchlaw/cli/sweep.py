"""``batchlaw sweep`` and ``batchlaw report``: the critical batch size, measured directly."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from .._format import fmt_num
from ._common import _int_list, _json_object, add_workload_arguments, check_output_dir, check_output_file, workload_from_args


def add_parsers(sub) -> None:
    _add_sweep_parser(sub)
    _add_report_parser(sub)


def _add_sweep_parser(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="measure the critical batch size directly: steps to a target loss over a grid of batch sizes",
        description="For each batch size, search the learning rate (a log grid that widens when the best sits "
        "at an edge) for the fewest steps to the target loss. Trials run in parallel and are stored in a SQLite "
        "file as each finishes; rerunning the same command resumes and never repeats a finished trial.",
    )
    add_workload_arguments(p)
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
    p.add_argument("--lr-refine", type=int, default=0,
                   help="times the grid is halved (in log spacing) around the best learning rate once it is "
                   "interior; removes the coarse-grid bias in steps to target (default: %(default)s)")
    p.add_argument("--max-steps", type=int, default=2000, help="budget per trial in steps (default: %(default)s)")
    p.add_argument("--eval-every", type=int, default=None,
                   help="evaluation period in steps (default: relative to the steps so far, every max(1, step // 10) "
                   "steps, so a target reached in 30 steps is read as finely as one reached in 3,000)")
    p.add_argument("--seeds", type=_int_list, default=(0,), help="comma-separated seeds (default: 0)")
    p.add_argument("--executor", choices=["local", "ray"], default="local", help="local process pool or Ray (default: %(default)s)")
    p.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local Ray instance)")
    p.add_argument("--ray-runtime-env", type=_json_object, default=None, metavar="JSON",
                   help='Ray runtime_env for the trials, e.g. \'{"working_dir": "."}\' to ship the module of your '
                   "workload to the cluster")
    p.add_argument("--jobs", type=int, default=2, help="parallel trials (local processes or local Ray CPUs) (default: %(default)s)")
    p.add_argument("--csv", default=None, help="also export the sweep's trials to this CSV file (checked before the sweep starts)")
    p.add_argument("--json", action="store_true", help="print the analysis as JSON (schema batchlaw.sweep/1)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_cmd_sweep)


def _add_report_parser(sub) -> None:
    p = sub.add_parser(
        "report", help="HTML report with plots from a sweep store",
        description="Write a self-contained HTML report (with PNG plots) and trials.csv for every sweep in a "
        "store, and print a summary table.",
    )
    p.add_argument("store", help="SQLite file written by 'batchlaw sweep'")
    p.add_argument("--out", required=True, help="directory for report.html, the PNGs and trials.csv (created if missing)")
    p.add_argument("--reference-batch", type=float, default=None, help="B0 for the CBS (default: the smallest batch)")
    p.add_argument("--json", action="store_true", help="print the analyses as JSON (schema batchlaw.report/1)")
    p.set_defaults(func=_cmd_report)


def _print_analysis(a) -> None:
    from ..sweep.analysis import steps_text

    unit = "examples"
    print(f"sweep {a.name!r}: {len(a.trials)} trials, workload {a.config['workload']}, target loss "
          f"{a.config['target_loss']:g} ({a.config['target_on']})")
    print(f"{'batch':>8} {'steps to target':>16} {'examples':>12} {'best lr':>10}  lrs tried")
    for p in a.points:
        steps, ex, note = steps_text(p)
        note = f" ({note})" if note else ""
        edge = f" (best at the {p['lr_at_edge']} edge)" if p["lr_at_edge"] else ""
        lr = "-" if p["best_lr"] is None else f"{p['best_lr']:.3g}"
        print(f"{p['batch_size']:>8} {steps:>16} {ex:>12} {lr:>10}  {len(p['lrs_tried'])}{note}{edge}")
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
    for w in a.warnings:
        print(f"warning: {w}")


def _cmd_sweep(args) -> int:
    from ..sweep import SweepConfig, TrialStore, analyze_sweep, make_executor, run_sweep

    if args.csv:
        check_output_file("--csv", args.csv)
    ref, kwargs, wl = workload_from_args(args)  # validates the reference and arguments, gives the defaults
    config = SweepConfig(
        workload=ref, batch_sizes=tuple(sorted(set(args.batch_sizes))), target_loss=args.target_loss,
        max_steps=args.max_steps, lr_base=args.lr_base if args.lr_base is not None else wl.default_lr,
        name=args.name, workload_kwargs=kwargs, target_on=args.target_on, eval_every=args.eval_every,
        seeds=tuple(args.seeds), lr_scaling=args.lr_scaling if args.lr_scaling is not None else wl.lr_scaling,
        lr_factor=args.lr_factor, lr_points=args.lr_points, max_extensions=args.max_extensions,
        lr_refine=args.lr_refine,
    )
    from .._validation import check_positive_int

    check_positive_int("jobs", args.jobs)
    with TrialStore(args.store) as store:  # a bad store fails here, before an executor starts
        executor = make_executor(args.executor, args.jobs, args.ray_address, runtime_env=args.ray_runtime_env)
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


def _cmd_report(args) -> int:
    from ..report import write_report
    from ..sweep import TrialStore, analyze_sweep

    from .._validation import check_positive_float

    if args.reference_batch is not None:
        check_positive_float("reference_batch", args.reference_batch)
    path = Path(args.store)
    if not path.is_file():
        kind = "is a directory" if path.is_dir() else "does not exist"
        raise ValueError(f"The store {args.store!r} {kind}. Run 'batchlaw sweep --store FILE ...' first and pass that FILE.")
    out = check_output_dir("--out", args.out)
    for name in ("report.html", "trials.csv"):
        if (out / name).is_dir():
            raise ValueError(f"{str(out / name)!r} is a directory: the report cannot be written there. "
                             "Choose another --out.")
    with TrialStore(path, create=False) as store:
        sweeps = store.sweeps()
        if not sweeps:
            raise ValueError(f"The store {args.store!r} holds no sweep. Run 'batchlaw sweep --store {args.store} ...' "
                             "first.")
        analyses = [analyze_sweep(name, cfg, store.trials(name), reference_batch=args.reference_batch)
                    for name, cfg in sweeps.items()]
        store.export_csv(out / "trials.csv")
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
