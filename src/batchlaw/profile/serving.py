"""Round trips to a real batching server over HTTP: an open-loop Poisson load, and the serving overhead.

Nothing here imports torch or a server library: the requests are plain HTTP/1.1 ``POST`` s over
keep-alive connections of :mod:`asyncio` streams, so that the load generator costs the shared CPU
as little as possible (a general-purpose HTTP client costs about a millisecond of CPU a request).

**Open loop.** :func:`open_loop` sends request ``i`` at the ``i``-th time of a Poisson process,
whatever the responses do (arrivals independent of responses: the queue the simulator models). At
most ``max_in_flight`` requests are outstanding; an arrival that finds the bound reached is not
sent and is counted as dropped. A request's latency runs from its *scheduled* time, so a generator
that falls behind adds its lag to the latency instead of hiding it (no coordinated omission); the
lag is reported beside it.

**Overhead.** A real server adds to the forward latency ``L(b)`` of a batch (measured by
``batchlaw profile``): time that keeps the replica (and the shared CPU) busy, and time that only
delays a request. :func:`measure_overhead` measures both through a server whose batcher it can set
(``configure(max_batch, delay_s)``):

- for each max batch ``b`` the throughput ``X(b)`` with ``3 b`` requests always in flight (a
  closed loop: every batch is full) gives the busy time of a batch, ``S(b) = b / X(b)``; the
  least-squares line ``S(b) - L(b) = o_0 + o_1 b`` is the overhead per batch ``o_0`` (dispatch)
  and per request ``o_1`` (serialisation, the HTTP proxy, the client's share of the CPU);
- at max batch 1 the times between consecutive completions are samples of the busy time of a batch:
  their spread about their mean is the busy-time jitter (stalls while the shared CPU runs other work);
- requests sent one at a time with max batch 1 and no delay give the round trip of a lone request;
- sent one at a time with a max queue delay ``d`` they wait all of it: their median round trip minus
  ``d`` minus the lone one is the timer's lateness (a timer's wake-up on a busy CPU comes late), which
  every batch that waits for its delay pays;
  its median minus ``S(1)`` is the fixed delay ``c`` that occupies no replica (the network stack, the
  proxy's side of the trip), and its spread about the median the dispatch jitter, kept as a
  distribution (percentiles).

The latency the serving simulator then predicts for a request is the batcher's (with ``S(b)`` plus a
draw of the busy-time jitter as the service time) plus ``c`` plus a draw of the delay jitter.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np

from .._validation import check_positive_float, check_positive_int

__all__ = ["OVERHEAD_SCHEMA", "LoadResult", "open_loop", "closed_loop", "lone_round_trips", "fit_overhead",
           "measure_overhead"]

#: schema of the ``serving`` block that :func:`measure_overhead` returns (stored in a profile)
OVERHEAD_SCHEMA = "batchlaw.serving_overhead/1"

_CONNECT_TIMEOUT_S = 10.0
_IDLE_REUSE_S = 2.0  # a keep-alive connection idle longer than this is not reused (servers close them)
_JITTER_PERCENTILES = tuple(range(101))
_MIN_SATURATION_REQUESTS = 300  # requests per measured max batch, at least (the throughput of a few batches is noise)


def _check_url(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"The 'url' parameter must be an http:// URL, e.g. http://127.0.0.1:8000/. Got {url!r} instead.")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.hostname, parts.port or 80, path


class _Client:
    """HTTP/1.1 POSTs of one body to one URL over a pool of keep-alive connections."""

    def __init__(self, url: str, body: bytes, timeout_s: float):
        self.host, self.port, path = _check_url(url)
        self.head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n").encode("ascii")
        self.body = body
        self.timeout_s = timeout_s
        self.idle: list[tuple[float, asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def _connection(self):
        now = time.monotonic()
        while self.idle:
            t, r, w = self.idle.pop()
            if now - t < _IDLE_REUSE_S and not r.at_eof():
                return r, w
            w.close()
        return await asyncio.wait_for(asyncio.open_connection(self.host, self.port), _CONNECT_TIMEOUT_S)

    async def post(self) -> bytes:
        """One request; returns the response body, raises on a transport error or a status >= 400."""
        r, w = await self._connection()
        try:
            w.write(self.head + self.body)
            status, body, keep = await asyncio.wait_for(self._response(r), self.timeout_s)
        except BaseException:
            w.close()
            raise
        if keep:
            self.idle.append((time.monotonic(), r, w))
        else:
            w.close()
        if status >= 400:
            raise ConnectionError(f"HTTP {status}: {body[:200]!r}")
        return body

    @staticmethod
    async def _response(r: asyncio.StreamReader) -> tuple[int, bytes, bool]:
        line = await r.readline()
        if not line:
            raise ConnectionError("the server closed the connection")
        status = int(line.split()[1])
        length, chunked, keep = None, False, True
        while True:
            h = await r.readline()
            if h in (b"\r\n", b"\n", b""):
                break
            name, _, value = h.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value:
                chunked = True
            elif name == "connection" and value == "close":
                keep = False
        if chunked:
            parts = []
            while True:
                size = int((await r.readline()).split(b";")[0], 16)
                if size == 0:
                    await r.readline()
                    break
                parts.append(await r.readexactly(size))
                await r.readline()
            return status, b"".join(parts), keep
        if length is None:
            return status, await r.read(), False
        return status, await r.readexactly(length), keep

    def close(self):
        for _, _, w in self.idle:
            w.close()
        self.idle.clear()


@dataclass(frozen=True)
class LoadResult:
    """What an open-loop run measured (times in seconds, from the first scheduled arrival).

    Attributes:
        scheduled_s: the Poisson arrival time of every request, sent or dropped.
        latency_s: response time - scheduled time; ``nan`` for a dropped or failed request.
        lag_s: send time - scheduled time (the generator's lateness); ``nan`` if dropped.
        dropped: arrivals not sent because ``max_in_flight`` requests were outstanding.
        errors: requests that failed (transport error, HTTP status >= 400, timeout).
        first_error: the first failure's message, if any.
        wall_s: wall-clock seconds of the run.
        bodies: each response's body (``None`` if not answered), when asked for with ``keep_bodies``.
    """

    scheduled_s: np.ndarray
    latency_s: np.ndarray
    lag_s: np.ndarray
    dropped: int
    errors: int
    first_error: str | None
    wall_s: float
    bodies: list | None = None

    def summary(self, warmup_s: float = 0.0) -> dict:
        """Mean, p50 and p99 latency (s) of the requests that completed, those scheduled before
        ``warmup_s`` left out; counts of sent, dropped and failed requests; the offered rate
        (requests/s) and the generator's median and p99 lag (s)."""
        keep = self.scheduled_s >= warmup_s
        lat = self.latency_s[keep]
        ok = lat[np.isfinite(lat)]
        lag = self.lag_s[keep]
        lag = lag[np.isfinite(lag)]
        span = float(self.scheduled_s[keep][-1] - self.scheduled_s[keep][0]) if keep.sum() > 1 else math.nan
        return {"n_completed": int(ok.size), "n_scheduled": int(keep.sum()), "dropped": self.dropped,
                "errors": self.errors, "offered_rate_per_s": (keep.sum() - 1) / span if span > 0 else math.nan,
                "mean_latency_s": float(ok.mean()) if ok.size else math.nan,
                "p50_latency_s": float(np.quantile(ok, 0.5)) if ok.size else math.nan,
                "p99_latency_s": float(np.quantile(ok, 0.99)) if ok.size else math.nan,
                "lag_p50_s": float(np.quantile(lag, 0.5)) if lag.size else math.nan,
                "lag_p99_s": float(np.quantile(lag, 0.99)) if lag.size else math.nan}


def _body(body) -> bytes:
    if isinstance(body, str):
        body = body.encode("utf-8")
    if not isinstance(body, (bytes, bytearray)) or not body:
        raise ValueError("The 'body' parameter must be the non-empty JSON text of one request (str or bytes).")
    return bytes(body)


def open_loop(url: str, body, arrivals_s, *, max_in_flight: int = 256, timeout_s: float = 30.0,
              keep_bodies: bool = False) -> LoadResult:
    """Send one POST of ``body`` to ``url`` at each time of ``arrivals_s`` (an open loop).

    Args:
        url: the server's endpoint (``http://host:port/path``).
        body: JSON text of one request.
        arrivals_s: sorted arrival times in seconds, e.g. :func:`batchlaw.plan.poisson_arrivals`;
            the run starts at the first.
        max_in_flight: most requests outstanding; an arrival beyond it is dropped (counted).
        timeout_s: a request not answered within this is a failure.
        keep_bodies: keep each response's body (parsed by the caller after the run, not during it).

    Returns:
        A :class:`LoadResult`.
    """
    arr = np.asarray(arrivals_s, dtype=float)
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(np.diff(arr) < 0):
        raise ValueError("The 'arrivals_s' parameter must be a non-empty sorted 1-D sequence of finite times (s).")
    max_in_flight = check_positive_int("max_in_flight", max_in_flight)
    timeout_s = check_positive_float("timeout_s", timeout_s)
    client = _Client(url, _body(body), timeout_s)
    return asyncio.run(_open_loop(client, arr - arr[0], max_in_flight, keep_bodies))


async def _open_loop(client: _Client, sched: np.ndarray, bound: int, keep: bool) -> LoadResult:
    n = sched.size
    bodies = [None] * n if keep else None
    lat = np.full(n, math.nan)
    lag = np.full(n, math.nan)
    state = {"in_flight": 0, "dropped": 0, "errors": 0, "first_error": None}
    loop = asyncio.get_running_loop()
    tasks = set()

    async def one(i: int, t_sched: float) -> None:
        try:
            got = await client.post()
            lat[i] = loop.time() - t_sched
            if bodies is not None:
                bodies[i] = got
        except (OSError, ConnectionError, asyncio.TimeoutError, ValueError, IndexError) as err:
            state["errors"] += 1
            state["first_error"] = state["first_error"] or f"{type(err).__name__}: {err}"
        finally:
            state["in_flight"] -= 1

    start = loop.time() + 0.05
    wall0 = time.perf_counter()
    for i in range(n):
        t_sched = start + sched[i]
        delay = t_sched - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if state["in_flight"] >= bound:
            state["dropped"] += 1
            continue
        state["in_flight"] += 1
        lag[i] = loop.time() - t_sched
        task = asyncio.create_task(one(i, t_sched))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    client.close()
    return LoadResult(sched, lat, lag, state["dropped"], state["errors"], state["first_error"],
                      time.perf_counter() - wall0, bodies)


def closed_loop(url: str, body, *, concurrency: int, n_requests: int, timeout_s: float = 30.0) -> dict:
    """``concurrency`` requests always in flight (each answered request is sent again at once) until
    ``n_requests`` are answered: ``{"throughput_per_s", "latencies_s", "wall_s"}``, the throughput
    counted over the middle 80% of the completions (the ramp up and down left out).

    Raises:
        ConnectionError: a request failed.
    """
    concurrency = check_positive_int("concurrency", concurrency)
    n_requests = check_positive_int("n_requests", n_requests, minimum=concurrency)
    client = _Client(url, _body(body), check_positive_float("timeout_s", timeout_s))
    return asyncio.run(_closed_loop(client, concurrency, n_requests))


async def _closed_loop(client: _Client, concurrency: int, n: int) -> dict:
    loop = asyncio.get_running_loop()
    done: list[float] = []
    lat: list[float] = []
    left = [n - concurrency]

    async def worker():
        while True:
            t = loop.time()
            await client.post()
            now = loop.time()
            done.append(now)
            lat.append(now - t)
            if left[0] <= 0:
                return
            left[0] -= 1

    t0 = loop.time()
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        client.close()
    times = np.sort(np.asarray(done))
    lo, hi = int(0.1 * times.size), int(0.9 * times.size) - 1
    rate = (hi - lo) / (times[hi] - times[lo]) if hi > lo and times[hi] > times[lo] else math.nan
    return {"throughput_per_s": float(rate), "latencies_s": np.asarray(lat), "completions_s": times - t0,
            "wall_s": float(loop.time() - t0)}


def lone_round_trips(url: str, body, *, n: int, gap_s: float = 0.01, timeout_s: float = 30.0) -> np.ndarray:
    """``n`` requests one at a time, ``gap_s`` apart (none in flight when the next is sent): their
    round-trip times in seconds."""
    n = check_positive_int("n", n)
    gap_s = check_positive_float("gap_s", gap_s, allow_zero=True)
    client = _Client(url, _body(body), check_positive_float("timeout_s", timeout_s))

    async def run():
        loop = asyncio.get_running_loop()
        out = []
        try:
            for _ in range(n):
                t = loop.time()
                await client.post()
                out.append(loop.time() - t)
                await asyncio.sleep(gap_s)
        finally:
            client.close()
        return np.asarray(out)

    return asyncio.run(run())


def _theil_sen(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Theil-Sen line ``y = a + s x``: ``s`` the median of the pairwise slopes, ``a`` the median of
    ``y - s x`` (Sen 1968): one point disturbed by a burst of other work on the machine moves it little,
    where it would drag a least-squares line."""
    i, j = np.triu_indices(x.size, k=1)
    keep = x[j] != x[i]
    slope = float(np.median((y[j] - y[i])[keep] / (x[j] - x[i])[keep]))
    return slope, float(np.median(y - slope * x))


def fit_overhead(batches, busy_s, forward_s, lone_s, gaps_s=None) -> dict:
    """The overhead terms from measured busy times per batch and lone round trips.

    The line ``S(b) - L(b) = o_0 + o_1 b`` is fitted by Theil-Sen (robust to a point disturbed by other
    work on a shared machine).

    Args:
        batches: the max batch sizes measured (at least 2 different).
        busy_s: ``S(b) = b / X(b)``, seconds a full batch of ``b`` keeps the server busy.
        forward_s: the forward latency ``L(b)`` (from ``batchlaw profile``) at the same sizes.
        lone_s: round trips (s) of lone requests at max batch 1, no delay.
        gaps_s: times between consecutive completions at max batch 1 with the server saturated
            (s): samples of its busy time per batch, whose spread is the busy-time jitter. A lone
            round trip holds one busy time, so the delay jitter then keeps only the rest of the lone
            round trips' variance (the spread scaled by ``sqrt(1 - var(gaps) / var(lone))``, none if
            the busy time explains all of it): the two are not counted twice.

    Returns:
        ``{"batch_s": o_0, "per_request_s": o_1, "fixed_s": c, "jitter_s": [percentiles 0..100 of
        lone - median] or None, "busy_jitter_s": [percentiles 0..100 of gaps - their mean] or None,
        "fit_rms_s": rms residual of the line}`` in seconds; ``o_0`` and ``c`` are clipped at 0 (a
        negative constant is noise, said in ``notes``).
    """
    b = np.asarray(batches, dtype=float)
    s = np.asarray(busy_s, dtype=float)
    f = np.asarray(forward_s, dtype=float)
    lone = np.asarray(lone_s, dtype=float)
    if b.ndim != 1 or b.size != s.size or b.size != f.size or np.unique(b).size < 2:
        raise ValueError("The overhead fit needs busy times and forward latencies at 2 or more different batch sizes.")
    if not (np.all(np.isfinite(s)) and np.all(s > 0) and np.all(np.isfinite(f)) and np.all(f > 0)):
        raise ValueError(f"Busy times and forward latencies must be finite and > 0. Got {s.tolist()} and {f.tolist()}.")
    if lone.ndim != 1 or lone.size < 10 or not np.all(np.isfinite(lone)):
        raise ValueError("The overhead fit needs at least 10 finite lone round trips (seconds).")
    over = s - f
    slope, intercept = _theil_sen(b, over)
    notes = []
    if intercept < 0:  # refit through the origin: per-request cost only
        notes.append(f"the fitted overhead per batch was {intercept * 1e3:.3g} ms < 0 (noise): set to 0 and the "
                     "per-request term refitted alone")
        intercept, slope = 0.0, float(np.median(over / b))
    if slope < 0:
        notes.append(f"the fitted overhead per request was {slope * 1e3:.3g} ms < 0: set to 0, the per-batch term "
                     "is the median overhead")
        slope, intercept = 0.0, float(max(np.median(over), 0.0))
    resid = over - (intercept + slope * b)
    med = float(np.median(lone))
    s1 = float(intercept + slope + np.interp(1.0, b, f))  # S(1) on the fitted line
    fixed = med - s1
    if fixed < 0:
        notes.append(f"the lone round trip ({med * 1e3:.3g} ms) is below the fitted busy time of a batch of 1 "
                     f"({s1 * 1e3:.3g} ms): the fixed delay is set to 0")
        fixed = 0.0
    busy_jitter = None
    spread = lone - med
    if gaps_s is not None:
        g = np.asarray(gaps_s, dtype=float)
        if g.ndim != 1 or g.size < 10 or not np.all(np.isfinite(g)) or np.any(g < 0):
            raise ValueError("The busy-time jitter needs at least 10 finite completion gaps >= 0 (seconds).")
        busy_jitter = np.percentile(g - g.mean(), _JITTER_PERCENTILES).tolist()
        # a lone round trip holds one busy time: the delay jitter is the rest of its variance
        rest = lone.var() - g.var()
        spread = spread * math.sqrt(rest / lone.var()) if rest > 0 and lone.var() > 0 else None
    return {"batch_s": float(intercept), "per_request_s": float(slope), "fixed_s": float(fixed),
            "jitter_s": None if spread is None else np.percentile(spread, _JITTER_PERCENTILES).tolist(),
            "busy_jitter_s": busy_jitter,
            "fit_rms_s": float(np.sqrt(np.mean(resid ** 2))), "notes": notes}


def measure_overhead(url: str, body, configure: Callable[[int, float], None], forward: dict[int, float], *,
                     n_lone: int = 200, requests_per_batch: int = 40, rounds: int = 3, probe_delay_s: float = 0.01,
                     delay_from: str = "pickup", timeout_s: float = 30.0) -> dict:
    """Measure and fit the serving overhead of a batching server (see the module docstring).

    Args:
        url: the server's endpoint.
        body: JSON text of one request.
        configure: ``configure(max_batch, delay_s)`` sets the server's batcher (e.g. Ray Serve's
            ``set_max_batch_size`` and ``set_batch_wait_timeout_s`` behind a route).
        forward: ``{batch size: L(b) seconds}`` from ``batchlaw profile``; every size in it is measured.
        n_lone: lone round trips for the fixed delay and the jitter.
        requests_per_batch: requests per measured size, in multiples of its batch (at least 20), split
            over the rounds.
        rounds: passes over the sizes; each size's busy time is the median over the passes, so that a
            burst of other work on a shared machine during one pass moves it little.
        probe_delay_s: the max queue delay with which lone requests (which wait all of it) time the
            timer's lateness.
        delay_from: when the server's max queue delay starts (``"pickup"``: Ray Serve's
            ``@serve.batch``; ``"arrival"``), stored for ``plan serve``.
        timeout_s: a request not answered within this fails the measurement.

    Returns:
        A ``batchlaw.serving_overhead/1`` dict: the rows measured (``batch``, ``busy_s``,
        ``forward_s``, ``throughput_per_s``), the lone round trips' percentiles, and the fitted
        ``batch_s``, ``per_request_s``, ``fixed_s`` and ``jitter_s`` (seconds).
    """
    if delay_from not in ("pickup", "arrival"):
        raise ValueError(f"The 'delay_from' parameter must be 'pickup' or 'arrival'. Got {delay_from!r} instead.")
    if not isinstance(forward, dict) or len(forward) < 2:
        raise ValueError("The 'forward' parameter must map at least 2 batch sizes to their forward latency L(b) (s).")
    n_lone = check_positive_int("n_lone", n_lone, minimum=10)
    reps = check_positive_int("requests_per_batch", requests_per_batch, minimum=20)
    rounds = check_positive_int("rounds", rounds)
    sizes = sorted(forward)
    rates: dict[int, list[float]] = {b: [] for b in sizes}
    gaps: list[np.ndarray] = []
    for _ in range(rounds):
        for b in sizes:
            configure(b, 0.5)  # a batch waits to fill: with 3b in flight every batch is full
            closed_loop(url, body, concurrency=3 * b, n_requests=3 * b, timeout_s=timeout_s)  # warm up
            n = max(reps * b, _MIN_SATURATION_REQUESTS) // rounds
            got = closed_loop(url, body, concurrency=3 * b, n_requests=max(n, 3 * b), timeout_s=timeout_s)
            rates[b].append(got["throughput_per_s"])
            if b == 1:  # one completion per batch: the gaps are busy times (middle 80%, as the throughput)
                done = got["completions_s"]
                gaps.append(np.diff(done[int(0.1 * done.size):int(0.9 * done.size)]))
    rows = []
    # how much the server's capacity moved while it was measured (0 with one round)
    variation = max(max(rates[b]) / min(rates[b]) - 1.0 for b in sizes)
    for b in sizes:
        x = float(np.median(rates[b]))
        rows.append({"batch": int(b), "throughput_per_s": x, "busy_s": b / x, "forward_s": float(forward[b]),
                     "throughput_rounds_per_s": rates[b]})
    probe = check_positive_float("probe_delay_s", probe_delay_s)
    configure(1, 0.0)
    lone_round_trips(url, body, n=5, timeout_s=timeout_s)  # warm up
    lone = lone_round_trips(url, body, n=n_lone, timeout_s=timeout_s)
    configure(2, probe)  # a lone request now waits the whole delay, then the timer's wake-up
    waited = lone_round_trips(url, body, n=max(n_lone // 2, 10), timeout_s=timeout_s)
    fit = fit_overhead([r["batch"] for r in rows], [r["busy_s"] for r in rows], [r["forward_s"] for r in rows], lone,
                       np.concatenate(gaps) if gaps else None)
    late = float(np.median(waited) - probe - np.median(lone))
    if late < 0:
        fit["notes"].append(f"lone requests with a {probe * 1e3:g} ms delay came back {-late * 1e3:.2g} ms sooner than "
                            "the delay accounts for (noise): the timer lateness is set to 0")
        late = 0.0
    fit["timer_lateness_s"] = late
    if not gaps:
        fit["notes"].append("no busy-time jitter: it is measured at max batch 1, which the forward curve lacks")
    return {"schema": "batchlaw.serving_overhead/1", "url": url, "delay_from": delay_from, "rows": rows,
            "n_lone": int(lone.size),
            "lone_round_trip_s": {"p50": float(np.median(lone)), "p99": float(np.quantile(lone, 0.99)),
                                  "mean": float(lone.mean())}, "probe_delay_s": probe,
            "lone_with_delay_round_trip_s": {"p50": float(np.median(waited)), "p99": float(np.quantile(waited, 0.99))},
            "batch_s": fit["batch_s"], "per_request_s": fit["per_request_s"], "fixed_s": fit["fixed_s"],
            "jitter_s": fit["jitter_s"], "busy_jitter_s": fit["busy_jitter_s"],
            "timer_lateness_s": fit["timer_lateness_s"], "fit_rms_s": fit["fit_rms_s"],
            "throughput_variation": float(variation), "notes": fit["notes"]}
