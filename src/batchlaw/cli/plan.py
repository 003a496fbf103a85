"""``batchlaw plan``: what a run takes on more GPUs, and at what cost."""

from __future__ import annotations

import json
from pathlib import Path

from .._format import fmt_num
from ._common import _int_list


def add_parsers(sub) -> None:
    _add_plan_parser(sub)


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
    p.add_argument("--json", action="store_true", help="print JSON (schema batchlaw.plan/1)")
    p.set_defaults(func=_cmd_plan)


def _cmd_plan(args) -> int:
    from ..fit import EPOCH_2024, compute_optimal, inference_optimal
    from ..plan import plan_run

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
        from ..sweep.analysis import analyze_sweep
        from ..sweep.store import TrialStore

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
