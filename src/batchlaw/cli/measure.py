"""``batchlaw measure``: train a built-in workload with the noise monitor and print the trace."""

from __future__ import annotations

import argparse
import json
import math

from .._format import fmt_num


def _add_measure_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workload", default="bytemlp", help="built-in workload: linreg or bytemlp (default: %(default)s)")
    p.add_argument("--steps", type=int, default=300, help="optimizer steps (default: %(default)s)")
    p.add_argument("--micro-batch-size", type=int, default=None, help="examples per micro-batch (default: the workload's)")
    p.add_argument("--accumulation", type=int, default=4, help="micro-batches per optimizer step, >= 2 (default: %(default)s)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the workload's)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--every", type=int, default=1, help="measure every n-th step (default: %(default)s)")
    p.add_argument("--windows", type=int, default=6, help="windows in the printed trace (default: %(default)s)")
    p.add_argument("--nproc", type=int, default=1,
                   help="train data-parallel (DDP) on this many local processes (gloo on CPU, nccl on GPUs) and "
                   "print the estimate beside a one-process run with the same global batch (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the result as JSON (schema batchlaw.measure/1)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "measure",
        help="train a built-in workload and measure its gradient noise scale",
        description="Train a built-in workload with gradient accumulation and the GradientNoiseMonitor "
        "attached; print the noise-scale trace (B_simple per window of steps, with 95%% intervals) and the "
        "estimate over the second half of the run.",
    )
    _add_measure_args(p)
    p.set_defaults(func=_cmd_measure)


def _run_measure(args, workload_name: str | None = None, **overrides):
    from ..measure import measure_noise
    from ..workloads import get_workload

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
    if args.nproc < 1:
        raise ValueError(f"The '--nproc' option must be a positive integer. Got {args.nproc} instead.")
    if args.nproc == 1:
        _, result = _run_measure(args)
        if args.json:
            print(json.dumps(result.to_dict(), indent=2))
        else:
            _print_measure(result)
        return 0
    # Data-parallel run, then one process with the same global batch (nproc * K micro-batches).
    _, parallel = _run_measure(args, nproc=args.nproc)
    _, single = _run_measure(args, accumulation=args.nproc * args.accumulation)
    if args.json:
        print(json.dumps({**parallel.to_dict(), "single_process": single.to_dict()}, indent=2))
        return 0
    _print_measure(parallel)
    cfg = parallel.config
    print(f"\n{'run':<34} {'global batch':>12}  B_simple ({cfg['unit']}, second half of the run)")
    for label, res in ((f"{args.nproc} processes x {cfg['accumulation']} x {cfg['micro_batch_size']} (DDP)", parallel),
                       (f"1 process x {single.config['accumulation']} x {cfg['micro_batch_size']}", single)):
        est = str(res.estimate) if res.estimate is not None else f"none: {res.note}"
        print(f"{label:<34} {res.config['batch_size']:>12,}  {est}")
    if parallel.estimate is not None and single.estimate is not None:
        print(f"ratio data-parallel / one process: {parallel.estimate.b_simple / single.estimate.b_simple:.2f} "
              "(the two runs train on different examples: expect agreement within their intervals)")
    return 0
