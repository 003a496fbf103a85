"""``batchlaw schedule compare``: batch-size schedules raced to a held-out target loss."""

from __future__ import annotations

import json
import sys

from .._format import fmt_num
from ._common import _int_list, add_workload_arguments, check_output_file, workload_from_args


def add_parsers(sub) -> None:
    p = sub.add_parser("schedule", help="batch-size schedules: compare them on a built-in workload",
                       description="Batch-size schedules driven by measurement (noise scale, branched CBS) and Seesaw.")
    ssub = p.add_subparsers(dest="schedule_command", metavar="SUBCOMMAND")
    ssub.required = True
    c = ssub.add_parser(
        "compare",
        help="train to a held-out target loss with constant small/large batches, the noise-scale ramp, the CBS ramp "
        "and Seesaw; report steps, tokens and wall-clock with intervals over seeds",
        description="Each schedule trains the workload from the same initialisation per seed until the held-out loss "
        "reaches --target-loss. The CBS ramp follows a branched CBS measurement made on the first seed's constant-small "
        "run (its cost is reported apart). Wall-clock excludes evaluation and is noisy on a shared machine.",
    )
    add_workload_arguments(c, default="bytegpt")
    c.add_argument("--target-loss", type=float, required=True, help="held-out loss to reach")
    c.add_argument("--seeds", type=_int_list, default=(0, 1, 2), help="comma-separated seeds (default: 0,1,2)")
    c.add_argument("--small-batch", type=int, default=8, help="the constant small batch, where ramps start (examples; default: %(default)s)")
    c.add_argument("--large-batch", type=int, default=64, help="the constant large batch and the ramps' cap (examples; default: %(default)s)")
    c.add_argument("--lr", type=float, default=None, help="learning rate at the small batch (default: the workload's)")
    c.add_argument("--lr-rule", choices=["sqrt", "linear"], default=None,
                   help="learning rate vs batch (default: the workload's: sqrt for Adam, linear for SGD)")
    c.add_argument("--warmup", type=int, default=0, help="learning-rate warm-up in examples (default: %(default)s)")
    c.add_argument("--max-examples", type=int, default=200_000, help="budget per run in examples (default: %(default)s)")
    c.add_argument("--eval-every", type=int, default=256, help="examples between held-out evaluations (default: %(default)s)")
    c.add_argument("--noise-c", type=float, default=1.0, help="the noise ramp follows c x B_simple (default: %(default)s)")
    c.add_argument("--hysteresis", type=float, default=0.25, help="the noise ramp grows only past (1 + this) x the batch (default: %(default)s)")
    c.add_argument("--cbs-tolerance", type=float, default=0.01, help="relative tolerance of the branched CBS (default: %(default)s)")
    c.add_argument("--cbs-budget", type=int, default=None,
                   help="examples per branch of the CBS measurement (default: 16 x max(k) x the small batch)")
    c.add_argument("--cbs-factor", type=float, default=1.0,
                   help="the CBS ramp's batch is this x the measured CBS (< 1 leaves a margin; default: %(default)s)")
    c.add_argument("--schedules", default=",".join(("constant_small", "constant_large", "noise_ramp", "cbs_ramp", "seesaw")),
                   help="comma-separated schedules to run (default: all five)")
    c.add_argument("--store", default=None, help="SQLite file for the branched CBS measurement (default: temporary)")
    c.add_argument("--json", action="store_true", help="print the result as JSON (schema batchlaw.schedule_compare/1)")
    c.add_argument("--out", default=None, help="also write the JSON document to this file")
    c.set_defaults(func=_cmd_compare)


def _cmd_compare(args) -> int:
    from ..schedule.compare import CompareConfig, compare_schedules

    out = None if args.out is None else check_output_file("--out", args.out)  # before any training
    store = None if args.store is None else check_output_file("--store", args.store)
    ref, kwargs, _ = workload_from_args(args)
    cfg = CompareConfig(workload=ref, workload_kwargs=kwargs, target_loss=args.target_loss,
                        seeds=tuple(args.seeds), small_batch=args.small_batch, large_batch=args.large_batch, lr=args.lr,
                        lr_rule=args.lr_rule, warmup=args.warmup, max_examples=args.max_examples,
                        eval_every=args.eval_every, noise_c=args.noise_c, hysteresis=args.hysteresis,
                        cbs_tolerance=args.cbs_tolerance, cbs_budget=args.cbs_budget, cbs_factor=args.cbs_factor,
                        schedules=tuple(s.strip() for s in args.schedules.split(",") if s.strip()))
    doc = compare_schedules(cfg, store=store,
                            progress=None if args.json else (lambda m: print(m, file=sys.stderr, flush=True)))
    if out is not None:
        with open(out, "w") as fh:
            json.dump(doc, fh, indent=2)
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(format_compare(doc))
    return 0


def _ci(iv: dict) -> str:
    if iv["mean"] is None:
        return "not reached"
    lo, hi = iv["ci"]
    if lo is None:
        return fmt_num(iv["mean"])
    return f"{fmt_num(iv['mean'])} [{fmt_num(lo)}, {fmt_num(hi)}]"


def format_compare(doc: dict) -> str:
    """A human table of a ``batchlaw.schedule_compare/1`` document."""
    c = doc["config"]
    lines = [f"target held-out loss {c['target_loss']:g} on {doc['workload']['name']}; seeds {c['seeds']}; "
             f"mean [95% interval over seeds]; ratios are per seed against constant_small",
             f"{'schedule':<15} {'reached':>7} {'steps':>22} {'examples':>24} {'wall s':>18} {'steps x':>7} {'examples x':>10}"]
    for name, s in doc["schedules"].items():
        sr, er = s["steps_ratio"]["mean"], s["examples_ratio"]["mean"]
        lines.append(f"{name:<15} {s['reached']:>4}/{len(s['runs']):<2} {_ci(s['steps']):>22} {_ci(s['examples']):>24} "
                     f"{_ci(s['wall_s']):>18} {'-' if sr is None else f'{sr:.2f}':>7} {'-' if er is None else f'{er:.2f}':>10}")
    g = doc["goal"]
    lines.append(f"goal ({g['rule']}): {'met' if g['met'] else 'not met'}")
    for n in doc.get("notes", []):
        lines.append(f"note: {n}")
    return "\n".join(lines)
