"""``batchlaw demo``: the whole story on the default workload."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .._format import fmt_num
from .._validation import check_positive_int
from ._common import check_output_dir
from .measure import _print_measure, _run_measure
from .sweep import _print_analysis


def add_parsers(sub) -> None:
    d = sub.add_parser(
        "demo",
        help="run the whole story on the default workload",
        description="The whole story on the default workload (bytemlp: a next-byte MLP on Python standard-library "
        "sources): measure the gradient noise scale during training, check the monitor against an analytic answer "
        "(linreg), measure the critical batch size with a sweep, fit S(B) = S_min (1 + B_crit/B), race the batch "
        "controller against every constant batch on the noisy quadratic model, and write a report.",
    )
    d.add_argument("--out", default="batchlaw-out", help="directory for the report and the trial store (default: %(default)s)")
    d.add_argument("--jobs", type=int, default=2, help="parallel trials (default: %(default)s)")
    d.add_argument("--json", action="store_true", help="print the results as JSON")
    d.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    d.set_defaults(func=_cmd_demo)


def _demo_compare():
    """Section 4's comparison: the issue-21 NQM (dim 100, c_exponent 0.5; SGD at LR 0.066 at batch 8, linear
    rule, capped at 0.75 x 2 / h_max) to held-out loss 0.05, constant batches 8 to 256 and the controller, two
    seeds: about 10 s on one CPU core."""
    from ..schedule.compare import CompareConfig

    return CompareConfig(workload="nqm", workload_kwargs={"dim": 100, "c_exponent": 0.5}, target_loss=0.05,
                         seeds=(0, 1), small_batch=8, large_batch=256, lr=0.066, lr_rule="linear", eval_every=8,
                         max_examples=40_000, schedules=("constant_small", "controller"))


def _cmd_demo(args) -> int:
    from ..report import headline, write_report
    from ..report.compare import schedule_line
    from ..schedule.compare import compare_schedules
    from ..sweep import LocalExecutor, SweepConfig, TrialStore, analyze_sweep, run_sweep

    compare_cfg = _demo_compare()

    check_positive_int("jobs", args.jobs)
    out_dir = check_output_dir("--out", args.out)
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
                         target_loss=2.4, max_steps=4000, lr_base=2e-3, eval_every=None, seeds=(0, 1),
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

    say("\n== 4. A batch size that decides itself: the controller against every constant batch (noisy quadratic "
        "model) ==")
    compare = compare_schedules(compare_cfg, progress=progress)
    say(schedule_line(compare))
    html = write_report([analysis], out_dir, compare=compare)
    if args.json:
        print(json.dumps({"schema": "batchlaw.demo/2", "measure": measured.to_dict(),
                          "check": {"workload": "linreg", "analytic_b_simple": analytic,
                                    "estimate": est.to_dict() if est else None},
                          "sweep": analysis.to_dict(), "compare": compare, "report": str(html)}, indent=2,
                         default=float))
        return 0
    print("\n== What it means ==")
    print(headline(analysis))
    notes = _two_noise_figures(measured, analysis)
    if notes:
        print(f"\n{notes}")
    print(f"\nreport: {html}\ntrials: {store_path} (rerun to resume), {out_dir / 'trials.csv'}")
    return 0


def _two_noise_figures(measured, analysis) -> str:
    """Why section 1's and section 3's noise scales differ, in the run's own numbers."""
    if measured.estimate is None or analysis.b_simple is None:
        return ""
    s, e = measured.config["estimate_window"]
    trace = [r["b_simple"] for r in measured.trace if r["b_simple"] is not None]
    moved = (f" (its trace went from {fmt_num(trace[0])} in the first window to {fmt_num(trace[-1])} in the last)"
             if len(trace) >= 2 else "")
    return (f"Two noise figures, two questions: section 1's B_simple = {fmt_num(measured.estimate.b_simple)} examples "
            f"is measured late in one run (steps {s}-{e}, held-out loss near {measured.eval_losses[-1][1]:.3g}); "
            f"the noise scale moves as training proceeds{moved}. Section 3's run-averaged B_simple = "
            f"{fmt_num(analysis.b_simple['b_simple'])} examples averages whole runs, from initialisation to loss "
            f"{analysis.config['target_loss']:g}, over the best trial of each batch size: that is the figure to set "
            "beside B_crit (McCandlish et al. 2018 compare B_crit with the noise scale averaged over the run).")
