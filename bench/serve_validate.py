"""`batchlaw plan serve` against a real batching server: predicted vs measured p50/p99/mean latency.

The server is Ray Serve's dynamic batcher (``@serve.batch``) serving a small torch MLP on this
machine's CPU (``bench/serve_app.py``), driven over HTTP on the loopback interface by batchlaw's
open-loop Poisson load generator (arrivals independent of responses, at most 512 in flight, drops
counted). The steps, as a user would run them:

1. ``batchlaw profile --model serve_app:make_model`` with one thread (what Ray gives a replica of
   ``num_cpus=1``): the forward latency ``L(b)``.
2. ``batchlaw profile serve``: the server's overhead, measured on the running server and added to
   the profile.
3. For the setting (max batch 16, max queue delay 5 ms, 1 replica) and rates from light load to near
   saturation: ``plan serve --profile ... --rate R`` with that one setting (the prediction; also with
   ``--no-overhead --delay-from arrival``, the bare model, to show the gap it closes), then the
   measured latencies of an open-loop run at ``R``.
4. ``plan serve`` recommends a setting for an SLO at one rate; it is deployed and measured there.

    PYTHONPATH=src python bench/serve_validate.py [--seconds 20] [--out bench/serve_validate.json]

Prints a Markdown table (the figures in bench/RESULTS.md) and writes the JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

MAX_BATCH, DELAY_S = 16, 0.005
LOADS = (0.2, 0.4, 0.55, 0.7, 0.85)  # the predicted utilisation of each rate
SLO_P99_MS, SLO_LOAD = 150.0, 0.5  # the recommendation: p99 <= 150 ms at the rate of predicted utilisation 0.5
WARMUP_S = 1.0  # each open-loop run's first second is left out (the batcher settles)


def _cli(argv: list[str]) -> str:
    """Run the batchlaw CLI in this process; its stdout."""
    from batchlaw.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(argv)
    if rc:
        raise RuntimeError(f"batchlaw {' '.join(argv)} exited {rc}")
    return buf.getvalue()


def _predict(profile: str, rate: float, max_batch: int, delay_s: float, bare: bool = False) -> dict:
    argv = ["plan", "serve", "--profile", profile, "--rate", f"{rate}", "--requests", "100000", "--max-batches",
            str(max_batch), "--max-delays-ms", f"{delay_s * 1e3}", "--max-replicas", "1", "--slo-p99-ms", "1e7",
            "--json"]
    if bare:
        argv += ["--no-overhead", "--delay-from", "arrival"]
    return json.loads(_cli(argv))


def _mean_batch(res) -> float:
    """Mean batch size the requests were served in (the server says it in each response)."""
    sizes = [json.loads(b)["batch"] for b in res.bodies if b is not None]
    return float(sum(sizes) / len(sizes)) if sizes else float("nan")


def _rate_at(profile: str, utilisation: float, cap: float) -> float:
    """The Poisson rate (requests/s) at which the model predicts this utilisation for the bench's setting."""
    from batchlaw.plan import load_profile, poisson_arrivals, simulate_batcher

    prof = load_profile(profile)
    curve, over = prof.forward_latency(), prof.serving_overhead()
    base = poisson_arrivals(1.0, 20_000, seed=5)
    lo, hi = 0.0, cap
    for _ in range(30):
        mid = (lo + hi) / 2
        u = simulate_batcher(base / mid, curve, max_batch=MAX_BATCH, max_queue_delay_s=DELAY_S, overhead=over,
                             delay_from="pickup").utilisation
        lo, hi = (mid, hi) if u < utilisation else (lo, mid)
    return (lo + hi) / 2


def _capacity_now(url: str, configure) -> float:
    """Throughput (requests/s) at max batch MAX_BATCH with 3 batches in flight, measured now."""
    from batchlaw.profile.serving import closed_loop

    configure(MAX_BATCH, 0.5)
    return closed_loop(url, __import__("serve_app").BODY, concurrency=3 * MAX_BATCH, n_requests=600)["throughput_per_s"]


