"""A small torch model behind Ray Serve's dynamic batcher (``@serve.batch``), on this machine, over HTTP.

Used by ``bench/serve_validate.py``, ``tests/test_serve_ray.py`` and ``docs/howto-serve.md``.

- ``make_model()`` is a ``batchlaw profile --model`` factory: ``(model, make_batch)``, a 4-layer MLP on
  64 inputs (8.5 M parameters) and a maker of ``b`` random inputs.
- ``BatchedModel`` is the deployment: ``POST /`` with ``{"x": [64 floats]}`` answers ``{"label": k, "batch": b,
  "forward_start": t0, "forward_end": t1}`` (the size of the batch it was served in, and when its
  forward ran, ``time.perf_counter`` of the replica: the same clock as every process here);
  ``POST /configure`` with ``{"max_batch_size": b, "batch_wait_timeout_s": s}`` sets the batcher (Ray's
  ``set_max_batch_size`` / ``set_batch_wait_timeout_s``), which ``batchlaw profile serve`` uses.
- ``start(max_batch, delay_s)`` starts a local Ray and the app on a free loopback port and returns
  its URL; ``stop()`` shuts both down.

The model call holds the replica's event loop, as Ray's ``@serve.batch`` examples do.
"""

from __future__ import annotations

import json
import os
import socket
import time

import torch

N_INPUTS = 64
#: JSON body of one request (the values do not change the forward time)
BODY = json.dumps({"x": [0.5] * N_INPUTS})


def make_model():
    """``(model, make_batch)``: the MLP (seeded) and ``make_batch(b)``, ``b`` inputs of 64 floats."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(N_INPUTS, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 2048),
                              torch.nn.ReLU(), torch.nn.Linear(2048, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 10))
    return net.eval(), lambda b: torch.randn(b, N_INPUTS)


def _deployment():
    from ray import serve
    from starlette.requests import Request

    @serve.deployment(num_replicas=1, max_ongoing_requests=4096, ray_actor_options={"num_cpus": 1})
    class BatchedModel:
        def __init__(self, max_batch: int, delay_s: float):
            self.net, _ = make_model()
            self.configure(max_batch, delay_s)

        def configure(self, max_batch: int, delay_s: float) -> dict:
            self.predict.set_max_batch_size(int(max_batch))
            self.predict.set_batch_wait_timeout_s(float(delay_s))
            return {"max_batch_size": int(max_batch), "batch_wait_timeout_s": float(delay_s),
                    "threads": torch.get_num_threads()}

        @serve.batch(max_batch_size=1, batch_wait_timeout_s=0.0)
        async def predict(self, xs: list[list[float]]) -> list[tuple[int, int, float, float]]:
            t0 = time.perf_counter()
            with torch.no_grad():
                labels = self.net(torch.tensor(xs, dtype=torch.float32)).argmax(dim=1).tolist()
            t1 = time.perf_counter()
            return [(k, len(xs), t0, t1) for k in labels]

        async def __call__(self, request: Request) -> dict:
            data = await request.json()
            if request.url.path.rstrip("/").endswith("configure"):
                return self.configure(data["max_batch_size"], data["batch_wait_timeout_s"])
            label, batch, t0, t1 = await self.predict(data["x"])
            return {"label": label, "batch": batch, "forward_start": t0, "forward_end": t1}

    return BatchedModel


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(max_batch: int = 1, delay_s: float = 0.0, num_cpus: int | None = None) -> str:
    """Start a local Ray (``num_cpus``: this machine's by default) and the app; returns its URL."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local, loopback-only cluster
    # the replica imports this module (and batchlaw's deps) the way the driver does
    here = os.path.dirname(os.path.abspath(__file__))
    paths = [here] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    import ray
    from ray import serve

    ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(_deployment().bind(max_batch, delay_s), name="batchlaw_bench", route_prefix="/")
    return f"http://127.0.0.1:{port}/"


def stop() -> None:
    import ray
    from ray import serve

    try:
        serve.shutdown()
    finally:
        ray.shutdown()


def configurer(url: str):
    """``configure(max_batch, delay_s)`` for :func:`batchlaw.profile.serving.measure_overhead`: a POST to
    the app's ``/configure`` route."""
    import urllib.request

    def configure(max_batch: int, delay_s: float) -> None:
        body = json.dumps({"max_batch_size": max_batch, "batch_wait_timeout_s": delay_s}).encode()
        req = urllib.request.Request(url.rstrip("/") + "/configure", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            r.read()

    return configure
