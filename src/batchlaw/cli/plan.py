"""``batchlaw plan``: what a run takes on more GPUs, and at what cost; ``batchlaw plan serve``: serving batches."""

from __future__ import annotations

import json
import math
from pathlib import Path

from .._format import fmt_num
from ._common import _int_list


def add_parsers(sub) -> None:
    p = _add_plan_parser(sub)
    plan_sub = p.add_subparsers(dest="plan_command", metavar="SUBCOMMAND")
    plan_sub.required = False
    _add_serve_parser(plan_sub)


def _float_pair(text: str) -> tuple[float, float]:
    import argparse

    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI, got {text!r}") from None
    return lo, hi


def _add_plan_parser(sub):
    p = sub.add_parser(
        "plan", help="what a run takes on more GPUs, and at what cost (and `plan serve` for serving batches)",
        description="For each GPU count: global batch, steps to the target through S(B) = S_min (1 + B_crit/B), "
        "step time with a ring all-reduce, wall-clock, GPU-hours, cost, efficiency against perfect linear scaling "
        "from one GPU, and the limit that binds (statistical, communication, memory); a recommendation that does not "
        "depend on which counts are listed. Without --tokens it answers the ratio questions (speed-up, GPU-hours). "
        "Batch sizes in sequences (examples) unless --unit says otherwise. `batchlaw plan serve --help`: serving.",
    )
    p.add_argument("--gpus", type=_int_list, help="GPU counts to compare, e.g. 8,16,32,64 (required)")
    p.add_argument("--micro-batch", type=int, help="sequences (examples) per GPU per micro-batch (required)")
    p.add_argument("--accumulation", type=int, default=1, help="micro-batches per step (default: %(default)s)")
    p.add_argument("--seq-len", type=int, default=None,
                   help="tokens per sequence (default: the profile's tokens_per_example, else 2048; a value "
                   "that disagrees with the profile's is refused; not with --unit examples)")
    p.add_argument("--unit", choices=("sequences", "examples", "tokens"), default="sequences",
                   help="how batch sizes are shown; 'examples' is for non-sequence data: --tokens and "
                   "--tokens-per-sec then count examples, and --seq-len does not go with it (default: %(default)s)")
    crit = p.add_mutually_exclusive_group()
    crit.add_argument("--b-crit", type=float, help="critical batch size (or B_noise) in sequences (examples)")
    crit.add_argument("--b-crit-tokens", type=float, help="critical batch size in tokens")
    crit.add_argument("--b-crit-store", help="a sweep store: use its fitted B_crit and interval (examples = "
                      "sequences); read only, never written")
    crit.add_argument("--b-crit-law", help="COEF:EXP: B_crit = COEF * D^EXP tokens (D = --tokens)")
    p.add_argument("--sweep", default=None,
                   help="with --b-crit-store: the sweep whose fit to use (required when the store holds several)")
    p.add_argument("--b-crit-ci", type=_float_pair, default=None,
                   help="LO,HI interval of B_crit, in the unit of --b-crit or --b-crit-tokens: gives ranges of "
                   "speed-up and efficiency")
    p.add_argument("--tokens", type=float, default=None,
                   help="training tokens needed at the reference batch (without it: ratios only)")
    p.add_argument("--params", type=float, default=None, help="model parameters (for FLOP-based throughput and all-reduce bytes)")
    p.add_argument("--compute", type=float, default=None, help="FLOP budget: tokens and params from the Chinchilla allocation")
    p.add_argument("--inference-tokens", type=float, default=None, help="with --compute: inference-aware allocation")
    p.add_argument("--reference-batch", type=float, default=None,
                   help="global batch (sequences) at which --tokens and --lr hold (default: that of the smallest count)")
    p.add_argument("--tokens-per-sec", type=float, default=None,
                   help="training throughput per GPU, tokens/s (not with --profile or --peak-flops)")
    p.add_argument("--profile", default=None,
                   help="a `batchlaw profile` JSON: step time per micro-batch, memory ceiling, parameters, "
                   "tokens per sequence")
    p.add_argument("--peak-flops", type=float, default=None, help="peak FLOP/s per GPU (with --mfu and --params)")
    p.add_argument("--mfu", type=float, default=0.4, help="model FLOP utilisation, in (0, 1] (default: %(default)s)")
    p.add_argument("--comm-overhead", type=float, default=0.0,
                   help="communication as a fraction of compute time, when no link is given (default: %(default)s)")
    p.add_argument("--link", choices=("nvlink", "ib400", "eth100"), default=None,
                   help="interconnect preset for the ring all-reduce: nvlink (450 GB/s), ib400 (400 Gb/s "
                   "InfiniBand), eth100 (100 Gb/s Ethernet); needs --params or --profile")
    p.add_argument("--bandwidth", type=float, default=None,
                   help="all-reduce bus bandwidth per GPU, bytes/s (overrides the preset's; needs --params or --profile)")
    p.add_argument("--latency", type=float, default=None, help="seconds per ring step (default: the preset's, else 0)")
    p.add_argument("--no-overlap", action="store_true", help="the all-reduce does not overlap backward")
    p.add_argument("--grad-bytes-per-param", type=float, default=4.0,
                   help="bytes per gradient element: 4 fp32, 2 bf16 (default: %(default)s)")
    p.add_argument("--price", type=float, default=None, help="price per GPU-hour")
    p.add_argument("--min-efficiency", type=float, default=0.7,
                   help="recommendation threshold, in (0, 1], against perfect linear scaling (default: %(default)s)")
    p.add_argument("--lr", type=float, default=None, help="learning rate at the reference batch: each row gets the rule's")
    p.add_argument("--lr-rule", choices=("sqrt", "linear"), default="sqrt",
                   help="sqrt for Adam (Malladi et al. 2022), linear for SGD (Goyal et al. 2017) (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print JSON (schema batchlaw.plan/1)")
    p.set_defaults(func=_cmd_plan)
    return p


