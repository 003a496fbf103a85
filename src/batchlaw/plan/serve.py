"""Serving: a dynamic batcher simulated event by event, and the cheapest settings that meet an SLO.

The batcher (Triton's dynamic batcher, TorchServe's ``max_batch_delay``) keeps one FIFO queue for
``replicas`` identical model replicas. When a replica is free it takes the queue's head as soon as
either ``max_batch`` requests are waiting or the oldest has waited ``max_queue_delay_s``, whichever
comes first (at once if the queue filled or timed out while every replica was busy), up to
``max_batch`` requests; the batch then takes ``L(b)`` seconds (a measured forward-latency curve).
Latency of a request = completion - arrival.

With one replica and ``max_batch = 1`` the queue is vectorised exactly (Lindley's recursion as a
running maximum). Otherwise the simulation loops over *batches*, not events: with sorted arrival times, the time a batch starts
is ``max(replica free, min(arrival[head + max_batch - 1], arrival[head] + max_queue_delay))`` and
its size a bisection in the arrival times; latencies of a batch are set by one vector operation.

With ``max_batch = 1`` and a constant ``L`` under Poisson arrivals this is the M/D/1 queue, whose
mean wait is ``rho L / (2 (1 - rho))`` (Pollaczek-Khinchine), the check in the tests.
"""

from __future__ import annotations

import bisect
import heapq
import math
from dataclasses import asdict, dataclass

import numpy as np

from .._validation import check_positive_float, check_positive_int
from .profile_data import LatencyCurve

__all__ = ["SLO", "ServeResult", "poisson_arrivals", "simulate_batcher", "recommend_serving", "md1_mean_wait",
           "default_max_batches", "default_delays"]


def poisson_arrivals(rate_per_s: float, n: int, seed: int = 0) -> np.ndarray:
    """``n`` arrival times (s) of a Poisson process of rate ``rate_per_s``, starting near 0."""
    rate = check_positive_float("rate_per_s", rate_per_s)
    n = check_positive_int("n", n)
    return np.cumsum(np.random.default_rng(seed).exponential(1.0 / rate, n))


def md1_mean_wait(rate_per_s: float, service_s: float) -> float:
    """Pollaczek-Khinchine mean wait in queue of M/D/1: ``rho S / (2 (1 - rho))``, ``rho = lambda S``.

    Examples:
        >>> md1_mean_wait(50.0, 0.01)  # rho = 0.5
        0.005

    References:
        Kleinrock 1975, "Queueing Systems, Vol. 1", eq. 5.72 (M/G/1 with zero service variance).
    """
    rho = check_positive_float("rate_per_s", rate_per_s) * check_positive_float("service_s", service_s)
    if rho >= 1:
        raise ValueError(f"M/D/1 is unstable at load rho = {rho:.3g} >= 1.")
    return rho * service_s / (2.0 * (1.0 - rho))


@dataclass(frozen=True)
class SLO:
    """Latency targets in seconds (either may be ``None``; at least one is needed)."""

    p50_s: float | None = None
    p99_s: float | None = None

    def __post_init__(self):
        if self.p50_s is None and self.p99_s is None:
            raise ValueError("An SLO needs a p50 or a p99 latency target.")
        for name in ("p50_s", "p99_s"):
            v = getattr(self, name)
            if v is not None:
                check_positive_float(name, v)

    @property
    def tightest(self) -> float:
        return min(v for v in (self.p50_s, self.p99_s) if v is not None)

    def met_by(self, r: ServeResult) -> bool:
        """Stable under the load, and every target met."""
        return (r.stable and (self.p50_s is None or r.p50_latency_s <= self.p50_s)
                and (self.p99_s is None or r.p99_latency_s <= self.p99_s))


@dataclass(frozen=True)
class ServeResult:
    """One simulated setting (times in seconds)."""

    max_batch: int
    max_queue_delay_s: float
    replicas: int
    n_requests: int
    offered_rate_per_s: float
    capacity_per_s: float  # replicas * max_batch / L(max_batch)
    stable: bool  # offered rate < capacity
    throughput_per_s: float
    mean_latency_s: float
    p50_latency_s: float
    p99_latency_s: float
    mean_wait_s: float  # queueing delay before the batch starts
    mean_batch: float
    utilisation: float  # busy replica-time / (replicas x span)

    def to_dict(self) -> dict:
        return asdict(self)


