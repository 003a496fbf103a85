"""The ``batchlaw`` command line: ``batchlaw --help`` lists the commands."""

from __future__ import annotations

import argparse
import json
import math
import sys

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
        description="Measure the gradient noise scale of the default workload (bytemlp: a next-byte MLP on "
        "Python standard-library sources), and check the monitor against the analytic answer on linreg.",
    )
    d.add_argument("--json", action="store_true", help="print the results as JSON")
    d.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    d.set_defaults(func=_cmd_demo)
    return parser


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
    ns = argparse.Namespace(steps=1000, micro_batch_size=None, accumulation=4, lr=None, seed=0, every=1,
                            windows=8, no_progress=args.no_progress)
    _, main_result = _run_measure(ns, "bytemlp")
    # Known-answer check: linreg has an analytic B_simple; a learning rate of 1e-12 keeps the
    # weights where they started (to float precision), so the analytic value is fixed.
    lin, check = _run_measure(ns, "linreg", lr=1e-12, steps=400, windows=4)
    model = lin.make_model(0)
    analytic = lin.b_simple(model)
    if args.json:
        print(json.dumps({"schema": "batchlaw.demo/1", "measure": main_result.to_dict(),
                          "check": {"workload": "linreg", "analytic_b_simple": analytic,
                                    "estimate": check.estimate.to_dict() if check.estimate else None}}, indent=2))
        return 0
    print("== 1. Gradient noise scale of real training: next-byte MLP on Python standard-library sources ==")
    _print_measure(main_result)
    print("\n== 2. Known-answer check: linear regression at fixed weights, analytic B_simple ==")
    est = check.estimate
    print(f"analytic B_simple = {analytic:.3g} examples; measured {est}")
    inside = est is not None and est.ci[0] <= analytic <= est.ci[1]
    print(f"analytic value inside the interval: {'yes' if inside else 'NO'}; "
          f"error {100 * (est.b_simple / analytic - 1):+.1f}%")
    m = main_result.estimate
    if m is not None:
        batch = main_result.config["batch_size"]
        print(f"\nWhat it means: the run used {batch} examples per step, and late in training "
              f"B_simple is about {fmt_num(m.b_simple)} examples ({fmt_num(m.ci[0])} to {fmt_num(m.ci[1])}). "
              "Below B_simple a larger batch cuts the number of steps nearly in proportion; well above "
              "it, extra examples per step buy little. B_simple grows as the loss falls, and it is an "
              "order-of-magnitude guide to the critical batch size, not the critical batch size itself "
              "(McCandlish et al. 2018).")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError) as err:
        print(f"batchlaw: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
