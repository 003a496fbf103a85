"""``batchlaw schedule compare``: batch-size schedules raced to a held-out target loss and judged
against the frontier of constant batches."""

from __future__ import annotations

import argparse
import json

from .._format import fmt_interval, fmt_num
from ._common import _int_list, add_workload_arguments, check_output_file, workload_from_args


def _stages(text: str) -> tuple[tuple[int, int], ...]:
    """``"0:8,4096:32"`` -> ``((0, 8), (4096, 32))``."""
    try:
        pairs = tuple(tuple(int(x) for x in part.split(":")) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:BATCH pairs separated by commas, got {text!r}") from None
    if not pairs or any(len(p) != 2 for p in pairs):
        raise argparse.ArgumentTypeError(f"expected START:BATCH pairs separated by commas, got {text!r}")
    return pairs


def add_parsers(sub) -> None:
    p = sub.add_parser("schedule", help="batch-size schedules: compare them on a built-in workload",
                       description="Batch-size schedules driven by measurement (noise scale, branched CBS) and Seesaw.")
    ssub = p.add_subparsers(dest="schedule_command", metavar="SUBCOMMAND")
    ssub.required = True
    c = ssub.add_parser(
        "compare",
        help="train constant batches (the frontier) and batch-size schedules to a held-out target loss; report each "
        "schedule's Pareto gain against the frontier, steps, examples and wall-clock with intervals over seeds",
        description="Constant batches small x 1, 2, 4, ... up to --frontier-max-batch train to --target-loss on every "
        "seed: their (examples, steps) points are the frontier. Each schedule trains from the same initialisation per "
        "seed and gets its Pareto gain 1 - steps / S_frontier(allowance x its examples), its example overhead against "
        "the frontier at equal steps, and its held-out loss at a common budget of examples. The learning rate follows "
        "the rule from the small batch, capped at the workload's stability limit (known, or found by a short probe). "
        "The CBS ramp follows a branched CBS measurement made on the first seed's constant-small run (its cost is "
        "reported apart). The controller (BatchController) decides in the run from the noise scale and short branch "
        "tests: its branches' examples, steps and seconds count in its figures and are shown apart. Wall-clock "
        "excludes evaluation and is noisy on a shared machine.",
    )
    add_workload_arguments(c, default="bytegpt")
    c.add_argument("--target-loss", type=float, required=True, help="held-out loss to reach (below the initial loss)")
    c.add_argument("--seeds", type=_int_list, default=(0, 1, 2), help="comma-separated distinct seeds (default: 0,1,2)")
    c.add_argument("--small-batch", type=int, default=8, help="the constant small batch, where ramps start (examples; default: %(default)s)")
    c.add_argument("--large-batch", type=int, default=64, help="the ramps' cap (examples; default: %(default)s)")
    c.add_argument("--frontier-max-batch", type=int, default=None,
                   help="the largest constant batch of the frontier, >= --large-batch (examples; default: the large batch)")
    c.add_argument("--allowance", type=float, default=1.1,
                   help="the Pareto gain compares with the best constant batch spending up to this x the examples "
                   "(default: %(default)s)")
    c.add_argument("--lr", type=float, default=None, help="learning rate at the small batch (default: the workload's)")
    c.add_argument("--lr-rule", choices=["sqrt", "linear"], default=None,
                   help="learning rate vs batch (default: the workload's: sqrt for Adam, linear for SGD)")
    c.add_argument("--lr-cap", type=float, default=None,
                   help="cap on every run's learning rate (default: 0.75 x the workload's known stability limit, else "
                   "found by a short probe)")
    c.add_argument("--lr-probe-steps", type=int, default=16,
                   help="steps of each LR probe run, one per frontier batch (default: %(default)s)")
    c.add_argument("--warmup", type=int, default=0, help="learning-rate warm-up in examples (default: %(default)s)")
    c.add_argument("--max-examples", type=int, default=200_000, help="budget per run in examples (default: %(default)s)")
    c.add_argument("--eval-every", type=int, default=256, help="examples between held-out evaluations (default: %(default)s)")
    c.add_argument("--noise-c", type=float, default=1.0, help="the noise ramp follows c x B_simple (default: %(default)s)")
    c.add_argument("--hysteresis", type=float, default=0.25, help="the noise ramp grows only past (1 + this) x the batch (default: %(default)s)")
    c.add_argument("--cbs-tolerance", type=float, default=0.01, help="relative tolerance of the branched CBS (default: %(default)s)")
    c.add_argument("--cbs-budget", type=int, default=None,
                   help="examples per branch of the CBS measurement, a multiple of max(k) x the small batch "
                   "(default: 16 x max(k) x the small batch)")
    c.add_argument("--cbs-factor", type=float, default=1.0,
                   help="the CBS ramp's batch is this x the measured CBS (< 1 leaves a margin; default: %(default)s)")
    c.add_argument("--ramp-stages", type=_stages, default=(),
                   help="stages of the fixed_ramp schedule as START:BATCH pairs (examples seen: batch), e.g. 0:128,7808:512")
    from ..schedule.compare_registry import CONSTANT_SCHEDULES, SCHEDULE_FACTORIES  # pure Python: no torch

    c.add_argument("--schedules", default="constant_small,constant_large,noise_ramp,cbs_ramp,seesaw,controller",
                   help=f"comma-separated schedules to run: {', '.join(CONSTANT_SCHEDULES + tuple(SCHEDULE_FACTORIES))} "
                   "(default: %(default)s; the frontier of constant batches always runs)")
    c.add_argument("--store", default=None, help="SQLite file for the branched CBS measurement (default: temporary)")
    c.add_argument("--json", action="store_true", help="print the result as JSON (schema batchlaw.schedule_compare/2)")
    c.add_argument("--out", default=None, help="also write the JSON document to this file")
    c.add_argument("--html", default=None, help="write an HTML page (steps vs examples: the frontier and each schedule) to this file")
    c.add_argument("--png", default=None, help="write the steps-vs-examples plot as a PNG file")
    c.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    c.set_defaults(func=_cmd_compare)


def _cmd_compare(args) -> int:
    from ..schedule.compare import CompareConfig, compare_schedules

    # Every option and path is checked before any training.
    paths = {opt: None if getattr(args, attr) is None else check_output_file(opt, getattr(args, attr))
             for opt, attr in (("--out", "out"), ("--store", "store"), ("--html", "html"), ("--png", "png"))}
    ref, kwargs, _ = workload_from_args(args)
    cfg = CompareConfig(workload=ref, workload_kwargs=kwargs, target_loss=args.target_loss, seeds=tuple(args.seeds),
                        small_batch=args.small_batch, large_batch=args.large_batch,
                        frontier_max_batch=args.frontier_max_batch, allowance=args.allowance, lr=args.lr,
                        lr_rule=args.lr_rule, lr_cap=args.lr_cap, lr_probe_steps=args.lr_probe_steps,
                        warmup=args.warmup, max_examples=args.max_examples, eval_every=args.eval_every,
                        noise_c=args.noise_c, hysteresis=args.hysteresis, cbs_tolerance=args.cbs_tolerance,
                        cbs_budget=args.cbs_budget, cbs_factor=args.cbs_factor, ramp_stages=tuple(args.ramp_stages),
                        schedules=tuple(s.strip() for s in args.schedules.split(",") if s.strip()))
    doc = compare_schedules(cfg, store=paths["--store"], progress=not args.no_progress and not args.json)
    if paths["--out"] is not None:
        with open(paths["--out"], "w") as fh:
            json.dump(doc, fh, indent=2)
    if paths["--html"] is not None or paths["--png"] is not None:
        from ..report.compare import plot_compare, write_compare_report

        if paths["--html"] is not None:
            write_compare_report(doc, paths["--html"])
        if paths["--png"] is not None:
            paths["--png"].write_bytes(plot_compare(doc))
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(format_compare(doc))
    for opt in ("--html", "--png"):
        if paths[opt] is not None:
            print(f"{opt[2:].upper()}: {paths[opt]}")
    return 0


def _ci(iv: dict, missing: str = "not reached") -> str:
    return fmt_interval(iv, missing)


def _cap_text(doc: dict) -> str:
    cap = doc["lr_cap"]
    if cap["lr"] is None:
        return "not capped (every LR of the probe trained stably)"
    if cap["source"] == "workload":
        return f"capped at {fmt_num(cap['lr'])} ({cap['margin']:g} x the workload's stability limit {fmt_num(cap['limit'])})"
    if cap["source"] == "probe":
        return f"capped at {fmt_num(cap['lr'])} (the probe failed at {fmt_num(cap['limit'])})"
    return f"capped at {fmt_num(cap['lr'])} (--lr-cap)"


def format_compare(doc: dict) -> str:
    """A human table of a ``batchlaw.schedule_compare/2`` document."""
    c = doc["config"]
    tpe = c.get("tokens_per_example")
    ex = f"examples (x {tpe} tokens)" if tpe else "examples"
    start = ", ".join(fmt_num(v) for v in c["initial_loss"].values())
    lines = [f"schedule compare on {doc['workload']['name']}: target held-out loss {fmt_num(c['target_loss'])} "
             f"(initial {start}); seeds {', '.join(str(s) for s in c['seeds'])}",
             f"learning rate {fmt_num(c['lr'])} at batch {c['small_batch']}, {c['lr_rule']} rule, {_cap_text(doc)}",
             "", f"constant-batch frontier: {doc['frontier']['statistic']}; * = on the frontier",
             f"{'batch':>7} {'LR':>9} {'reached':>8} {'steps (median)':>15} {ex + ' (median)':>30}"]
    for p in doc["frontier"]["points"]:
        n = len(p["runs"])
        div = f" ({p['diverged']} diverged)" if p["diverged"] else ""
        steps, examples = (fmt_num(p[k]) if p[k] else "censored" for k in ("median_steps", "median_examples"))
        lines.append(f"{p['batch']:>7} {fmt_num(p['lr']):>9} {p['reached']:>5}/{n:<2} {steps:>15} {examples:>30} "
                     f"{'*' if p['on_frontier'] else ' '}{div}")
    lines += ["", "schedules: mean [95% interval over seeds]",
              f"{'schedule':<15} {'reached':>7} {'steps':>22} {ex:>26} {'wall s':>20}"]
    for name, s in doc["schedules"].items():
        div = f" ({s['diverged']} diverged)" if s["diverged"] else ""
        lines.append(f"{name:<15} {s['reached']:>4}/{len(s['runs']):<2} {_ci(s['steps']):>22} {_ci(s['examples']):>26} "
                     f"{_ci(s['wall_s']):>20}{div}")
    for name, s in doc["schedules"].items():
        if "branch_examples" in s:
            share = s["branch_share"]
            pct = "-" if share["mean"] is None else f"{100 * share['mean']:.2g}%"
            lines.append(f"  {name}: branches spent {_ci(s['branch_examples'], '-')} examples ({pct} of its examples) "
                         f"and {_ci(s['branch_steps'], '-')} steps, counted in the figures above")
    b = doc["budget"]
    at = "-" if b["examples"] is None else fmt_num(b["examples"])
    lines += ["", f"against the frontier: Pareto gain = 1 - steps / S_frontier({doc['goal']['allowance']:g} x examples); "
                  f"example overhead = examples / E_frontier(steps) - 1; loss at {at} examples (the fewest with which "
                  "any run reached the target) minus the best constant batch's there",
              f"{'schedule':<15} {'Pareto gain':>24} {'example overhead':>24} {'loss at budget':>22} {'loss penalty':>26}"]
    for name, s in doc["schedules"].items():
        lines.append(f"{name:<15} {_ci(s['pareto_gain'], '-'):>24} {_ci(s['example_overhead'], '-'):>24} "
                     f"{_ci(s['loss_at_budget'], '-'):>22} {_ci(s['loss_penalty'], '-'):>26}")
    g = doc["goal"]
    verdict = {True: "met", False: "not met", None: "no verdict"}[g["met"]]
    lines += ["", f"goal ({g['rule']}): {verdict}: {g['reason']}"]
    for r in g["results"]:
        lines.append(f"  {r['schedule']}: {({True: 'pays', False: 'does not pay', None: 'not shown to pay'})[r['met']]} ({r['why']})")
    for n in doc.get("notes", []):
        lines.append(f"note: {n}")
    return "\n".join(lines)
