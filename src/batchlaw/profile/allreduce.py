"""Measure ``torch.distributed`` all-reduce times (gloo on CPU, NCCL on GPUs) to check the ring model.

Each world size runs in its own group of processes (``fork`` on CPU, ``spawn`` for CUDA); every rank
times ``repeats`` all-reduces of each size (sizes interleaved, a barrier before each) after
``warmup`` untimed ones; the slowest rank's minimum (default: the figure least disturbed by other
work on a shared machine) or median per call is reported. :func:`batchlaw.plan.comm.fit_link` fits the ring model's latency and bandwidth
to the result.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist

from .._validation import check_choice, check_positive_int

__all__ = ["measure_allreduce"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, sizes, repeats, warmup, backend, stat, queue):
    try:
        torch.set_num_threads(1)
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
        device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
        xs = [torch.ones(max(1, n // 4), dtype=torch.float32, device=device) for n in sizes]  # (n,) fp32 each
        for x in xs:
            for _ in range(warmup):
                dist.all_reduce(x)
        times = [[] for _ in xs]
        for _ in range(repeats):  # sizes interleaved, so a busy spell of the machine hits them alike
            for x, ts in zip(xs, times):
                dist.barrier()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t0 = time.perf_counter()
                dist.all_reduce(x)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                ts.append(time.perf_counter() - t0)
        out = []
        for x, ts in zip(xs, times):
            t = torch.tensor([min(ts) if stat == "min" else statistics.median(ts)], dtype=torch.float64, device=device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)  # the slowest rank's figure
            out.append({"n_bytes": x.numel() * 4, "world": world, "seconds": float(t.item()), "backend": backend,
                        "stat": stat})
        if rank == 0:
            queue.put(out)
        dist.destroy_process_group()
    except Exception as err:  # reported to the parent, which raises
        queue.put(f"rank {rank}: {type(err).__name__}: {err}")


def measure_allreduce(sizes_bytes: list[int], world_sizes: list[int], *, repeats: int = 10, warmup: int = 3,
                      backend: str = "gloo", stat: str = "min", timeout_s: float = 300.0) -> list[dict]:
    """Median seconds of one all-reduce for each (size, world size).

    Args:
        sizes_bytes: message sizes in bytes (fp32 elements x 4).
        world_sizes: numbers of processes (each >= 2).
        repeats: timed calls per size.
        warmup: untimed calls per size.
        backend: ``"gloo"`` (CPU) or ``"nccl"`` (one GPU per rank).
        stat: ``"min"`` or ``"median"`` over the repeats.
        timeout_s: give up on a world size after this long.

    Returns:
        ``[{"n_bytes", "world", "seconds", "backend"}, ...]``.

    Raises:
        ValueError: bad arguments; RuntimeError: a rank failed or timed out.
    """
    backend = check_choice("backend", backend, ("gloo", "nccl"))
    stat = check_choice("stat", stat, ("min", "median"))
    sizes = [check_positive_int("sizes_bytes", s) for s in sizes_bytes]
    repeats, warmup = check_positive_int("repeats", repeats), check_positive_int("warmup", warmup, minimum=0)
    if backend == "nccl" and max(world_sizes) > torch.cuda.device_count():
        raise ValueError(f"NCCL needs one GPU per rank: {max(world_sizes)} ranks, {torch.cuda.device_count()} GPUs.")
    ctx = mp.get_context("spawn" if backend == "nccl" else "fork")
    results = []
    for world in world_sizes:
        world = check_positive_int("world_sizes", world, minimum=2)
        port, queue = _free_port(), ctx.Queue()
        procs = [ctx.Process(target=_worker, args=(r, world, port, sizes, repeats, warmup, backend, stat, queue))
                 for r in range(world)]
        for p in procs:
            p.start()
        try:
            got = queue.get(timeout=timeout_s)
        except Exception:
            got = f"no answer within {timeout_s:g} s"
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                os.kill(p.pid, 9)
        if isinstance(got, str):
            raise RuntimeError(f"all-reduce measurement on {world} ranks failed: {got}")
        results += got
    return results