def _check(name: str, value, *, kind: str = "pos") -> None:
    """One-line range errors for plan options ('pos': > 0; 'nonneg': >= 0; 'frac': (0, 1]; 'int': integer >= 1;
    'int0': integer >= 0)."""
    if value is None:
        return
    ok = isinstance(value, (int, float)) and math.isfinite(value)
    if kind == "int":
        ok, what = ok and value >= 1, "an integer >= 1"
    elif kind == "int0":
        ok, what = ok and value >= 0, "an integer >= 0"
    elif kind == "nonneg":
        ok, what = ok and value >= 0, "a finite number >= 0"
    elif kind == "frac":
        ok, what = ok and 0 < value <= 1, "in (0, 1]"
    else:
        ok, what = ok and value > 0, "a finite number > 0"
    if not ok:
        raise ValueError(f"The '{name}' option must be {what}. Got {value!r} instead.")


def _b_crit_from_store(path: str, sweep: str | None) -> tuple[float, tuple[float, float], str]:
    """``(B_crit, interval, sweep name)`` from a sweep store, opened read-only (the file is never written)."""
    from ..sweep.analysis import analyze_sweep
    from ..sweep.store import TrialStore

    if not Path(path).is_file():
        raise ValueError(f"The store {path!r} does not exist or is not a file.")
    with TrialStore(path, readonly=True) as store:
        sweeps = store.sweeps()
        if not sweeps:
            raise ValueError(f"The store {path!r} holds no sweep: --b-crit-store reads a sweep's B_crit fit.")
        names = ", ".join(map(repr, sweeps))
        if sweep is None and len(sweeps) > 1:
            raise ValueError(f"The store {path!r} holds {len(sweeps)} sweeps ({names}): name the one to use with "
                             "--sweep NAME.")
        if sweep is not None and sweep not in sweeps:
            raise ValueError(f"The '--sweep' option names no sweep of {path!r}. Got {sweep!r}; it holds {names}.")
        name = sweep if sweep is not None else next(iter(sweeps))
        analysis = analyze_sweep(name, sweeps[name], store.trials(name))
    if analysis.fit is None:
        raise ValueError(f"The sweep {name!r} in {path!r} does not support a B_crit fit: {analysis.fit_error}")
    return analysis.fit.b_crit, tuple(analysis.fit.b_crit_ci), name


