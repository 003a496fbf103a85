"""``batchlaw profile``: step time and memory vs micro-batch, forward latency; ``profile allreduce``."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ._common import _int_list, _key_value, check_output_file

_PLOT_FORMATS = (".png", ".pdf", ".svg")


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "profile", help="step time and peak memory vs micro-batch, forward latency vs batch (JSON for `plan`)",
        description="Times a training step (forward, backward, optimizer) and records peak memory for "
        "micro-batches 1, 2, 4, ... until out of memory (caught; the whole curve is kept), then forward latency vs "
        "batch for serving. Writes a batchlaw.profile/1 JSON that `batchlaw plan --profile` and "
        "`batchlaw plan serve --profile` read. `batchlaw profile allreduce --help`: all-reduce timings; "
        "`batchlaw profile serve --help`: the overhead of a real batching server.",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--workload", default=None, help="built-in workload: linreg, bytemlp or bytegpt (default: bytegpt)")
    src.add_argument("--model", default=None,
                     help="your model: MODULE:FACTORY, a function returning (model, make_batch); make_batch(b) "
                     "returns one batch of b examples")
    p.add_argument("--workload-arg", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="keyword argument of the workload, e.g. size=gpt2 (repeatable)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto", help="(default: %(default)s)")
    p.add_argument("--max-batch", type=int, default=1024, help="largest micro-batch tried (default: %(default)s)")
    p.add_argument("--forward-max-batch", type=int, default=None, help="largest forward batch (default: --max-batch)")
    p.add_argument("--checkpointing", action="store_true", help="activation checkpointing of nn.ModuleList blocks")
    p.add_argument("--no-forward", action="store_true", help="skip the forward-latency (serving) curve")
    p.add_argument("--repeats", type=int, default=3, help="timed steps per size, the fastest kept (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per size (default: %(default)s)")
    p.add_argument("--time-budget", type=float, default=600.0,
                   help="seconds after which no new size is started; the first size is always measured (default: "
                   "%(default)s)")
    p.add_argument("--out", default="profile.json", help="JSON written as it goes (default: %(default)s)")
    p.add_argument("--resume", action="store_true",
                   help="keep the sizes already measured in --out (same model, device, checkpointing) and run the rest")
    p.add_argument("--plot", default=None,
                   help="also write a figure of throughput and memory vs micro-batch: a .png, .pdf or .svg path")
    p.add_argument("--json", action="store_true", help="print the profile JSON (schema batchlaw.profile/1)")
    p.set_defaults(func=_cmd_profile)
    psub = p.add_subparsers(dest="profile_command", metavar="SUBCOMMAND")
    psub.required = False
    a = psub.add_parser("allreduce", help="measure torch.distributed all-reduce and fit the ring model",
                        description="Times all-reduce (gloo on CPU processes, or nccl on GPUs) for each size and "
                        "world size, fits the ring model t = 2(W-1) latency + 2(W-1)/W n / busbw, and prints "
                        "measured vs modelled times.")
    a.add_argument("--world-sizes", type=_int_list, default=(2,), help="processes per measurement (default: 2)")
    a.add_argument("--sizes-mb", default="1,2,4,8", help="message sizes in MiB, comma-separated (default: %(default)s)")
    a.add_argument("--backend", choices=("gloo", "nccl"), default="gloo", help="(default: %(default)s)")
    a.add_argument("--repeats", type=int, default=15, help="timed calls per size (default: %(default)s)")
    a.add_argument("--json", action="store_true", help="print JSON (schema batchlaw.allreduce/1)")
    a.set_defaults(func=_cmd_allreduce)
    s = psub.add_parser(
        "serve", help="measure what a real batching server adds to the forward latency (for `plan serve`)",
        description="Times a running HTTP batching server (e.g. Ray Serve's @serve.batch) on this machine: for each "
        "batch size of the profile's forward curve, the throughput with 3 x b requests always in flight gives the "
        "busy time of a full batch S(b); lone requests give the round trip. Fits S(b) - L(b) = o_0 + o_1 b (seconds "
        "per batch and per request), the fixed delay c = lone round trip - S(1) and its jitter (its spread), the "
        "busy-time jitter (the spread of the times between completions at max batch 1, saturated), and "
        "adds them to the profile as its 'serving' block, which `batchlaw plan serve --profile` uses.")
    s.add_argument("--url", required=True, help="the server's endpoint, http://host:port/path")
    s.add_argument("--body", required=True, help="JSON text of one request, or @FILE to read it from a file")
    s.add_argument("--configure-url", required=True,
                   help="a route of the server that sets its batcher from a POST of {\"max_batch_size\": b, "
                   "\"batch_wait_timeout_s\": s} (Ray Serve: set_max_batch_size, set_batch_wait_timeout_s)")
    s.add_argument("--profile", required=True, help="the `batchlaw profile` JSON with the forward curve L(b)")
    s.add_argument("--max-batch", type=int, default=None,
                   help="largest batch size measured (default: the profile's largest forward batch)")
    s.add_argument("--lone", type=int, default=200, help="lone requests timed (default: %(default)s)")
    s.add_argument("--requests-per-batch", type=int, default=40,
                   help="requests per measured batch size, as a multiple of it (at least 20; default: %(default)s)")
    s.add_argument("--rounds", type=int, default=3,
                   help="passes over the batch sizes; each size's busy time is the median of the passes "
                   "(default: %(default)s)")
    s.add_argument("--delay-from", choices=("pickup", "arrival"), default="pickup",
                   help="when the server's batch delay starts: when its batching loop picks up the oldest request "
                   "(Ray Serve's @serve.batch) or at its arrival (default: %(default)s)")
    s.add_argument("--timeout", type=float, default=30.0, help="seconds a request may take (default: %(default)s)")
    s.add_argument("--out", default=None, help="profile JSON written with the 'serving' block (default: --profile)")
    s.add_argument("--json", action="store_true", help="print the serving block (schema batchlaw.serving_overhead/1)")
    s.set_defaults(func=_cmd_serve)


def _check_profile_args(args) -> tuple[Path, dict | None]:
    """Every option and path checked before torch is imported or a model built: ``(out, resume_from)``."""
    from ..plan import check_profile

    for name in ("max_batch", "repeats"):
        v = getattr(args, name)
        if v < 1:
            raise ValueError(f"The '--{name.replace('_', '-')}' option must be an integer >= 1. Got {v} instead.")
    if args.forward_max_batch is not None and args.forward_max_batch < 1:
        raise ValueError(f"The '--forward-max-batch' option must be an integer >= 1. Got {args.forward_max_batch} instead.")
    if args.warmup < 0:
        raise ValueError(f"The '--warmup' option must be an integer >= 0. Got {args.warmup} instead.")
    if not (math.isfinite(args.time_budget) and args.time_budget > 0):
        raise ValueError(f"The '--time-budget' option must be a finite number of seconds > 0. Got {args.time_budget} instead.")
    out = check_output_file("--out", args.out)
    if args.plot is not None:
        plot = check_output_file("--plot", args.plot)
        if plot.suffix.lower() not in _PLOT_FORMATS:
            raise ValueError(f"The '--plot' path {args.plot!r} must end in .png, .pdf or .svg. "
                             f"Got {plot.suffix or 'no suffix'!r} instead.")
        if plot.resolve() == out.resolve():
            raise ValueError(f"The '--plot' path {args.plot!r} is the '--out' path: the figure would overwrite the "
                             "profile. Choose another path.")
    previous = None
    if args.resume and out.is_file():
        try:
            previous = json.loads(out.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"Cannot resume from {args.out!r}: not JSON ({err}).") from None
        previous = check_profile(previous, args.out)
    return out, previous


def _cmd_profile(args) -> int:
    out, previous = _check_profile_args(args)
    import torch

    from ..profile import profile_hardware, save_profile, user_target, workload_target

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("The '--device' option is 'cuda' but no CUDA device is available. Use --device cpu.")
    if args.model:
        if args.workload_arg:
            raise ValueError("--workload-arg goes with --workload, not --model.")
        target = user_target(args.model)
    else:
        target = workload_target(args.workload or "bytegpt", device=device, **dict(args.workload_arg))
    prof = profile_hardware(target, device=device, resume_from=previous, max_batch=args.max_batch, forward_max_batch=args.forward_max_batch,
                            checkpointing=args.checkpointing, forward=not args.no_forward, repeats=args.repeats,
                            warmup=args.warmup, time_budget_s=args.time_budget,
                            on_row=lambda p: save_profile(p, out))
    if args.plot:
        from ..report.profile import plot_profile

        plot_profile(prof, args.plot)
    if args.json:
        print(json.dumps(prof, indent=2))
        return 0
    print(f"{prof['name']} on {prof['device_name']}: {prof['parameters']:,} parameters"
          + (", activation checkpointing" if prof["checkpointing"] else ""))
    print(f"{'micro-batch':>11} {'step (ms)':>10} {'examples/s':>11} {'peak MiB':>9}")
    for r in prof["train"]:
        if r["status"] == "ok":
            mem = "-" if r["peak_memory_bytes"] is None else f"{r['peak_memory_bytes'] / 2**20:.0f}"
            print(f"{r['micro_batch']:>11} {r['step_time_s'] * 1e3:>10.3g} {r['throughput_per_s']:>11.4g} {mem:>9}")
        else:
            print(f"{r['micro_batch']:>11} {'out of memory':>10}")
    if prof["forward"]:
        print("forward latency: " + ", ".join(f"b={r['batch']} {r['latency_s'] * 1e3:.3g} ms" if r["status"] == "ok"
                                              else f"b={r['batch']} out of memory" for r in prof["forward"]))
    stop = {"oom": "out of memory", "max_batch": f"--max-batch {args.max_batch} reached",
            "time_budget": "the time budget ran out"}.get(prof["stopped_by"], prof["stopped_by"])
    print(f"largest micro-batch that fitted: {prof['max_micro_batch']} (stopped: {stop}); written to {out}"
          + (f"; plot {args.plot}" if args.plot else ""))
    return 0


def _sizes_bytes(text: str, world_sizes) -> list[int]:
    """``--sizes-mb`` as bytes: finite positive sizes, none repeated, at least two (the fit has a latency and
    a bandwidth), and buffers that fit in this machine's memory on every rank of the largest world."""
    sizes = []
    for v in (t.strip() for t in text.split(",")):
        if not v:
            continue
        try:
            mb = float(v)
        except ValueError:
            raise ValueError(f"The '--sizes-mb' option must be comma-separated numbers of MiB. Got {text!r} "
                             f"({v!r} is not a number).") from None
        n = int(mb * 2**20) if math.isfinite(mb) else 0
        if n < 4:
            raise ValueError(f"The '--sizes-mb' option must list finite sizes of at least 4 bytes "
                             f"({4 / 2**20:.2g} MiB). Got {v!r} in {text!r}.")
        if n in sizes:
            raise ValueError(f"The '--sizes-mb' option lists {v} MiB twice. Got {text!r}: list each size once.")
        sizes.append(n)
    if len(sizes) < 2:
        raise ValueError(f"The '--sizes-mb' option must list at least 2 different sizes: the ring model has a latency "
                         f"and a bandwidth to fit. Got {text!r}; e.g. --sizes-mb 1,8.")
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else None
    need = 2 * sum(sizes) * max(world_sizes)  # each rank holds every buffer, and a copy in flight
    if memory and need > memory:
        raise ValueError(f"The '--sizes-mb' option asks for {need / 2**30:.3g} GiB of buffers ({max(world_sizes)} ranks "
                         f"x 2 x {sum(sizes) / 2**20:g} MiB) on a machine of {memory / 2**30:.3g} GiB. Got {text!r}: "
                         "time smaller sizes.")
    return sizes


