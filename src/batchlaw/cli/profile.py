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
        "`batchlaw plan serve --profile` read. `batchlaw profile allreduce --help`: all-reduce timings.",
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