def _seq_len(args, profile) -> tuple[int, str]:
    """Tokens per example and where that number came from; a value given twice must agree."""
    from_profile = None if profile is None else profile.tokens_per_example
    if args.unit == "examples":
        if args.seq_len not in (None, 1):
            raise ValueError(f"The '--seq-len' option cannot go with --unit examples: there --tokens and "
                             f"--tokens-per-sec count examples, not tokens. Got --seq-len {args.seq_len}: for "
                             f"sequences of {args.seq_len} tokens use --unit sequences (or tokens); for data that "
                             "are not sequences drop --seq-len.")
        return 1, "--unit examples"
    if args.seq_len is not None:
        if from_profile is not None and args.seq_len != from_profile:
            raise ValueError(f"The '--seq-len' option ({args.seq_len}) disagrees with the profile {args.profile!r}, "
                             f"measured at {from_profile} tokens per example: drop --seq-len, or profile at "
                             f"{args.seq_len} tokens.")
        return args.seq_len, "--seq-len"
    if from_profile is not None:
        return from_profile, "the profile"
    return 2048, "the default"


def _check_allocation(args, chosen: dict, params: float | None, profile) -> None:
    """``--compute`` allocates N parameters and D tokens: a model size given beside it (``--profile``,
    ``--params``) must be the allocation's (within 1%), else the plan would time one model and train
    another for the other's tokens. Refused by name, with the tokens the budget buys for the given model.
    (``--tokens`` beside ``--compute`` replaces the allocation's D, as documented.)"""
    law = "the inference-aware allocation" if args.inference_tokens is not None else "the Chinchilla allocation"
    head = (f"The '--compute' option ({args.compute:g} FLOPs) gives, by {law} (Epoch AI 2024 law), "
            f"N = {fmt_num(chosen['params'])} parameters and D = {fmt_num(chosen['tokens'])} tokens")
    if params is not None and abs(params - chosen["params"]) > 0.01 * chosen["params"]:
        given = (f"the profile {args.profile!r} measured a model of {profile.parameters:,} parameters"
                 if args.params is None else f"--params is {args.params:g}")
        raise ValueError(f"{head}, but {given}: the plan would time one model and train another. For that model "
                         f"drop --compute and give --tokens (the budget buys {fmt_num(args.compute / (6 * params))} "
                         f"tokens at C = 6 N D), or plan the allocation's model "
                         f"({'profile it' if args.params is None else 'drop --params'}).")


