"""batchlaw's open-loop load generator and the serving-overhead fit, against small HTTP servers run here
(the standard library's, in a thread) whose answers are known: a fixed service time, an error, a chunked body, and a
dynamic batcher (Ray Serve's pickup rule) whose batch of ``b`` is busy ``o_0 + o_1 b + L(b)`` seconds."""

from __future__ import annotations

import json
import queue
import threading
import time

import numpy as np
import pytest

from batchlaw.cli import main
from batchlaw.profile import serving
from batchlaw.profile.serving import closed_loop, fit_overhead, lone_round_trips, measure_overhead, open_loop


class _Server:
    """An HTTP/1.1 keep-alive server (the standard library's, one thread per connection) in a background
    thread; ``handler(path, body)`` returns ``(status, body bytes, chunked)``."""

    def __init__(self, handler):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # TCP_NODELAY, and one write per response (no delayed-ACK stalls)
            wbufsize = -1

            def do_POST(self):  # noqa: N802 (the standard library's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, out, chunked = handler(self.path, body)
                self.send_response(status)
                if chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    half = len(out) // 2
                    for part in (out[:half], out[half:]):
                        if part:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.send_header("Content-Length", str(len(out)))
                    self.end_headers()
                    self.wfile.write(out)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def sleeper():
    def handler(path, body):
        time.sleep(0.05)
        if path == "/fail":
            return 500, b"boom", False
        return 200, b'{"ok": true, "n": 12345}', path == "/chunked"

    s = _Server(handler)
    yield s
    s.close()


def test_the_load_is_open_loop_sent_on_schedule_whatever_the_responses(sleeper):
    """Every response takes 50 ms; at 100 requests/s five are in flight. The sends keep to the Poisson
    schedule (small lag) and each latency is about 50 ms; a closed loop could not offer this load."""
    arr = np.cumsum(np.random.default_rng(0).exponential(0.01, 120))
    res = open_loop(sleeper.url, "{}", arr, max_in_flight=100)
    s = res.summary()
    assert (s["n_completed"], s["dropped"], s["errors"]) == (120, 0, 0)
    assert 0.045 < s["p50_latency_s"] < 0.15 and s["lag_p50_s"] < 0.02
    assert s["offered_rate_per_s"] == pytest.approx(119 / (arr[-1] - arr[0]))
    np.testing.assert_allclose(res.scheduled_s, arr - arr[0])


def test_the_bound_on_requests_in_flight_drops_arrivals_and_counts_them(sleeper):
    arr = np.arange(40) * 0.005  # 200/s against 50 ms: 10 would be in flight
    s = open_loop(sleeper.url, "{}", arr, max_in_flight=2).summary()
    assert s["dropped"] > 20 and s["dropped"] + s["n_completed"] == 40


def test_failures_are_counted_and_chunked_bodies_read(sleeper):
    res = open_loop(sleeper.url + "fail", "{}", np.arange(5) * 0.01)
    assert res.errors == 5 and "HTTP 500" in res.first_error and np.all(np.isnan(res.latency_s))
    res = open_loop(sleeper.url + "chunked", "{}", np.arange(5) * 0.01, keep_bodies=True)
    assert [json.loads(b)["n"] for b in res.bodies] == [12345] * 5
    with pytest.raises(ConnectionError, match="HTTP 500"):
        closed_loop(sleeper.url + "fail", "{}", concurrency=1, n_requests=2)


def test_closed_loop_throughput_is_concurrency_over_service_time(sleeper):
    got = closed_loop(sleeper.url, "{}", concurrency=4, n_requests=80)
    assert got["throughput_per_s"] == pytest.approx(4 / 0.05, rel=0.3)
    assert lone_round_trips(sleeper.url, "{}", n=3, gap_s=0.0).min() >= 0.05


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="http:// URL"):
        open_loop("https://x/", "{}", [0.0])
    with pytest.raises(ValueError, match="non-empty sorted"):
        open_loop("http://127.0.0.1:1/", "{}", [1.0, 0.0])
    with pytest.raises(ValueError, match="'body' parameter"):
        open_loop("http://127.0.0.1:1/", b"", [0.0])


