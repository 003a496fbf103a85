"""Serving: a dynamic batcher simulated event by event, and the cheapest settings that meet an SLO.

The batcher (Triton's dynamic batcher, TorchServe's ``max_batch_delay``) keeps one FIFO queue for
``replicas`` identical model replicas. When a replica is free it takes the queue's head as soon as
either ``max_batch`` requests are waiting or the oldest has waited ``max_queue_delay_s``, whichever
comes first (at once if the queue filled or timed out while every replica was busy), up to
``max_batch`` requests; the batch then takes ``L(b)`` seconds (a measured forward-latency curve).
Latency of a request = completion - arrival.

With one replica and ``max_batch = 1`` the queue is vectorised exactly (Lindley's recursion as a
running maximum). Otherwise the simulation loops over *batches*, not events: with sorted arrival
times, the time a batch starts is ``max(replica free, min(arrival[head + max_batch - 1],
arrival[head] + max_queue_delay))`` and its size a bisection in the arrival times; the loop keeps
each batch's head and start, and every latency is set after it by one vector operation. ``L(b)`` is
tabulated once for all the batch sizes a search can form (:func:`_service_table`).

The search for the cheapest setting stops a simulation as soon as its p50 or p99 is certain to
exceed a bound (the SLO, or the best p99 already met): more latencies above the bound than the
quantile's lower order statistic leaves room for. That is exact: the stopped setting could be
neither feasible nor the best, so the search returns what the full search returns.

With ``max_batch = 1`` and a constant ``L`` under Poisson arrivals this is the M/D/1 queue, whose
mean wait is ``rho L / (2 (1 - rho))`` (Pollaczek-Khinchine), the check in the tests.

**When the delay starts.** ``delay_from="arrival"`` (above; Triton) counts the max queue delay from
the oldest request's arrival. Ray Serve's ``@serve.batch`` counts it from when its batching loop
*picks up* the oldest request: at its arrival if the replica is idle, else when the replica frees
(with a model call that holds the event loop, as ``@serve.batch`` examples do, nothing is picked up
during a batch). So with ``delay_from="pickup"`` a busy replica that frees with fewer than
``max_batch`` queued waits up to the delay again: the start is
``min(max(free, a_head) + delay, max(free, arrival[head + max_batch - 1]))``. Both are the same on an
idle replica. One difference is left: when more than ``max_batch`` were queued as a batch started, Ray's
loop picks up the next head at once, and if its delay runs out during the batch the next batch starts
as the replica frees; the simulator waits the delay from the freeing (it overestimates the wait then,
under heavy load only).

**A real server's overhead** (:class:`~batchlaw.plan.profile_data.ServingOverhead`, measured by
``batchlaw profile serve``): a batch of ``b`` keeps its replica busy ``S(b) = L(b) + o_0 + o_1 b``
instead of ``L(b)`` on average, plus a zero-mean draw of the measured busy-time jitter per batch (so
the queue is M/G/1-like, not M/D/1), and every request is delayed by a fixed ``c`` plus a draw of
the measured delay jitter, which keeps no replica busy. A busy time is never below zero. A batch that
waits for a non-zero max queue delay waits ``delay + timer lateness`` (a timer's wake-up on a busy
CPU comes late: measured too).
"""

from __future__ import annotations

import bisect
import heapq
import math
from dataclasses import asdict, dataclass

import numpy as np

from .._validation import check_positive_float, check_positive_int
from .profile_data import LatencyCurve, ServingOverhead

__all__ = ["SLO", "ServeResult", "poisson_arrivals", "simulate_batcher", "recommend_serving", "md1_mean_wait",
           "default_max_batches", "default_delays", "DELAY_FROM"]

#: when the max queue delay starts: at the oldest request's arrival, or when the batcher picks it up
DELAY_FROM = ("arrival", "pickup")

#: the quantiles a result reports, as fractions
_P50, _P99 = 0.5, 0.99