def _cmd_plan(args) -> int:
    from ..fit import EPOCH_2024, compute_optimal, inference_optimal
    from ..plan import get_link, load_profile, plan_run, throughput_from_flops

    if args.gpus is None or args.micro_batch is None:
        raise ValueError("`batchlaw plan` needs --gpus and --micro-batch (or use `batchlaw plan serve` for serving).")
    if all(v is None for v in (args.b_crit, args.b_crit_tokens, args.b_crit_store, args.b_crit_law)):
        raise ValueError("`batchlaw plan` needs one of --b-crit, --b-crit-tokens, --b-crit-store, --b-crit-law.")
    for g in args.gpus:
        _check("--gpus", g, kind="int")
    for name, kind in (("micro_batch", "int"), ("accumulation", "int"), ("seq_len", "int"), ("b_crit", "pos"),
                       ("b_crit_tokens", "pos"), ("tokens", "pos"), ("params", "pos"), ("compute", "pos"),
                       ("inference_tokens", "nonneg"), ("reference_batch", "pos"), ("tokens_per_sec", "pos"),
                       ("peak_flops", "pos"), ("mfu", "frac"), ("comm_overhead", "nonneg"), ("bandwidth", "pos"),
                       ("latency", "nonneg"), ("grad_bytes_per_param", "pos"), ("price", "nonneg"),
                       ("min_efficiency", "frac"), ("lr", "pos")):
        _check("--" + name.replace("_", "-"), getattr(args, name), kind=kind)
    if args.b_crit_ci is not None:
        for v in args.b_crit_ci:
            _check("--b-crit-ci", v)
    if args.sweep is not None and args.b_crit_store is None:
        raise ValueError("The '--sweep' option goes with --b-crit-store (it names the store's sweep to read).")
    throughputs = [o for o, v in (("--tokens-per-sec", args.tokens_per_sec), ("--peak-flops", args.peak_flops),
                                  ("--profile", args.profile)) if v is not None]
    if len(throughputs) > 1:
        raise ValueError(f"{' and '.join(throughputs)} each set the throughput: give one of them (a profile's "
                         "measured step times, or tokens/s, or peak FLOP/s with --mfu).")
    profile = load_profile(args.profile) if args.profile else None
    seq_len, seq_len_source = _seq_len(args, profile)
    if profile is not None and args.params is not None and abs(args.params - profile.parameters) > 0.01 * profile.parameters:
        raise ValueError(f"The '--params' option ({args.params:g}) disagrees with the profile {args.profile!r}, "
                         f"measured on a model of {profile.parameters:,} parameters: drop --params, or profile the "
                         "model you plan.")

    alloc = infer = None
    tokens = args.tokens
    params = args.params if args.params is not None else (None if profile is None else profile.parameters)
    if args.inference_tokens is not None and not args.compute:
        raise ValueError("The '--inference-tokens' option goes with --compute (the inference-aware allocation of a "
                         "FLOP budget). Add --compute, or drop it.")
    if args.compute:
        alloc = compute_optimal(args.compute, EPOCH_2024)
        if args.inference_tokens is not None:
            infer = inference_optimal(args.compute, args.inference_tokens, EPOCH_2024)
        chosen = infer or alloc
        _check_allocation(args, chosen, params, profile)
        tokens = chosen["tokens"] if tokens is None else tokens
        params = chosen["params"] if params is None else params
    b_crit_ci = sweep = None
    if args.b_crit is not None:
        b_crit, b_crit_ci = args.b_crit, args.b_crit_ci
    elif args.b_crit_tokens is not None:
        b_crit = args.b_crit_tokens / seq_len
        b_crit_ci = None if args.b_crit_ci is None else tuple(v / seq_len for v in args.b_crit_ci)
    elif args.b_crit_law is not None:
        if tokens is None:
            raise ValueError("--b-crit-law needs --tokens (or --compute): B_crit depends on the data budget D.")
        try:
            coef, exp = (float(v) for v in args.b_crit_law.split(":"))
        except ValueError:
            raise ValueError(f"--b-crit-law must be COEF:EXP, e.g. 0.58:0.571. Got {args.b_crit_law!r}.") from None
        if not (math.isfinite(coef) and coef > 0 and math.isfinite(exp)):
            raise ValueError(f"The '--b-crit-law' option must be COEF:EXP with COEF > 0 and EXP finite. Got {args.b_crit_law!r} instead.")
        try:
            b_crit = coef * tokens**exp / seq_len
        except OverflowError:
            b_crit = math.inf
        if not (math.isfinite(b_crit) and b_crit > 0):
            raise ValueError(f"The '--b-crit-law' option gives B_crit = {b_crit:g} sequences at D = {tokens:g} tokens: "
                             f"not a finite number > 0. Got {args.b_crit_law!r}; check COEF and EXP.")
        b_crit_ci = args.b_crit_ci
    else:
        b_crit, b_crit_ci, sweep = _b_crit_from_store(args.b_crit_store, args.sweep)
        if args.b_crit_ci is not None:
            b_crit_ci = args.b_crit_ci
    option = next(o for o in ("--b-crit", "--b-crit-tokens", "--b-crit-law", "--b-crit-store")
                  if getattr(args, o[2:].replace("-", "_")) is not None)
    if not math.isfinite(b_crit * seq_len):
        raise ValueError(f"The '{option}' option gives B_crit = {b_crit:g} sequences, which is {b_crit * seq_len:g} "
                         f"tokens at {seq_len} tokens per sequence: give a finite critical batch size.")
    tps = args.tokens_per_sec
    if tps is None and args.peak_flops is not None:
        if params is None:
            raise ValueError("--peak-flops needs --params (throughput = peak * mfu / (6 N) tokens/s).")
        tps = throughput_from_flops(args.peak_flops, args.mfu, params)
    grad_bytes = bw = None
    latency = args.latency or 0.0
    if args.link is not None or args.bandwidth is not None:
        if params is None:
            raise ValueError("--link/--bandwidth need --params (or --profile) to size the all-reduce.")
        link = get_link(args.link) if args.link else None
        bw = args.bandwidth if args.bandwidth is not None else link.bus_bandwidth
        latency = args.latency if args.latency is not None else (link.latency_s if link else 0.0)
        grad_bytes = params * args.grad_bytes_per_param
    plan = plan_run(gpus=list(args.gpus), b_crit=b_crit, tokens=tokens, seq_len=seq_len,
                    micro_batch=args.micro_batch, accumulation=args.accumulation,
                    reference_batch=args.reference_batch, tokens_per_sec_per_gpu=tps, profile=profile,
                    comm_overhead=args.comm_overhead, grad_bytes=grad_bytes, bandwidth_bytes_per_s=bw,
                    latency_s=latency, overlap=not args.no_overlap, price_per_gpu_hour=args.price,
                    min_efficiency=args.min_efficiency, b_crit_ci=b_crit_ci, lr=args.lr, lr_rule=args.lr_rule,
                    unit=args.unit)
    if args.json:
        source = {"option": option} if sweep is None else {"option": option, "store": args.b_crit_store, "sweep": sweep}
        out = {"schema": "batchlaw.plan/1", **plan.to_dict(), "seq_len_source": seq_len_source, "b_crit_source": source}
        if grad_bytes is not None:
            out["all_reduce"] = {"grad_bytes": grad_bytes, "bus_bandwidth_bytes_per_s": bw, "latency_s": latency,
                                 "overlap": not args.no_overlap, "link": args.link}
        if alloc:
            out["compute_optimal"] = alloc
        if infer:
            out["inference_aware"] = infer
        print(json.dumps(out, indent=2, default=float))
        return 0
    unit_word = "examples" if args.unit == "examples" else "sequences"
    head = f"B_crit = {fmt_num(b_crit)} {unit_word}"
    if args.unit != "examples":
        src = {"the default": ", the default --seq-len", "the profile": ", the profile's"}.get(seq_len_source, "")
        head += f" ({fmt_num(b_crit * seq_len)} tokens at {seq_len:,} tokens per sequence{src})"
    if sweep is not None:
        head += f" from the fit of sweep {sweep!r} in {args.b_crit_store}"
    if b_crit_ci is not None:
        head += f", interval {fmt_num(b_crit_ci[0])} to {fmt_num(b_crit_ci[1])} {unit_word}"
    if plan.s_min is not None:
        head += f"; S_min = {fmt_num(plan.s_min)} steps; {fmt_num(tokens)} {'examples' if args.unit == 'examples' else 'tokens'} at the reference batch"
    else:
        head += "; no --tokens: steps and hours are not computed, the ratios below need neither"
    print(head)
    if alloc:
        print(f"compute-optimal for {args.compute:.3g} FLOPs (Epoch AI 2024 law): N = {fmt_num(alloc['params'])}, "
              f"D = {fmt_num(alloc['tokens'])} ({alloc['tokens_per_param']:.1f} tokens/param)")
    if infer:
        print(f"inference-aware ({args.inference_tokens:.3g} inference tokens): N = {fmt_num(infer['params'])}, "
              f"D = {fmt_num(infer['tokens'])}; total compute {infer['total_compute']:.3g} vs "
              f"{infer['chinchilla_total_compute']:.3g} FLOPs")
    print(plan.table())
    for line, d in zip(plan.doubling_lines(), plan.doubling):
        print(line)
        r0 = next(r for r in plan.rows if r.gpus == d["from"])
        if not d["worth_it"] and 2 * r0.global_batch > b_crit and r0.micro_batch % 2 == 0:
            print(f"  alternative: {d['to']} GPUs at micro-batch {r0.micro_batch // 2} keep the global batch at "
                  f"{r0.global_batch:,}: the same steps, up to 2x faster if each GPU keeps its throughput at the "
                  "smaller micro-batch (a profile says whether it does).")
    if args.lr is not None:
        rule = "square-root rule (Adam)" if args.lr_rule == "sqrt" else "linear rule (SGD)"
        print("learning rate (" + rule + "): " + ", ".join(f"{r.gpus} GPUs {r.lr:.3g}" for r in plan.rows))
    for note in plan.notes:
        print(f"note: {note}")
    print(f"recommendation: {plan.reason}")
    return 0