def test_fit_recovers_known_overhead_terms_despite_one_disturbed_point():
    """S(b) - L(b) = 3 ms + 2 ms b exactly, except one size slowed by a burst of other work: Theil-Sen
    finds the line; the fixed delay is the lone round trip minus S(1); the delay jitter keeps the lone
    variance the busy time does not explain."""
    rng = np.random.default_rng(1)
    b = np.array([1, 2, 4, 8, 16])
    lf = 0.001 * b
    busy = lf + 0.003 + 0.002 * b
    busy[2] += 0.03  # a disturbed measurement
    gaps = busy[0] + rng.normal(0, 0.002, 4000).clip(-0.0055, None)
    lone = 0.004 + busy[0] + rng.normal(0, 0.002, 4000) + rng.normal(0, 0.0015, 4000)
    fit = fit_overhead(b, busy, lf, lone, gaps)
    assert fit["batch_s"] == pytest.approx(0.003, abs=1e-9) and fit["per_request_s"] == pytest.approx(0.002, abs=1e-9)
    assert fit["fixed_s"] == pytest.approx(0.004, abs=2e-4)
    assert np.std(np.asarray(fit["busy_jitter_s"])[5:96]) > 0  # a spread, about the mean
    assert abs(np.mean(fit["busy_jitter_s"])) < 3e-4
    j = np.asarray(fit["jitter_s"])
    assert (j[84] - j[16]) / 2 == pytest.approx(0.0015, rel=0.15)  # one sigma of the rest, not 2.5 ms
    least_squares = np.polyfit(b, busy - lf, 1)
    assert abs(least_squares[0] - 0.002) > 2e-4  # the point the robust fit shrugs off drags least squares
    with pytest.raises(ValueError, match="2 or more different batch sizes"):
        fit_overhead([1, 1], [0.01, 0.01], [0.001, 0.001], lone)


class _Batcher:
    """Ray Serve's batching loop in miniature, in a thread: a request joins a queue; the loop picks up the
    oldest, collects for up to ``delay`` or until ``max_batch`` are in, then is busy ``o_0 + o_1 b + L(b)``
    seconds (a sleep); ``POST /configure`` sets max batch and delay."""

    O0, O1 = 0.012, 0.006

    def __init__(self):
        self.max_batch, self.delay = 1, 0.0
        self.queue = queue.Queue()
        threading.Thread(target=self._loop, daemon=True).start()

    def forward(self, b):
        return 0.001 * b

    def handle(self, path, body):
        if path == "/configure":
            cfg = json.loads(body)
            self.max_batch, self.delay = cfg["max_batch_size"], cfg["batch_wait_timeout_s"]
            return 200, b"{}", False
        slot = {"done": threading.Event()}
        self.queue.put(slot)
        slot["done"].wait()
        return 200, json.dumps({"batch": slot["batch"]}).encode(), False

    def _loop(self):
        while True:
            batch = [self.queue.get()]
            end = time.monotonic() + self.delay
            while len(batch) < self.max_batch:
                try:
                    batch.append(self.queue.get(timeout=max(end - time.monotonic(), 0)) if self.delay > 0
                                 else self.queue.get_nowait())
                except queue.Empty:
                    break
            time.sleep(self.O0 + self.O1 * len(batch) + self.forward(len(batch)))
            for slot in batch:
                slot["batch"] = len(batch)
                slot["done"].set()


