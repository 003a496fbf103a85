"""`plan serve` held against a real server: Ray Serve's dynamic batcher (``@serve.batch``) serving a small
torch model on this CPU, over HTTP on the loopback interface, driven by an open-loop Poisson load.

A short version of ``bench/serve_validate.py``: the overhead is measured on the server
(``measure_overhead``), then a few hundred requests arrive at the rate where the model predicts a
utilisation of about 0.55, and the measured mean latency must be within a loose band of the
prediction on the same arrivals (wide: a loaded CI machine). And it must be nearer (as a ratio) to
the prediction than to the prediction without the queueing delay (mean latency minus the simulated
mean wait): with a simulator whose queue delay were zero the two are the same and the test fails.

Max batch 1 and no delay keep it to the queue itself (an M/G/1 queue with the measured busy time and
its spread). The machine's own capacity can change during the test (other jobs share the CPU): the
busy time ``S(1)`` is measured before and after the load and the prediction uses their mean; an
attempt in which they differ by more than 20% is repeated (at most 3).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
#: measured / predicted mean latency. Wide: here the measured mean ran 1.4-1.65x the prediction (the busy time
#: measured at saturation is too short for requests that arrive one at a time, bench/RESULTS.md), and a CI machine
#: is loaded. The test's power against a model without queueing is the second assertion, not this band.
BAND = (0.5, 2.0)
UTILISATION = 0.55
N_REQUESTS = 500
DRIFT = 0.2  # the most S(1) may change between before and after the load


def _forward_latency(make_model) -> dict[int, float]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the replica (Ray gives num_cpus=1 one thread)
    try:
        net, make_batch = make_model()
        out = {}
        with torch.no_grad():
            for b in (1, 2):
                x = make_batch(b)
                times = []
                for _ in range(20):
                    t = time.perf_counter()
                    net(x)
                    times.append(time.perf_counter() - t)
                out[b] = min(times)
        return out
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def server():
    pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install 'batchlaw[ray]')")
    sys.path.insert(0, str(BENCH))
    import serve_app

    try:
        url = serve_app.start(max_batch=1, delay_s=0.0)
    except Exception as err:  # Ray could not start here: nothing of batchlaw's is under test then
        try:
            serve_app.stop()
        finally:
            pytest.skip(f"Ray Serve could not start on this machine: {type(err).__name__}: {err}")
    try:
        yield serve_app, url
    finally:
        serve_app.stop()
        sys.path.remove(str(BENCH))


@pytest.mark.slow
@pytest.mark.serial  # alone on the machine: beside another test worker the server's S(1) doubled (7.9 -> 15.6 ms)
def test_measured_mean_latency_is_near_the_prediction_and_needs_the_queue(server):
    from batchlaw.plan import LatencyCurve, ServingOverhead, poisson_arrivals, simulate_batcher
    from batchlaw.profile.serving import closed_loop, measure_overhead, open_loop

    serve_app, url = server
    configure = serve_app.configurer(url)
    forward = _forward_latency(serve_app.make_model)
    curve = LatencyCurve(list(forward), list(forward.values()))
    for attempt in range(3):
        got = measure_overhead(url, serve_app.BODY, configure, forward, n_lone=60, requests_per_batch=20, rounds=1)
        s1 = ServingOverhead.from_dict(got).busy(curve, 1)
        rate = UTILISATION / s1
        arr = poisson_arrivals(rate, N_REQUESTS, seed=attempt)
        configure(1, 0.0)
        load = open_loop(url, serve_app.BODY, arr, max_in_flight=256)
        s1_after = 1.0 / closed_loop(url, serve_app.BODY, concurrency=3, n_requests=200)["throughput_per_s"]
        drift = s1_after / s1 - 1
        if abs(drift) <= DRIFT:
            break
    # max batch 1: only S(1) = L(1) + o_0 + o_1 matters; the mean of before and after, as a per-request term
    over = ServingOverhead.from_dict({**got, "batch_s": 0.0, "per_request_s": (s1 + s1_after) / 2 - forward[1]})
    meas = load.summary(warmup_s=0.5)
    pred = simulate_batcher(arr - arr[0], curve, max_batch=1, max_queue_delay_s=0.0, overhead=over)
    no_queue = pred.mean_latency_s - pred.mean_wait_s
    ratio = meas["mean_latency_s"] / pred.mean_latency_s
    detail = (f"measured mean {meas['mean_latency_s'] * 1e3:.1f} ms at {rate:.1f} requests/s; predicted "
              f"{pred.mean_latency_s * 1e3:.1f} ms (utilisation {pred.utilisation:.2f}, wait {pred.mean_wait_s * 1e3:.1f} ms), "
              f"without the queue {no_queue * 1e3:.1f} ms; S(1) {s1 * 1e3:.1f} ms before, {s1_after * 1e3:.1f} ms after "
              f"(attempt {attempt + 1}); "
              f"overhead {json.dumps({k: got[k] for k in ('batch_s', 'per_request_s', 'fixed_s')})}")
    print(detail)
    assert meas["errors"] == 0 and meas["dropped"] == 0, detail
    assert BAND[0] <= ratio <= BAND[1], detail
    # the queue explains the measurement: it is nearer the prediction than the same without the wait
    assert abs(np.log(ratio)) < abs(np.log(meas["mean_latency_s"] / no_queue)), detail