def poisson_arrivals(rate_per_s: float, n: int, seed: int = 0) -> np.ndarray:
    """``n`` arrival times (s) of a Poisson process of rate ``rate_per_s``, starting near 0."""
    rate = check_positive_float("rate_per_s", rate_per_s)
    n = check_positive_int("n", n)
    seed = check_positive_int("seed", seed, minimum=0)
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
    capacity_per_s: float  # replicas * max_batch / S(max_batch); S(b) = L(b) when there is no overhead
    stable: bool  # offered rate < capacity
    throughput_per_s: float
    mean_latency_s: float
    p50_latency_s: float
    p99_latency_s: float
    mean_wait_s: float  # queueing delay before the batch starts (outside delay and jitter excluded)
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
    if float(np.abs(arr).max()) > 1e12:  # 30,000 years: beyond this the times' differences lose their precision
        raise ValueError(f"The 'arrivals' parameter must hold times within 1e12 s of 0. Got {float(np.abs(arr).max()):g} s: "
                         "give the times in seconds from the start of the trace.")
    if np.any(np.diff(arr) < 0):
        arr = np.sort(arr)
    return arr


def simulate_batcher(arrivals, latency: LatencyCurve, *, max_batch: int, max_queue_delay_s: float,
                     replicas: int = 1, overhead: ServingOverhead | None = None,
                     delay_from: str = "arrival", seed: int = 0) -> ServeResult:
    """Simulate the dynamic batcher on given arrival times.

    Args:
        arrivals: arrival times in seconds (sorted if not).
        latency: forward latency ``L(b)`` in seconds for a batch of ``b``.
        max_batch: largest batch the batcher forms (at most the curve's largest batch).
        max_queue_delay_s: longest the oldest request waits for the batch to fill.
        replicas: model replicas serving one shared queue.
        overhead: a real server's overhead (busy time per batch and per request, a fixed delay and
            jitter per request); ``None``: the bare curve.
        delay_from: ``"arrival"`` (the delay runs from the oldest request's arrival) or
            ``"pickup"`` (from when a free replica picks it up: Ray Serve's ``@serve.batch``).
        seed: seed of the jitter draws (with ``overhead`` that has jitter).

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
    pickup = _check_delay_from(delay_from)
    over = _check_overhead(overhead)
    l_max = over.busy(latency, max_batch)  # refused beyond the curve
    seed = check_positive_int("seed", seed, minimum=0)
    extra = over.delays(arr.size, seed)
    bj = over.busy_jitter(arr.size, seed)
    return _simulate(arr, _service_table(latency, min(max_batch, arr.size), over), l_max, max_batch, delay, replicas,
                     pickup=pickup, extra=extra, bj=None if bj is None else bj.tolist(), late=over.timer_lateness_s)


def _check_delay_from(delay_from: str) -> bool:
    if delay_from not in DELAY_FROM:
        raise ValueError(f"The 'delay_from' parameter must be one of {', '.join(DELAY_FROM)}. Got {delay_from!r} instead.")
    return delay_from == "pickup"


def _check_overhead(overhead) -> ServingOverhead:
    if overhead is None:
        return ServingOverhead()
    if not isinstance(overhead, ServingOverhead):
        raise ValueError(f"The 'overhead' parameter must be a ServingOverhead or None. Got {type(overhead).__name__}.")
    return overhead


def _service_table(latency: LatencyCurve, largest: int, overhead: ServingOverhead | None = None) -> list[float]:
    """Seconds a replica is busy with a batch of ``b``, for ``b = 0 .. largest`` (``[0] = 0``): the curve
    ``L(b)`` evaluated once, as one vector, for every batch a simulation can form, plus a real server's
    overhead ``o_0 + o_1 b`` when one is given.

    This is where the service time of a batch is defined, so a richer latency model (a length-dependent
    term) changes this function and nothing in the simulation.
    """
    b = np.arange(1, largest + 1)
    busy = np.atleast_1d(_check_overhead(overhead).busy(latency, b))
    return [0.0] + busy.astype(float).tolist()


class _Stop(Exception):
    """A simulation abandoned once a latency quantile is certain to exceed its bound."""


def _quantile_index(n: int, q: float) -> int:
    """Lower index of the order statistics the ``q``-quantile of ``n`` values interpolates between."""
    return min(math.floor(q * (n - 1)), n - 1)


def _quantile(values: np.ndarray, q: float) -> float:
    """The ``q``-quantile with linear interpolation between order statistics (numpy's default method).

    Its lower order statistic is ``values[_quantile_index(n, q)]`` of the sorted values, and the
    quantile is at least that: more than ``n - 1 - index`` values above ``t`` put it above ``t``
    (the bound :func:`_simulate` stops on).
    """
    n = values.size
    lo = _quantile_index(n, q)
    frac = q * (n - 1) - lo
    part = np.partition(values, (lo, min(lo + 1, n - 1)))
    a, b = float(part[lo]), float(part[min(lo + 1, n - 1)])
    return a + (b - a) * frac if frac > 0 else a


def _simulate(arr: np.ndarray, svc: list[float], l_max: float, max_batch: int, delay: float, replicas: int,
              bounds: tuple[tuple[float, float], ...] = (), a: list[float] | None = None, *, pickup: bool = False,
              extra: np.ndarray | None = None, ex: list[float] | None = None,
              bj: list[float] | None = None, late: float = 0.0) -> ServeResult:
    """One setting; ``svc[b] = S(b)`` for every batch it can form, ``l_max = S(max_batch)``.

    ``bounds``: ``(q, t)`` pairs: raise :class:`_Stop` as soon as the ``q``-quantile of the latencies
    is certain to exceed ``t`` (more than ``n - 1 - index`` latencies above ``t``), which no later
    request can undo. ``a``: ``arr.tolist()``, when the caller simulates several settings.
    ``pickup``: the delay runs from pickup, not arrival. ``extra``: each request's delay outside its
    batch (s), added to its latency (``ex``: ``extra.tolist()``, when the caller has it). ``bj``: the
    busy-time jitter of the 1st, 2nd, ... batch (s; at least as many as requests). ``late``: the timer
    lateness, added to a non-zero ``delay`` (the result reports the ``delay`` asked for).
    """
    if max_batch == 1 and replicas == 1:  # one queue, one server: Lindley, vectorised
        lat, wait, n_batches, busy, last_finish = _single_server(arr, svc[1], bj)
        if extra is not None:
            lat = lat + extra
    else:
        if extra is not None and ex is None:
            ex = extra.tolist()
        waited = delay + late if delay > 0 else delay
        lat, wait, n_batches, busy, last_finish = _batch_loop(arr, svc, max_batch, waited, replicas, bounds, a,
                                                              pickup, ex, bj)
    n = arr.size
    span_in = arr[-1] - arr[0]
    rate = (n - 1) / span_in if n > 1 and span_in > 0 else math.inf
    capacity = replicas * max_batch / l_max
    span_out = last_finish - arr[0]
    return ServeResult(
        max_batch=max_batch, max_queue_delay_s=delay, replicas=replicas, n_requests=n, offered_rate_per_s=float(rate),
        capacity_per_s=capacity, stable=bool(rate < capacity),
        throughput_per_s=float(n / span_out) if span_out > 0 else math.inf,
        mean_latency_s=float(lat.mean()), p50_latency_s=_quantile(lat, _P50), p99_latency_s=_quantile(lat, _P99),
        mean_wait_s=max(0.0, float(wait.mean())), mean_batch=n / n_batches,
        utilisation=float(busy / (replicas * span_out)) if span_out > 0 else 1.0)


def _batch_loop(arr: np.ndarray, svc: list[float], max_batch: int, delay: float, replicas: int,
                bounds: tuple[tuple[float, float], ...] = (), a: list[float] | None = None, pickup: bool = False,
                ex: list[float] | None = None, bj: list[float] | None = None):
    """The general case, one Python step per batch: ``(latencies, waits, batches, busy time, last finish)``.

    The loop keeps only each batch's head and start; the latencies are set afterwards by one vector
    operation (``finish - arrival``, the same floating-point subtraction the loop would do, plus the
    request's outside delay ``ex`` if any). ``bj``: busy-time jitter per batch, in order (the busy time
    ``svc[k] + bj[i]`` is kept at 0 or more).
    """
    n = arr.size
    a = arr.tolist() if a is None else a
    heads: list[int] = []
    starts: list[float] = []
    busys: list[float] = []
    free = [0.0] * replicas  # heap of the times each replica is next free
    f = 0.0  # one replica: when it is next free
    many = replicas > 1
    # (bound t, latencies above t that make the quantile exceed t, latencies above t so far)
    checks = [[t, n - _quantile_index(n, q), 0] for q, t in bounds]
    watch = min((c[0] for c in checks), default=math.inf)
    ex_max = max(ex) if ex else 0.0
    head, last = 0, max_batch - 1
    while head < n:
        if many:
            f = heapq.heappop(free)
        a0 = a[head]
        ready = (f if pickup and f > a0 else a0) + delay
        full = head + last
        if full < n and a[full] < ready:  # max_batch waiting before the delay runs out
            ready = a[full]
            start = f if f > ready else ready
            k = max_batch
        else:
            start = f if f > ready else ready
            if head + 1 < n and a[head + 1] > start:  # alone (light load): no search
                k = 1
            else:
                k = bisect.bisect_right(a, start, head, full + 1 if full < n else n) - head
        if bj is None:
            finish = start + svc[k]
        else:
            s_k = svc[k] + bj[len(heads)]
            s_k = s_k if s_k > 0.0 else 0.0
            busys.append(s_k)
            finish = start + s_k
        heads.append(head)
        starts.append(start)
        if finish - a0 + ex_max > watch:  # a request of the batch may be over a bound: count those that are
            for c in checks:
                t, j, end = c[0], head, head + k
                if ex is None:  # latencies fall along the batch: count the first ones
                    while j < end and finish - a[j] > t:
                        j += 1
                    c[2] += j - head
                else:
                    c[2] += sum(1 for i in range(head, end) if finish - a[i] + ex[i] > t)
                if c[2] >= c[1]:
                    raise _Stop
        if many:
            heapq.heappush(free, finish)
        else:
            f = finish
        head += k
    sizes = np.diff(np.append(np.asarray(heads, dtype=np.int64), n))
    service = np.asarray(svc)[sizes] if bj is None else np.asarray(busys)
    start_t = np.asarray(starts)
    finish_t = start_t + service
    lat = np.repeat(finish_t, sizes) - arr
    if ex is not None:
        lat = lat + np.asarray(ex)
    wait = np.repeat(start_t, sizes) - arr
    return lat, wait, sizes.size, float(service.sum()), float(finish_t.max())


def _single_server(arr: np.ndarray, s: float, bj: list[float] | None = None):
    """Max batch 1, one replica: start_n = max(finish_{n-1}, a_n), finish_n = start_n + s, so
    ``finish_n = s (n + 1) + max_{k <= n} (a_k - s k)`` (a running maximum; the delay never binds).
    With busy-time jitter the service ``s_n = max(s + bj_n, 0)`` varies, and with ``C_n`` its running
    sum ``finish_n = C_n + max_{k <= n} (a_k - C_{k-1})``."""
    n = arr.size
    if bj is None:
        idx = np.arange(n)
        finish = np.maximum.accumulate(arr - s * idx) + s * (idx + 1)
        lat = finish - arr
        return lat, lat - s, n, n * s, float(finish[-1])
    svc = np.maximum(s + np.asarray(bj[:n]), 0.0)
    c = np.cumsum(svc)
    finish = np.maximum.accumulate(arr - (c - svc)) + c
    lat = finish - arr
    return lat, lat - svc, n, float(svc.sum()), float(finish[-1])


def default_max_batches(latency: LatencyCurve) -> list[int]:
    """Powers of two up to the curve's largest batch (and that batch)."""
    out = [1 << i for i in range(64) if (1 << i) <= latency.max_batch]
    return sorted(set(out) | {latency.max_batch})


def default_delays(slo: SLO) -> list[float]:
    """0 and 5%, 10%, 20%, 40% of the tightest latency target (seconds)."""
    return [0.0] + [slo.tightest * f for f in (0.05, 0.1, 0.2, 0.4)]


def _sort_key(r: ServeResult):
    return (r.replicas, r.p99_latency_s, r.mean_latency_s, r.max_batch, r.max_queue_delay_s)


#: fewest requests whose empirical p99 is a 99th percentile at all (with fewer it is the largest latency)
MIN_REQUESTS_P99 = 100
#: the search orders a replica count's settings by a simulation of the first 1/_PREFIX_SHARE of the
#: requests (at least _PREFIX_MIN): the order changes only how soon the others stop, never the answer
_PREFIX_SHARE, _PREFIX_MIN = 50, 2000


def _check_candidates(latency: LatencyCurve, slo: SLO, max_batches, delays) -> tuple[list[int], list[float]]:
    max_batches = default_max_batches(latency) if max_batches is None else sorted(
        {check_positive_int("max_batch", b) for b in max_batches})
    if not max_batches:
        raise ValueError("The 'max_batches' parameter must list at least one candidate max batch size.")
    if max_batches[-1] > latency.max_batch:
        raise ValueError(f"The 'max_batch' candidates go to {max_batches[-1]} but the latency curve stops at "
                         f"{latency.max_batch}: profile larger batches or lower them.")
    delays = default_delays(slo) if delays is None else sorted(
        {check_positive_float("max_queue_delay_s", d, allow_zero=True) for d in delays})
    if not delays:
        raise ValueError("The 'delays' parameter must list at least one candidate max queue delay (seconds).")
    return max_batches, delays


def _check_load(arr: np.ndarray, slo: SLO) -> float:
    """The offered rate of the arrivals, refusing those that have none or too few for the p99."""
    n, span = arr.size, float(arr[-1] - arr[0])
    if n < 2 or span <= 0:
        raise ValueError(f"The arrivals have no rate: {n} request(s), all at t = {arr[0]:g} s. A serving plan needs "
                         "at least 2 arrivals at different times (a trace of a load, or a Poisson rate).")
    if slo.p99_s is not None and n < MIN_REQUESTS_P99:
        raise ValueError(f"The arrivals hold {n} requests: fewer than {MIN_REQUESTS_P99}, whose p99 is only the "
                         "largest latency. Simulate more requests (--requests) or give a longer trace.")
    return (n - 1) / span


def recommend_serving(arrivals, latency: LatencyCurve, slo: SLO, *, max_batches: list[int] | None = None,
                      delays: list[float] | None = None, max_replicas: int = 64,
                      overhead: ServingOverhead | None = None, delay_from: str = "arrival", seed: int = 0) -> dict:
    """The fewest replicas, and the batcher settings, that meet the SLO on these arrivals.

    For a replica count every (max_batch, max_queue_delay) pair is simulated on the same arrivals
    (common random numbers), skipping pairs whose capacity ``R b / L(b)`` is below the offered
    rate (unstable: never meet an SLO). The fewest replicas with a setting that meets the SLO are
    found by doubling then bisection, which assumes that a setting meeting the SLO with ``R``
    replicas meets it with more (more servers on one FIFO queue start no batch later; the tests
    check the answer against a brute-force search over all triples ordered by
    ``(replicas, p99, mean, max_batch, delay)``). Among that count's settings: the lowest p99, then
    the lowest mean latency, then the smaller batch and delay. An SLO below the fastest batch
    latency (with the overhead's least delay) is refused at once.

    A simulation stops as soon as its p50 or p99 is certain to miss the SLO, or its p99 to exceed
    the lowest p99 already met at that replica count (more latencies above the bound than the
    quantile leaves room for): such a setting can be neither feasible nor best, so the answer is
    the one of the full search, found with less work.

    Args:
        arrivals: arrival times in seconds (at least 2 at different times; at least 100 with a p99 target).
        latency: forward latency curve ``L(b)``.
        slo: the latency targets.
        max_batches: candidate max batch sizes (default: powers of two up to the curve's largest).
        delays: candidate max queue delays in seconds (default: :func:`default_delays`).
        max_replicas: most replicas tried.
        overhead: a real server's overhead (see :func:`simulate_batcher`); the same jitter draws
            for every setting (common random numbers).
        delay_from: ``"arrival"`` or ``"pickup"`` (see :func:`simulate_batcher`).
        seed: seed of the jitter draws.

    Returns:
        ``{"best": ServeResult, "evaluated": [ServeResult, ...], "stopped_early": int}``: the
        settings simulated to the end, and how many more were stopped early.

    Raises:
        ValueError: arrivals without a rate, empty candidate lists, or no setting that meets the SLO
            within ``max_replicas`` (the message says why: no stable setting, or the closest p99).
    """
    arr = _as_arrivals(arrivals)
    max_batches, delays = _check_candidates(latency, slo, max_batches, delays)
    max_replicas = check_positive_int("max_replicas", max_replicas)
    pickup = _check_delay_from(delay_from)
    over = _check_overhead(overhead)
    rate = _check_load(arr, slo)
    floor = min(over.busy(latency, b) for b in max_batches) + over.min_delay_s
    if slo.tightest < floor:  # every request takes at least one batch's latency
        raise ValueError(f"No setting meets the SLO: its tightest target ({slo.tightest:.4g} s) is below the fastest "
                         f"batch latency ({floor:.4g} s). Relax the SLO or profile a faster model.")
    svc = _service_table(latency, min(max_batches[-1], arr.size), over)
    l_of = {b: over.busy(latency, b) for b in max_batches}
    a = arr.tolist()
    seed = check_positive_int("seed", seed, minimum=0)
    extra = over.delays(arr.size, seed)
    ex = None if extra is None else extra.tolist()
    bj = over.busy_jitter(arr.size, seed)
    bj = None if bj is None else bj.tolist()
    late = over.timer_lateness_s
    n_head = max(_PREFIX_MIN, arr.size // _PREFIX_SHARE)
    head = arr[:n_head]
    head_extra = None if extra is None else extra[:n_head]
    evaluated: list[ServeResult] = []
    stopped = [0]
    cache: dict[int, list[ServeResult]] = {}

    def feasible(r: int) -> list[ServeResult]:
        if r not in cache:
            stable = [(b, d) for b in max_batches if rate < r * b / l_of[b] for d in delays]
            if len(stable) > 1 and head.size < arr.size:  # likely best first, so that the bound below is tight
                stable.sort(key=lambda s: _sort_key(_simulate(head, svc, l_of[s[0]], s[0], s[1], r, pickup=pickup,
                                                              extra=head_extra, bj=bj, late=late)))
            ok: list[ServeResult] = []
            for b, d in stable:
                p99_bound = min([o.p99_latency_s for o in ok] + ([slo.p99_s] if slo.p99_s is not None else []),
                                default=None)
                bounds = tuple((q, t) for q, t in ((_P50, slo.p50_s), (_P99, p99_bound)) if t is not None)
                try:
                    res = _simulate(arr, svc, l_of[b], b, d, r, bounds, a, pickup=pickup, extra=extra, ex=ex, bj=bj,
                                    late=late)
                except _Stop:
                    stopped[0] += 1
                    continue
                evaluated.append(res)
                if slo.met_by(res):
                    ok.append(res)
            cache[r] = ok
        return cache[r]

    # the fewest replicas: doubling, then bisection (meeting the SLO is monotone in the replicas)
    hi = 1
    while not feasible(hi):
        if hi >= max_replicas:
            raise ValueError(_no_setting_message(slo, rate, max_replicas, max_batches, l_of, evaluated))
        hi = min(2 * hi, max_replicas)
    lo = hi // 2  # infeasible (or 0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if feasible(mid) else (mid, hi)
    return {"best": min(feasible(hi), key=_sort_key), "evaluated": evaluated, "stopped_early": stopped[0]}


def _no_setting_message(slo: SLO, rate: float, replicas: int, max_batches, l_of, evaluated) -> str:
    targets = " and ".join(f"{name} <= {v * 1e3:.4g} ms" for name, v in (("p50", slo.p50_s), ("p99", slo.p99_s))
                           if v is not None)
    head = f"No setting meets the SLO ({targets}) with up to {replicas} replicas"
    best_b = max(max_batches, key=lambda b: b / l_of[b])
    capacity = replicas * best_b / l_of[best_b]
    if rate >= capacity:
        return (f"{head}: none is stable, the requests arrive at {rate:.4g}/s and the most {replicas} replicas serve "
                f"is {capacity:.4g}/s (max batch {best_b}, {l_of[best_b] * 1e3:.4g} ms a batch). Raise --max-replicas, "
                "allow larger batches, or profile a faster model.")
    done = [e for e in evaluated if e.replicas == replicas and e.stable]
    if done:
        c = min(done, key=_sort_key)
        closest = (f"the closest at {replicas} replicas: max batch {c.max_batch}, max queue delay "
                   f"{c.max_queue_delay_s * 1e3:.3g} ms, p50 {c.p50_latency_s * 1e3:.4g} ms, p99 "
                   f"{c.p99_latency_s * 1e3:.4g} ms")
    else:
        closest = (f"at {replicas} replicas every stable setting was stopped as soon as its latencies were certain to "
                   "miss the SLO")
    return f"{head} ({closest}): raise --max-replicas, relax the SLO, or profile a faster model."