def _load() -> float:
    return os.getloadavg()[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds of open-loop load per rate")
    ap.add_argument("--out", default=str(HERE / "serve_validate.json"))
    args = ap.parse_args()
    t_start = time.perf_counter()
    load0 = _load()
    import numpy as np

    import serve_app
    from batchlaw.plan import poisson_arrivals
    from batchlaw.profile.serving import open_loop

    work = Path(tempfile.mkdtemp(prefix="serve_validate_"))
    profile = str(work / "profile.json")
    # 1. L(b) with one thread, as in a replica
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    t = time.perf_counter()
    _cli(["profile", "--model", "serve_app:make_model", "--device", "cpu", "--max-batch", str(MAX_BATCH),
          "--repeats", "15", "--time-budget", "200", "--out", profile])
    torch.set_num_threads(threads)
    t_profile = time.perf_counter() - t
    # 2. the server, and its overhead
    t = time.perf_counter()
    url = serve_app.start()
    t_ray = time.perf_counter() - t
    t = time.perf_counter()
    configure_url = url.rstrip("/") + "/configure"
    overhead_text = _cli(["profile", "serve", "--url", url, "--body", serve_app.BODY, "--configure-url", configure_url,
                          "--profile", profile, "--lone", "150", "--requests-per-batch", "30"])
    t_overhead = time.perf_counter() - t
    print(overhead_text, flush=True)
    prof = json.loads(Path(profile).read_text())
    configure = serve_app.configurer(url)
    rows = []
    try:
        cap = _predict(profile, 1.0, MAX_BATCH, DELAY_S)["capacity_per_s"]
        # 3. predicted vs measured at each load
        configure(MAX_BATCH, DELAY_S)
        for i, load in enumerate(LOADS):
            rate = _rate_at(profile, load, cap)
            pred = _predict(profile, rate, MAX_BATCH, DELAY_S)
            bare = _predict(profile, rate, MAX_BATCH, DELAY_S, bare=True)
            arr = poisson_arrivals(rate, max(300, int(rate * args.seconds)), seed=100 + i)
            res = open_loop(url, serve_app.BODY, arr, max_in_flight=512, keep_bodies=True)
            meas = res.summary(warmup_s=WARMUP_S)
            meas["mean_batch"] = _mean_batch(res)
            rows.append({"load": load, "rate_per_s": rate, "predicted": pred, "bare": bare, "measured": meas,
                         "load_average": _load()})
            print(_row(rows[-1]), flush=True)
        # 4. the recommendation for an SLO, deployed
        rate = _rate_at(profile, SLO_LOAD, cap)
        rec = json.loads(_cli(["plan", "serve", "--profile", profile, "--rate", f"{rate}", "--requests", "100000",
                               "--slo-p99-ms", f"{SLO_P99_MS}", "--max-replicas", "1", "--json"]))
        configure(rec["max_batch"], rec["max_queue_delay_s"])
        arr = poisson_arrivals(rate, max(300, int(rate * args.seconds)), seed=999)
        meas = open_loop(url, serve_app.BODY, arr, max_in_flight=512).summary(warmup_s=WARMUP_S)
        cap_after = _capacity_now(url, configure)  # has the machine changed since the profile?
    finally:
        serve_app.stop()
    recommendation = {"rate_per_s": rate, "slo_p99_s": SLO_P99_MS / 1e3, "max_batch": rec["max_batch"],
                      "max_queue_delay_s": rec["max_queue_delay_s"], "predicted_p99_s": rec["p99_latency_s"],
                      "predicted_p50_s": rec["p50_latency_s"], "measured": meas,
                      "met": bool(meas["p99_latency_s"] <= SLO_P99_MS / 1e3)}
    wall = time.perf_counter() - t_start
    out = {"machine": f"{os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}) shared with other jobs",
           "load_average_start": load0, "load_average_end": _load(), "python": platform.python_version(),
           "torch": torch.__version__, "ray": __import__("ray").__version__, "setting": {
               "max_batch": MAX_BATCH, "max_queue_delay_s": DELAY_S, "replicas": 1},
           "capacity_per_s": cap, "capacity_after_per_s": cap_after, "forward": prof["forward"], "serving": prof["serving"], "rows": rows,
           "recommendation": recommendation, "seconds": {"profile": t_profile, "ray_start": t_ray,
                                                          "overhead": t_overhead, "total": wall}}
    Path(args.out).write_text(json.dumps(out, indent=2, default=float))
    print(_report(out))
    return 0


def _row(r: dict) -> str:
    p, b, m = r["predicted"], r["bare"], r["measured"]

    def err(key):
        return (p[key] - m[key]) / m[key]

    return (f"| {r['rate_per_s']:.1f} | {p['utilisation']:.2f} | {m['mean_batch']:.2f} / "
            f"{p['mean_batch']:.2f} | "
            f"{m['p50_latency_s'] * 1e3:.1f} / {p['p50_latency_s'] * 1e3:.1f} ({err('p50_latency_s'):+.0%}) | "
            f"{m['p99_latency_s'] * 1e3:.1f} / {p['p99_latency_s'] * 1e3:.1f} ({err('p99_latency_s'):+.0%}) | "
            f"{m['mean_latency_s'] * 1e3:.1f} / {p['mean_latency_s'] * 1e3:.1f} ({err('mean_latency_s'):+.0%}) | "
            f"{b['p50_latency_s'] * 1e3:.1f} / {b['p99_latency_s'] * 1e3:.1f} | {m['n_completed']} | {m['dropped']} | "
            f"{m['lag_p99_s'] * 1e3:.1f} | {r['load_average']:.1f} |")


def _report(out: dict) -> str:
    s = out["serving"]
    lines = [f"machine: {out['machine']}; load average {out['load_average_start']:.1f} at the start, "
             f"{out['load_average_end']:.1f} at the end; Ray {out['ray']}, torch {out['torch']}",
             f"overhead: {s['batch_s'] * 1e3:.2f} ms per batch + {s['per_request_s'] * 1e3:.2f} ms per request (busy), "
             f"{s['fixed_s'] * 1e3:.2f} ms fixed; delay jitter p99 "
             f"{(s['jitter_s'] or [0.0] * 101)[99] * 1e3:+.1f} ms, busy-time jitter p99 "
             f"{(s['busy_jitter_s'] or [0.0] * 101)[99] * 1e3:+.1f} ms, timer lateness {s['timer_lateness_s'] * 1e3:.1f} ms; "
             f"capacity at max batch "
             f"{out['setting']['max_batch']}: {out['capacity_per_s']:.1f} requests/s from the profile, "
             f"{out['capacity_after_per_s']:.1f} requests/s measured again after the runs",
             "",
             "| rate (req/s) | predicted utilisation | mean batch measured / predicted | p50 ms measured / predicted | "
             "p99 ms measured / predicted | mean ms measured / predicted | bare model p50 / p99 ms | requests | "
             "dropped | generator lag p99 ms | load average |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [_row(r) for r in out["rows"]]
    r = out["recommendation"]
    m = r["measured"]
    lines += ["", f"recommendation for p99 <= {r['slo_p99_s'] * 1e3:.0f} ms at {r['rate_per_s']:.1f} requests/s: max batch "
              f"{r['max_batch']}, max queue delay {r['max_queue_delay_s'] * 1e3:.3g} ms, 1 replica (predicted p50 "
              f"{r['predicted_p50_s'] * 1e3:.1f} ms, p99 {r['predicted_p99_s'] * 1e3:.1f} ms); deployed: p50 "
              f"{m['p50_latency_s'] * 1e3:.1f} ms, p99 {m['p99_latency_s'] * 1e3:.1f} ms, {m['n_completed']} requests, "
              f"{m['dropped']} dropped: SLO {'met' if r['met'] else 'MISSED'}",
              "seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in out["seconds"].items())]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