def _cmd_allreduce(args) -> int:
    for w in args.world_sizes:
        if w < 2:
            raise ValueError(f"The '--world-sizes' option must list integers >= 2. Got {w} instead.")
    if len(set(args.world_sizes)) != len(args.world_sizes):
        raise ValueError(f"The '--world-sizes' option lists a world size twice. Got {args.world_sizes}.")
    if args.repeats < 1:
        raise ValueError(f"The '--repeats' option must be an integer >= 1. Got {args.repeats} instead.")
    sizes = _sizes_bytes(args.sizes_mb, args.world_sizes)
    from ..plan import fit_link, ring_allreduce_time
    from ..profile import measure_allreduce

    rows = measure_allreduce(sizes, list(args.world_sizes), repeats=args.repeats, backend=args.backend)
    link = fit_link(rows)
    for r in rows:
        r["model_s"] = ring_allreduce_time(r["n_bytes"], r["world"], link.bus_bandwidth, link.latency_s)
        r["model_over_measured"] = r["model_s"] / r["seconds"]
    out = {"schema": "batchlaw.allreduce/1", "backend": args.backend, "fitted_link": link.to_dict(), "rows": rows}
    if args.json:
        print(json.dumps(out, indent=2, default=float))
        return 0
    print(f"ring model fitted: bus bandwidth {link.bus_bandwidth / 1e9:.3g} GB/s, latency {link.latency_s * 1e6:.3g} us "
          f"per step ({args.backend})")
    print(f"{'ranks':>5} {'MiB':>6} {'measured ms':>11} {'model ms':>9} {'model/measured':>14}")
    for r in rows:
        print(f"{r['world']:>5} {r['n_bytes'] / 2**20:>6.3g} {r['seconds'] * 1e3:>11.3g} {r['model_s'] * 1e3:>9.3g} "
              f"{r['model_over_measured']:>14.2f}")
    return 0