def test_measure_overhead_finds_a_batchers_known_busy_time(monkeypatch, tmp_path, capsys):
    """Through HTTP, the busy time per batch and per request of a batcher that sleeps a known time;
    the same through `batchlaw profile serve`, which adds it to the profile for `plan serve`."""
    monkeypatch.setattr(serving, "_MIN_SATURATION_REQUESTS", 30)
    batcher = _Batcher()
    server = _Server(batcher.handle)
    try:
        cfg_url = server.url + "configure"
        fwd = {b: batcher.forward(b) for b in (1, 2, 4)}
        import urllib.request

        def configure(b, d):
            urllib.request.urlopen(urllib.request.Request(cfg_url, data=json.dumps(
                {"max_batch_size": b, "batch_wait_timeout_s": d}).encode()), timeout=10).read()

        got = measure_overhead(server.url, "{}", configure, fwd, n_lone=20, requests_per_batch=20, rounds=1)
        # sleeps overshoot a little on a loaded machine: the known terms are lower bounds, within a few ms
        assert 0.012 <= got["batch_s"] + 1e-3 and got["batch_s"] < 0.012 + 0.008
        assert got["per_request_s"] == pytest.approx(0.006, abs=0.0025)
        assert got["fixed_s"] < 0.01 and got["timer_lateness_s"] < 0.01
        assert [r["batch"] for r in got["rows"]] == [1, 2, 4] and got["throughput_variation"] == 0.0  # one round
        prof = tmp_path / "p.json"
        prof.write_text(json.dumps({"schema": "batchlaw.profile/1", "parameters": 10, "tokens_per_example": None,
                                    "train": [], "forward": [{"batch": b, "status": "ok", "latency_s": t}
                                                             for b, t in fwd.items()]}))
        argv = ["profile", "serve", "--url", server.url, "--body", "{}", "--configure-url", cfg_url, "--profile",
                str(prof), "--lone", "20", "--requests-per-batch", "20", "--rounds", "1"]
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert "ms per request (busy" in out and "timer lateness" in out
        stored = json.loads(prof.read_text())
        assert stored["serving"]["schema"] == "batchlaw.serving_overhead/1" and stored["serving"]["delay_from"] == "pickup"
        assert stored["forward"][0]["latency_s"] == 0.001  # the rest of the profile kept
        assert main(["plan", "serve", "--profile", str(prof), "--rate", "20", "--slo-p99-ms", "500", "--json"]) == 0
        plan = json.loads(capsys.readouterr().out)
        assert plan["overhead"]["per_request_s"] == stored["serving"]["per_request_s"]
    finally:
        server.close()


def test_profile_serve_says_when_the_server_does_not_answer(tmp_path, capsys, sleeper):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/"  # nothing listens there once closed
    prof = tmp_path / "p.json"
    prof.write_text(json.dumps({"schema": "batchlaw.profile/1", "parameters": 10, "tokens_per_example": None,
                                "train": [], "forward": [{"batch": b, "status": "ok", "latency_s": 0.001 * b}
                                                         for b in (1, 2)]}))
    base = ["profile", "serve", "--body", "{}", "--profile", str(prof)]
    assert main(base + ["--url", sleeper.url, "--configure-url", closed]) == 2
    assert "'--configure-url'" in capsys.readouterr().err
    assert main(base + ["--url", closed, "--configure-url", sleeper.url]) == 2  # the sleeper takes any POST
    assert "The server at '--url'" in capsys.readouterr().err


@pytest.mark.parametrize("argv,msg", [
    (["--url", "ftp://x/"], "'--url' option must be an http:// URL"),
    (["--configure-url", "nope"], "'--configure-url' option must be an http:// URL"),
    (["--body", "{not json"], "'--body' option must be the JSON"),
    (["--body", "@missing.json"], "'--body' file 'missing.json' does not exist"),
    (["--lone", "3"], "'--lone' option must be an integer >= 10"),
    (["--profile", "nope.json"], "does not exist"),
    (["--max-batch", "1"], "forward latencies at 1 batch size"),
])
def test_profile_serve_checks_its_options_before_any_request(tmp_path, capsys, argv, msg):
    prof = tmp_path / "p.json"
    prof.write_text(json.dumps({"schema": "batchlaw.profile/1", "parameters": 10, "tokens_per_example": None,
                                "train": [], "forward": [{"batch": b, "status": "ok", "latency_s": 0.001 * b}
                                                         for b in (1, 2, 4)]}))
    base = {"--url": "http://127.0.0.1:9/", "--body": "{}", "--configure-url": "http://127.0.0.1:9/configure",
            "--profile": str(prof)}
    for k, v in zip(argv[::2], argv[1::2]):
        base[k] = v
    extra = [a for k, v in base.items() for a in (k, v)]
    assert main(["profile", "serve", *extra]) == 2  # port 9 (discard) is never contacted: refused before
    assert msg in capsys.readouterr().err
