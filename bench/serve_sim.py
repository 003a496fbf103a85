"""Speed of the serving simulator: the batch loop of `batchlaw.plan.serve` vs an event-by-event loop.

Both simulate the same dynamic batcher on the same Poisson arrivals; the event loop (one Python
step per arrival, replica release and timeout, a deque for the queue) is the textbook design and
the baseline. Their latencies must agree exactly on the shared prefix; the script prints wall times
and the ratio measured in this run.

    PYTHONPATH=src python bench/serve_sim.py --requests 1000000

``--baseline-rev REV`` times the whole search instead (``recommend_serving``, what ``batchlaw plan
serve`` runs) against the ``batchlaw/plan/serve.py`` of an earlier commit, loaded from git, on the
same arrivals in the same run, alternating the two, and checks that both recommend the same setting:

    PYTHONPATH=src python bench/serve_sim.py --requests 1000000 --baseline-rev 8bc8094
"""

from __future__ import annotations

import argparse
import platform
import time
from collections import deque

import numpy as np

from batchlaw.plan import LatencyCurve, poisson_arrivals, simulate_batcher


def event_loop(arr, curve, max_batch, delay, replicas):
    """Event-by-event reference: returns the mean latency."""
    free = [0.0] * replicas
    queue, i, t, total, n = deque(), 0, 0.0, 0.0, len(arr)
    svc = [0.0] + [float(curve(b)) for b in range(1, max_batch + 1)]
    while i < n or queue:
        while i < n and arr[i] <= t:
            queue.append(arr[i])
            i += 1
        for r in range(replicas):
            if free[r] <= t and queue and (len(queue) >= max_batch or t >= queue[0] + delay):
                k = min(max_batch, len(queue))
                free[r] = t + svc[k]
                for _ in range(k):
                    total += free[r] - queue.popleft()
        if i >= n and not queue:
            break
        cands = [f for f in free if f > t]
        if i < n:
            cands.append(arr[i])
        if queue and queue[0] + delay > t:
            cands.append(queue[0] + delay)
        t = min(cands)
    return total / n


def _baseline_module(rev: str):
    """``batchlaw/plan/serve.py`` as it was at ``rev``, imported as a module of its own."""
    import importlib.util
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    code = subprocess.run(["git", "show", f"{rev}:src/batchlaw/plan/serve.py"], capture_output=True, text=True,
                          check=True, cwd=Path(__file__).resolve().parents[1]).stdout
    code = code.replace("from .._validation", "from batchlaw._validation").replace(
        "from .profile_data", "from batchlaw.plan.profile_data")
    path = Path(tempfile.mkdtemp()) / "serve_baseline.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location("serve_baseline", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["serve_baseline"] = mod
    spec.loader.exec_module(mod)
    return mod


def compare_recommend(requests: int, rev: str) -> None:
    """The search of `plan serve` now vs at ``rev``: same arrivals, same run, same answer."""
    from batchlaw.plan import SLO, recommend_serving

    old = _baseline_module(rev)
    curve = LatencyCurve([1, 2, 4, 8, 16, 32], [0.008, 0.009, 0.011, 0.015, 0.023, 0.040])  # examples/serve_latency.csv
    print(f"# recommend_serving, {requests:,} requests, baseline {rev}")
    print("| arrivals, SLO | baseline (s) | now (s) | baseline / now | settings: baseline / now (full + stopped) | "
          "same answer |")
    print("|---|---|---|---|---|---|")
    for rate, p50, p99 in [(200.0, None, 0.06), (1000.0, 0.02, 0.04)]:
        arr = poisson_arrivals(rate, requests, seed=0)
        t0 = time.perf_counter()
        new = recommend_serving(arr, curve, SLO(p50, p99))
        t1 = time.perf_counter()
        base = old.recommend_serving(arr, curve, old.SLO(p50, p99))
        t2 = time.perf_counter()
        same = new["best"].to_dict() == base["best"].to_dict() or all(
            np.isclose(v, base["best"].to_dict()[k], rtol=1e-12) for k, v in new["best"].to_dict().items())
        slo = ", ".join(f"{n} {v * 1e3:g} ms" for n, v in (("p50", p50), ("p99", p99)) if v is not None)
        print(f"| Poisson {rate:g}/s, {slo} | {t2 - t1:.1f} | {t1 - t0:.1f} | {(t2 - t1) / (t1 - t0):.1f}x | "
              f"{len(base['evaluated'])} / {len(new['evaluated'])} + {new['stopped_early']} | {same} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--baseline-rev", default=None, help="time recommend_serving against serve.py at this commit")
    args = ap.parse_args()
    if args.baseline_rev:
        compare_recommend(args.requests, args.baseline_rev)
        return
    curve = LatencyCurve([1, 2, 4, 8, 16, 32], [0.010, 0.011, 0.013, 0.017, 0.025, 0.040])
    print(f"# {platform.processor() or platform.machine()}, python {platform.python_version()}, "
          f"{args.requests:,} requests")
    print("| setting | batchlaw (s) | event loop (s) | event / batchlaw | mean latency agrees |")
    print("|---|---|---|---|---|")
    for rate, mb, delay, reps in [(70.0, 1, 0.0, 1), (500.0, 32, 0.005, 1), (2000.0, 16, 0.002, 4)]:
        arr = poisson_arrivals(rate, args.requests, seed=0)
        t0 = time.perf_counter()
        fast = simulate_batcher(arr, curve, max_batch=mb, max_queue_delay_s=delay, replicas=reps)
        t1 = time.perf_counter()
        ref = event_loop(arr.tolist(), curve, mb, delay, reps)
        t2 = time.perf_counter()
        agree = np.isclose(fast.mean_latency_s, ref, rtol=1e-9)
        print(f"| {rate:g}/s, max batch {mb}, delay {delay * 1e3:g} ms, {reps} replica(s) | {t1 - t0:.2f} | "
              f"{t2 - t1:.2f} | {(t2 - t1) / (t1 - t0):.1f}x | {agree} |")


if __name__ == "__main__":
    main()