def _configure_by_post(url: str, timeout_s: float):
    """``configure(max_batch, delay_s)``: a POST of the batcher settings to the server's configure route."""
    import urllib.error
    import urllib.request

    def configure(max_batch: int, delay_s: float) -> None:
        body = json.dumps({"max_batch_size": int(max_batch), "batch_wait_timeout_s": float(delay_s)}).encode()
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as r:
                r.read()
        except (urllib.error.URLError, OSError) as err:
            raise ValueError(f"The '--configure-url' {url!r} did not set the batcher to max batch {max_batch}, "
                             f"delay {delay_s:g} s: {err}.") from None

    return configure


def _cmd_serve(args) -> int:
    from ..plan import check_profile
    from ..profile.serving import _check_url, measure_overhead

    for opt, url in (("--url", args.url), ("--configure-url", args.configure_url)):
        try:
            _check_url(url)
        except ValueError:
            raise ValueError(f"The '{opt}' option must be an http:// URL, e.g. http://127.0.0.1:8000/. "
                             f"Got {url!r} instead.") from None
    for name, least in (("lone", 10), ("requests_per_batch", 20), ("max_batch", 1), ("rounds", 1)):
        v = getattr(args, name)
        if v is not None and v < least:
            raise ValueError(f"The '--{name.replace('_', '-')}' option must be an integer >= {least}. Got {v} instead.")
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise ValueError(f"The '--timeout' option must be a finite number of seconds > 0. Got {args.timeout} instead.")
    body = args.body
    if body.startswith("@"):
        path = Path(body[1:])
        if not path.is_file():
            raise ValueError(f"The '--body' file {body[1:]!r} does not exist.")
        body = path.read_text(encoding="utf-8")
    try:
        json.loads(body)
    except json.JSONDecodeError as err:
        raise ValueError(f"The '--body' option must be the JSON of one request (or @FILE): {err}.") from None
    src = Path(args.profile)
    if not src.is_file():
        raise ValueError(f"The profile {args.profile!r} does not exist or is not a file. Write one with `batchlaw profile`.")
    out = check_output_file("--out", args.out or args.profile)
    try:
        data = json.loads(src.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"The profile {args.profile!r} is not JSON ({err}).") from None
    data = check_profile(data, args.profile)
    forward = {r["batch"]: r["latency_s"] for r in data["forward"] if r["status"] == "ok"
               and (args.max_batch is None or r["batch"] <= args.max_batch)}
    if len(forward) < 2:
        raise ValueError(f"The profile {args.profile!r} has forward latencies at {len(forward)} batch size(s)"
                         + (f" up to --max-batch {args.max_batch}" if args.max_batch else "")
                         + ": the overhead fit needs 2 or more. Run `batchlaw profile` with forward latency on.")
    from ..plan.profile_data import serving_variation_note

    try:
        block = measure_overhead(args.url, body, _configure_by_post(args.configure_url, args.timeout), forward,
                                 n_lone=args.lone, requests_per_batch=args.requests_per_batch, rounds=args.rounds,
                                 delay_from=args.delay_from, timeout_s=args.timeout)
    except (OSError, ConnectionError, TimeoutError) as err:  # asyncio's TimeoutError is TimeoutError (3.11+)
        raise ValueError(f"The server at '--url' {args.url!r} did not answer as it should: {type(err).__name__}: "
                         f"{str(err) or 'no answer within --timeout'}. Is it running, and does it take --body?") from None
    note = serving_variation_note(block)
    if note:
        block["notes"].append(note)
    from ..profile import save_profile

    save_profile({**data, "serving": block}, out)
    if args.json:
        print(json.dumps(block, indent=2))
        return 0
    print(f"{'batch':>5} {'L(b) ms':>8} {'busy S(b) ms':>12} {'throughput /s':>13} {'fitted S(b) ms':>14}")
    for r in block["rows"]:
        fitted = r["forward_s"] + block["batch_s"] + block["per_request_s"] * r["batch"]
        print(f"{r['batch']:>5} {r['forward_s'] * 1e3:>8.3g} {r['busy_s'] * 1e3:>12.3g} {r['throughput_per_s']:>13.4g} "
              f"{fitted * 1e3:>14.3g}")
    j = block["jitter_s"] or [0.0] * 101
    print(f"overhead: {block['batch_s'] * 1e3:.3g} ms per batch + {block['per_request_s'] * 1e3:.3g} ms per request "
          f"(busy; fit rms {block['fit_rms_s'] * 1e3:.2g} ms), fixed delay {block['fixed_s'] * 1e3:.3g} ms; delay jitter "
          f"p1 {j[1] * 1e3:+.3g} ms, p50 {j[50] * 1e3:+.3g} ms, p99 {j[99] * 1e3:+.3g} ms (lone round trip p50 "
          f"{block['lone_round_trip_s']['p50'] * 1e3:.3g} ms, {block['n_lone']} requests)")
    print(f"timer lateness: {block['timer_lateness_s'] * 1e3:.3g} ms after a max queue delay (lone requests with a "
          f"{block['probe_delay_s'] * 1e3:g} ms delay: p50 {block['lone_with_delay_round_trip_s']['p50'] * 1e3:.3g} ms)")
    bj = block["busy_jitter_s"]
    if bj is not None:
        print(f"busy-time jitter per batch (at saturation, about the mean): p1 {bj[1] * 1e3:+.3g} ms, p50 "
              f"{bj[50] * 1e3:+.3g} ms, p99 {bj[99] * 1e3:+.3g} ms")
    for note in block["notes"]:
        print(f"note: {note}")
    print(f"delay counted from {args.delay_from}; written to {out}")
    return 0