_MAX_REQUESTS = 10_000_000


def _add_serve_parser(sub) -> None:
    p = sub.add_parser(
        "serve", help="serving: dynamic-batcher settings and replicas that meet a latency SLO at least cost",
        description="Simulates a dynamic batcher (max batch, max queue delay, replicas sharing one queue) on "
        "Poisson or trace arrivals with a measured forward latency L(b), and finds the fewest replicas and the "
        "settings that meet the p50/p99 SLO. A profile with a 'serving' block (`batchlaw profile serve`) adds a real "
        "server's measured overhead: busy time per batch and per request, a fixed delay and jitter per request. "
        "With request lengths: padding waste per bucket boundaries, and "
        "recommended boundaries. Times in seconds unless the option says ms.",
    )
    lat = p.add_mutually_exclusive_group(required=True)
    lat.add_argument("--profile", help="a `batchlaw profile` JSON with forward latency vs batch")
    lat.add_argument("--latency-csv", help="CSV with columns batch,latency_s")
    arr = p.add_mutually_exclusive_group(required=True)
    arr.add_argument("--rate", type=float, help="Poisson arrival rate, requests/s")
    arr.add_argument("--trace", help="CSV of arrivals: column arrival_s (and optional length, tokens)")
    p.add_argument("--requests", type=int, default=None,
                   help="requests simulated with --rate, at most 10,000,000 (default: 100,000)")
    p.add_argument("--seed", type=int, default=None, help="seed of the Poisson arrivals, >= 0 (default: 0)")
    p.add_argument("--slo-p50-ms", type=float, default=None, help="p50 latency target, ms")
    p.add_argument("--slo-p99-ms", type=float, default=None, help="p99 latency target, ms")
    p.add_argument("--max-batches", type=_int_list, default=None,
                   help="candidate max batch sizes (default: powers of two up to the profile's largest)")
    p.add_argument("--max-delays-ms", default=None,
                   help="candidate max queue delays, ms, comma-separated (default: 0 and 5-40%% of the tightest SLO)")
    p.add_argument("--max-replicas", type=int, default=64, help="most replicas tried (default: %(default)s)")
    p.add_argument("--price", type=float, default=None, help="price per replica-hour, for the cost")
    p.add_argument("--delay-from", choices=("arrival", "pickup"), default=None,
                   help="when the max queue delay starts: at the oldest request's arrival (Triton) or when a free "
                   "replica picks it up (Ray Serve's @serve.batch) (default: the profile's serving block, else arrival)")
    p.add_argument("--no-overhead", action="store_true",
                   help="ignore the profile's measured serving overhead (the bare forward curve L(b))")
    p.add_argument("--buckets", type=_int_list, default=None,
                   help="bucket boundaries (tokens) whose padding waste to report (needs lengths in --trace)")
    p.add_argument("--recommend-buckets", type=int, default=None,
                   help="recommend this many bucket boundaries for the trace's lengths")
    p.add_argument("--json", action="store_true", help="print JSON (schema batchlaw.serve/1)")
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args) -> int:
    from .._csv import read_columns, read_header
    from ..plan import SLO, LatencyCurve, load_profile, padding_waste, poisson_arrivals, recommend_buckets
    from ..plan import recommend_serving
    from ..plan.profile_data import serving_variation_note

    for name, kind in (("rate", "pos"), ("requests", "int"), ("slo_p50_ms", "pos"), ("slo_p99_ms", "pos"),
                       ("max_replicas", "int"), ("price", "nonneg"), ("recommend_buckets", "int"), ("seed", "int0")):
        _check("--" + name.replace("_", "-"), getattr(args, name), kind=kind)
    if args.requests is not None and args.requests > _MAX_REQUESTS:
        raise ValueError(f"The '--requests' option must be at most {_MAX_REQUESTS:,} (each setting simulates them "
                         f"all; a p99 settles long before). Got {args.requests:,} instead.")
    for opt, value in (("--seed", args.seed), ("--requests", args.requests)):
        if args.rate is None and value is not None:
            raise ValueError(f"The '{opt}' option goes with --rate (Poisson arrivals); a --trace gives its own "
                             "arrivals. Drop it or use --rate.")
    for b in args.max_batches or ():
        _check("--max-batches", b, kind="int")
    for b in args.buckets or ():
        _check("--buckets", b, kind="int")
    if args.slo_p50_ms is None and args.slo_p99_ms is None:
        raise ValueError("`batchlaw plan serve` needs an SLO: --slo-p99-ms and/or --slo-p50-ms.")
    slo = SLO(None if args.slo_p50_ms is None else args.slo_p50_ms / 1e3,
              None if args.slo_p99_ms is None else args.slo_p99_ms / 1e3)
    delays = None
    if args.max_delays_ms is not None:
        try:
            delays = [float(v) / 1e3 for v in args.max_delays_ms.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"--max-delays-ms must be comma-separated numbers. Got {args.max_delays_ms!r}.") from None
        for d in delays:
            _check("--max-delays-ms", d, kind="nonneg")
        if not delays:
            raise ValueError(f"The '--max-delays-ms' option must list at least one delay in ms, e.g. 0,5,10. "
                             f"Got {args.max_delays_ms!r} instead.")
    overhead, delay_from, notes = None, args.delay_from or "arrival", []
    if args.profile:
        prof = load_profile(args.profile)
        curve, source = prof.forward_latency(), args.profile
        if not args.no_overhead:
            overhead = prof.serving_overhead()
        note = serving_variation_note(prof.serving) if overhead is not None else None
        if note:
            notes.append(note)
        if overhead is not None and args.delay_from is None:
            delay_from = str(prof.serving.get("delay_from", "arrival"))
            if delay_from not in ("arrival", "pickup"):
                raise ValueError(f"The profile {args.profile!r} has serving delay_from = {delay_from!r}, not 'arrival' "
                                 "or 'pickup'. Measure it again with `batchlaw profile serve`.")
    else:
        if args.no_overhead:
            raise ValueError("--no-overhead goes with --profile (a --latency-csv has no serving overhead).")
        cols = read_columns(args.latency_csv, ["batch", "latency_s"], numeric=["batch", "latency_s"])
        curve, source = LatencyCurve(cols["batch"], cols["latency_s"]), args.latency_csv
    lengths = None
    if args.rate is not None:
        arrivals, arrival_desc = poisson_arrivals(args.rate, args.requests or 100_000, args.seed or 0), f"Poisson, {args.rate:g}/s"
    else:
        want = ["arrival_s"] + (["length"] if "length" in read_header(args.trace) else [])
        cols = read_columns(args.trace, want, numeric=want)
        arrivals, arrival_desc = cols["arrival_s"], f"trace {args.trace}"
        lengths = cols.get("length")
        if len(arrivals) < 2 or min(arrivals) == max(arrivals):
            raise ValueError(f"The '--trace' file {args.trace!r} has no arrival rate: {len(arrivals)} request(s), all "
                             f"at {arrivals[0]:g} s. Give a trace of a load (at least 2 arrivals at different times), "
                             "or --rate.")
    if (args.buckets or args.recommend_buckets) and lengths is None:
        raise ValueError("--buckets/--recommend-buckets need request lengths: a --trace CSV with a 'length' column.")
    rec = recommend_serving(arrivals, curve, slo, max_batches=args.max_batches, delays=delays,
                            max_replicas=args.max_replicas, overhead=overhead, delay_from=delay_from)
    best = rec["best"]
    out = {"schema": "batchlaw.serve/1", **best.to_dict(), "slo": {"p50_s": slo.p50_s, "p99_s": slo.p99_s},
           "arrivals": arrival_desc, "latency_source": source, "latency_curve": curve.to_dict(),
           "n_settings_simulated": len(rec["evaluated"]) + rec["stopped_early"],
           "n_settings_stopped_early": rec["stopped_early"], "delay_from": delay_from,
           "overhead": None if overhead is None else overhead.to_dict(), "notes": notes,
           "cost_per_hour": None if args.price is None else best.replicas * args.price}
    if args.buckets:
        out["padding"] = padding_waste(lengths, args.buckets)
    if args.recommend_buckets:
        out["recommended_buckets"] = recommend_buckets(lengths, args.recommend_buckets)
    if args.json:
        print(json.dumps(out, indent=2, default=float))
        return 0
    print(f"arrivals: {arrival_desc} ({best.n_requests:,} requests, {best.offered_rate_per_s:.4g}/s); "
          f"latency curve from {source} (batch 1 to {curve.max_batch})")
    print(f"recommendation: {best.replicas} replica(s), max batch {best.max_batch}, "
          f"max queue delay {best.max_queue_delay_s * 1e3:.3g} ms (counted from {delay_from})")
    print(f"  p50 {best.p50_latency_s * 1e3:.3g} ms, p99 {best.p99_latency_s * 1e3:.3g} ms, mean "
          f"{best.mean_latency_s * 1e3:.3g} ms (SLO: p50 <= {_ms(slo.p50_s)}, p99 <= {_ms(slo.p99_s)}); "
          f"throughput {best.throughput_per_s:.4g}/s, mean batch {best.mean_batch:.2f}, "
          f"utilisation {best.utilisation:.0%}")
    if overhead is not None:
        j = overhead.jitter_s
        jit = "" if j is None else f", delay jitter p99 {j[99] * 1e3:+.3g} ms"
        bj = overhead.busy_jitter_s
        jit += "" if bj is None else f", busy-time jitter p99 {bj[99] * 1e3:+.3g} ms a batch"
        print(f"  server overhead from the profile: {overhead.batch_s * 1e3:.3g} ms per batch + "
              f"{overhead.per_request_s * 1e3:.3g} ms per request busy, {overhead.fixed_s * 1e3:.3g} ms fixed delay{jit}, "
              f"timer lateness {overhead.timer_lateness_s * 1e3:.3g} ms")
    if out["cost_per_hour"] is not None:
        print(f"  cost: {fmt_num(out['cost_per_hour'])} per hour")
    early = (f", {rec['stopped_early']} of them stopped once certain to miss the SLO or the best p99"
             if rec["stopped_early"] else "")
    print(f"  ({out['n_settings_simulated']} settings simulated{early})")
    for note in notes:
        print(f"note: {note}")
    if "padding" in out:
        pw = out["padding"]
        print(f"padding with boundaries {', '.join(f'{b:g}' for b in pw['boundaries'])}: {pw['waste']:.1%} of tokens")
    if "recommended_buckets" in out:
        pw = out["recommended_buckets"]
        print(f"recommended {len(pw['boundaries'])} boundaries: {', '.join(f'{b:g}' for b in pw['boundaries'])} "
              f"({pw['waste']:.1%} padding)")
    return 0


def _ms(v):
    return "-" if v is None else f"{v * 1e3:.3g} ms"