def _as_arrivals(arrivals) -> np.ndarray:
    arr = np.asarray(arrivals, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError("The 'arrivals' parameter must be a non-empty 1-D sequence of times in seconds.")
    if not np.all(np.isfinite(arr)):
        raise ValueError("The 'arrivals' parameter must hold finite times in seconds.")
    if np.any(np.diff(arr) < 0):
        arr = np.sort(arr)
    return arr


def simulate_batcher(arrivals, latency: LatencyCurve, *, max_batch: int, max_queue_delay_s: float,
                     replicas: int = 1) -> ServeResult:
    """Simulate the dynamic batcher on given arrival times.

    Args:
        arrivals: arrival times in seconds (sorted if not).
        latency: forward latency ``L(b)`` in seconds for a batch of ``b``.
        max_batch: largest batch the batcher forms (at most the curve's largest batch).
        max_queue_delay_s: longest the oldest request waits for the batch to fill.
        replicas: model replicas serving one shared queue.

    Returns:
        A :class:`ServeResult`.

    Examples:
        >>> r = simulate_batcher([0.0, 0.001, 0.5], LatencyCurve([1, 2], [0.01, 0.012]),
        ...                      max_batch=2, max_queue_delay_s=0.005)
        >>> r.mean_batch, round(r.p50_latency_s, 4)
        (1.5, 0.013)
    """
    arr = _as_arrivals(arrivals)
    max_batch = check_positive_int("max_batch", max_batch)
    delay = check_positive_float("max_queue_delay_s", max_queue_delay_s, allow_zero=True)
    replicas = check_positive_int("replicas", replicas)
    svc = [0.0] + [float(latency(b)) for b in range(1, max_batch + 1)]  # svc[b] = L(b)
    if max_batch == 1 and replicas == 1:  # one queue, one server, constant service: Lindley, vectorised
        return _single_server(arr, svc[1], delay)
    return _batch_loop(arr, svc, max_batch, delay, replicas)


def _batch_loop(arr: np.ndarray, svc: list[float], max_batch: int, delay: float, replicas: int) -> ServeResult:
    """The general case, one Python step per batch (``svc[b] = L(b)``)."""
    n = arr.size
    a = arr.tolist()
    lat = np.empty(n)
    wait = np.empty(n)
    free = [0.0] * replicas  # heap of times each replica is next free
    head, n_batches, busy = 0, 0, 0.0
    last_finish = 0.0
    while head < n:
        f = heapq.heappop(free) if replicas > 1 else free[0]
        a0 = a[head]
        ready = a0 + delay
        if head + max_batch - 1 < n and a[head + max_batch - 1] < ready:
            ready = a[head + max_batch - 1]
        start = f if f > ready else ready
        hi = head + max_batch if head + max_batch < n else n
        k = bisect.bisect_right(a, start, head, hi) - head
        s = svc[k]
        finish = start + s
        if k == 1:
            lat[head] = finish - a0
            wait[head] = start - a0
        else:
            seg = arr[head:head + k]
            lat[head:head + k] = finish - seg
            wait[head:head + k] = start - seg
        if replicas > 1:
            heapq.heappush(free, finish)
        else:
            free[0] = finish
        if finish > last_finish:
            last_finish = finish
        busy += s
        head += k
        n_batches += 1
    span_in = arr[-1] - arr[0]
    rate = (n - 1) / span_in if n > 1 and span_in > 0 else math.inf
    capacity = replicas * max_batch / svc[max_batch]
    span_out = last_finish - arr[0]
    p50, p99 = np.percentile(lat, [50, 99])
    return ServeResult(
        max_batch=max_batch, max_queue_delay_s=delay, replicas=replicas, n_requests=n, offered_rate_per_s=float(rate),
        capacity_per_s=capacity, stable=bool(rate < capacity),
        throughput_per_s=float(n / span_out) if span_out > 0 else math.inf,
        mean_latency_s=float(lat.mean()), p50_latency_s=float(p50), p99_latency_s=float(p99),
        mean_wait_s=float(wait.mean()), mean_batch=n / n_batches, utilisation=float(busy / (replicas * span_out)))


def _single_server(arr: np.ndarray, s: float, delay: float) -> ServeResult:
    """Max batch 1, one replica: start_n = max(finish_{n-1}, a_n), finish_n = start_n + s, so
    ``finish_n = s (n + 1) + max_{k <= n} (a_k - s k)`` (a running maximum; the delay never binds)."""
    n = arr.size
    idx = np.arange(n)
    finish = np.maximum.accumulate(arr - s * idx) + s * (idx + 1)
    lat = finish - arr
    span_in, span_out = arr[-1] - arr[0], finish[-1] - arr[0]
    rate = (n - 1) / span_in if n > 1 and span_in > 0 else math.inf
    p50, p99 = np.percentile(lat, [50, 99])
    return ServeResult(
        max_batch=1, max_queue_delay_s=delay, replicas=1, n_requests=n, offered_rate_per_s=float(rate),
        capacity_per_s=1.0 / s, stable=bool(rate < 1.0 / s), throughput_per_s=float(n / span_out),
        mean_latency_s=float(lat.mean()), p50_latency_s=float(p50), p99_latency_s=float(p99),
        mean_wait_s=float(lat.mean() - s), mean_batch=1.0, utilisation=float(n * s / span_out))


def default_max_batches(latency: LatencyCurve) -> list[int]:
    """Powers of two up to the curve's largest batch (and that batch)."""
    out = [1 << i for i in range(64) if (1 << i) <= latency.max_batch]
    return sorted(set(out) | {latency.max_batch})


def default_delays(slo: SLO) -> list[float]:
    """0 and 5%, 10%, 20%, 40% of the tightest latency target (seconds)."""
    return [0.0] + [slo.tightest * f for f in (0.05, 0.1, 0.2, 0.4)]


def _sort_key(r: ServeResult):
    return (r.replicas, r.p99_latency_s, r.mean_latency_s, r.max_batch, r.max_queue_delay_s)


def recommend_serving(arrivals, latency: LatencyCurve, slo: SLO, *, max_batches: list[int] | None = None,
                      delays: list[float] | None = None, max_replicas: int = 64) -> dict:
    """The fewest replicas, and the batcher settings, that meet the SLO on these arrivals.

    For a replica count every (max_batch, max_queue_delay) pair is simulated on the same arrivals
    (common random numbers), skipping pairs whose capacity ``R b / L(b)`` is below the offered
    rate (unstable: never meet an SLO). The fewest replicas with a setting that meets the SLO are
    found by doubling then bisection, which assumes that a setting meeting the SLO with ``R``
    replicas meets it with more (more servers on one FIFO queue start no batch later; the tests
    check the answer against a brute-force search over all triples ordered by
    ``(replicas, p99, mean, max_batch, delay)``). Among that count's settings: the lowest p99, then
    the lowest mean latency, then the smaller batch and delay. An SLO below the fastest batch
    latency is refused at once.

    Args:
        arrivals: arrival times in seconds.
        latency: forward latency curve ``L(b)``.
        slo: the latency targets.
        max_batches: candidate max batch sizes (default: powers of two up to the curve's largest).
        delays: candidate max queue delays in seconds (default: :func:`default_delays`).
        max_replicas: most replicas tried.

    Returns:
        ``{"best": ServeResult, "evaluated": [ServeResult, ...]}``.

    Raises:
        ValueError: no setting meets the SLO within ``max_replicas`` (the message says what the
            best setting reached).
    """
    arr = _as_arrivals(arrivals)
    max_batches = default_max_batches(latency) if max_batches is None else sorted(
        {check_positive_int("max_batch", b) for b in max_batches})
    if max_batches[-1] > latency.max_batch:
        raise ValueError(f"The 'max_batch' candidates go to {max_batches[-1]} but the latency curve stops at "
                         f"{latency.max_batch}: profile larger batches or lower them.")
    delays = default_delays(slo) if delays is None else sorted(
        {check_positive_float("max_queue_delay_s", d, allow_zero=True) for d in delays})
    max_replicas = check_positive_int("max_replicas", max_replicas)
    rate = (arr.size - 1) / (arr[-1] - arr[0]) if arr.size > 1 and arr[-1] > arr[0] else math.inf
    floor = min(float(latency(b)) for b in max_batches)
    if slo.tightest < floor:  # every request takes at least one batch's latency
        raise ValueError(f"No setting meets the SLO: its tightest target ({slo.tightest:.4g} s) is below the fastest "
                         f"batch latency ({floor:.4g} s). Relax the SLO or profile a faster model.")
    evaluated: list[ServeResult] = []
    cache: dict[int, list[ServeResult]] = {}

    def feasible(r: int) -> list[ServeResult]:
        if r not in cache:
            ok = []
            for b in max_batches:
                if rate >= r * b / float(latency(b)):
                    continue
                for d in delays:
                    res = simulate_batcher(arr, latency, max_batch=b, max_queue_delay_s=d, replicas=r)
                    evaluated.append(res)
                    if slo.met_by(res):
                        ok.append(res)
            cache[r] = ok
        return cache[r]

    # the fewest replicas: doubling, then bisection (meeting the SLO is monotone in the replicas)
    hi = 1
    while not feasible(hi):
        if hi >= max_replicas:
            best_p99 = min((e.p99_latency_s for e in evaluated if e.stable), default=math.inf)
            raise ValueError(f"No setting meets the SLO (p50 <= {slo.p50_s}, p99 <= {slo.p99_s} s) with up to "
                             f"{max_replicas} replicas (best stable p99: {best_p99:.4g} s): raise --max-replicas, "
                             "relax the SLO, or profile a faster model.")
        hi = min(2 * hi, max_replicas)
    lo = hi // 2  # infeasible (or 0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if feasible(mid) else (mid, hi)
    return {"best": min(feasible(hi), key=_sort_key), "evaluated": evaluated}
