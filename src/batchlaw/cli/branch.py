"""``batchlaw branch``: the critical batch size over a run, measured by branching."""

from __future__ import annotations

import json

from .._format import fmt_num
from ._common import _int_list, add_workload_arguments, check_output_file, workload_from_args


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "branch",
        help="measure the critical batch size at checkpoints of a run by branching at k x the batch",
        description="Train a trunk at --base-batch, checkpoint it at --checkpoints (examples seen), and from each "
        "checkpoint branch short runs at k x the batch (learning rate rescaled: square root for Adam, linear for SGD) "
        "on the same budget of examples. CBS(t) is the largest batch whose loss after the budget is within the "
        "tolerance of the k = 1 branch (Merrill et al. 2025). The noise scale B_simple is measured on the trunk. "
        "Branches are stored in a SQLite file as each finishes: rerunning the command resumes.",
    )
    add_workload_arguments(p, default="bytegpt")
    p.add_argument("--base-batch", type=int, required=True, help="the trunk's batch B, in examples")
    p.add_argument("--lr", type=float, default=None, help="the trunk's learning rate at B (default: the workload's)")
    p.add_argument("--checkpoints", type=_int_list, required=True,
                   help="comma-separated examples seen at which to branch (multiples of the base batch)")
    p.add_argument("--multipliers", type=_int_list, default=(1, 2, 4, 8), help="k values, including 1 (default: 1,2,4,8)")
    p.add_argument("--budget", type=int, required=True,
                   help="examples each branch trains on (a multiple of max(k) x the base batch)")
    p.add_argument("--tolerance", type=float, default=0.01,
                   help="a branch is within the CBS while its loss is within this of the k=1 branch; a larger "
                   "tolerance gives a larger CBS (default: %(default)s)")
    p.add_argument("--tolerance-kind", choices=["relative", "absolute"], default="relative",
                   help="tolerance as a fraction of the k=1 loss, or in loss units (default: %(default)s)")
    p.add_argument("--lr-rule", choices=["sqrt", "linear", "none"], default=None,
                   help="learning rate at k x B (default: the workload's: sqrt for Adam, linear for SGD)")
    p.add_argument("--seeds", type=_int_list, default=(0,), help="branch data-order seeds, losses averaged (default: 0)")
    p.add_argument("--trunk-seed", type=int, default=0, help="seed of the trunk (default: %(default)s)")
    p.add_argument("--store", required=True, help="SQLite file for the branches (created or resumed)")
    p.add_argument("--name", default="branch", help="name of the measurement in the store (default: %(default)s)")
    p.add_argument("--executor", choices=["local", "ray"], default="local", help="local processes or Ray (default: %(default)s)")
    p.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local Ray instance)")
    p.add_argument("--jobs", type=int, default=1, help="parallel branches (default: %(default)s: in this process)")
    p.add_argument("--html", default=None, help="write an HTML page with CBS(t) beside B_simple(t) to this file")
    p.add_argument("--json", action="store_true", help="print the result as JSON (schema batchlaw.branch/1)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_cmd_branch)


def _cmd_branch(args) -> int:
    from ..sweep.branched import make_branch_executor
    from ..sweep.branched_workload import WorkloadBranchConfig, measure_workload_cbs

    # every option and output path is checked here, before the trunk trains
    store = check_output_file("--store", args.store)
    html = None if args.html is None else check_output_file("--html", args.html)
    ref, kwargs, workload = workload_from_args(args)
    lr = args.lr if args.lr is not None else workload.default_lr
    cfg = WorkloadBranchConfig(workload=ref, base_batch=args.base_batch, lr=lr,
                               checkpoints=tuple(args.checkpoints), budget=args.budget,
                               multipliers=tuple(args.multipliers), tolerance=args.tolerance,
                               tolerance_kind=args.tolerance_kind, lr_rule=args.lr_rule, seeds=tuple(args.seeds),
                               trunk_seed=args.trunk_seed, workload_kwargs=kwargs, name=args.name)
    executor = None if args.executor == "local" and args.jobs == 1 else make_branch_executor(
        args.executor, args.jobs, args.ray_address)
    try:
        res = measure_workload_cbs(cfg, store, executor=executor, progress=not args.no_progress and not args.json)
    finally:
        if executor is not None:
            executor.close()
    if html is not None:
        from ..report.branch import write_branch_report

        write_branch_report(res, html)
    if args.json:
        print(json.dumps(res.to_dict(), indent=2, allow_nan=False))
        return 0
    print(format_branch(res))
    if html is not None:
        print(f"\nHTML: {html}")
    return 0


def format_branch(res) -> str:
    """The human table and summary of a branched measurement; ``!`` marks a checkpoint whose
    losses are not monotone in ``k``."""
    from ..report.branch import branch_summary

    lines = [f"{'examples seen':>14} {'k=1 loss':>9} {'CBS (examples)':>16} {'B_simple':>10} {'CBS/B_simple':>13}"]
    for p in res.points:
        cbs = {"lower": f">={fmt_num(p['cbs'])}", "upper": f"<={fmt_num(p['cbs'])}"}.get(
            p["censored"], f"{fmt_num(p['cbs'])}-{fmt_num(p['cbs_upper'])}") + (" !" if p.get("non_monotone") else "")
        ratio = "-" if p.get("cbs_over_b_simple") is None else f"{p['cbs_over_b_simple']:.2g}"
        lines.append(f"{fmt_num(p['t_examples']):>14} {p['reference_loss']:>9.4g} {cbs:>16} "
                     f"{fmt_num(p.get('b_simple')):>10} {ratio:>13}")
    if any(p.get("non_monotone") for p in res.points):
        lines.append("! not monotone: a larger batch passed after a smaller one failed, so the CBS there is noise-limited")
    lines += ["", branch_summary(res)]
    return "\n".join(lines)
