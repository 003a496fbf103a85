"""Worker functions for tests/test_distributed.py: run in real gloo process groups (spawned)."""

from __future__ import annotations

import math
import os
import traceback
import warnings

import torch
import torch.distributed as dist

from batchlaw.noise import GradientNoiseMonitor
from batchlaw.workloads import LinearRegression


class LinregWithSpare(torch.nn.Module):
    """Linear regression model plus a parameter the forward never uses (DDP find_unused_parameters)."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner
        self.spare = torch.nn.Linear(2, 2)

    def forward(self, x):
        return self.inner(x)


def _fixed_weight_run(model, wl, monitor, rank, seed, steps, b, k, mode, *, forward=None, ddp=None):
    """K micro-batches per step at fixed weights, rank-specific data; returns the monitor estimate."""
    gen = torch.Generator().manual_seed(1000 * seed + rank)
    forward = forward or model
    for _ in range(steps):
        for i in range(k):
            x, y = wl.sample_batch(b, gen)
            last = i == k - 1
            if mode == "no_sync" and not last:
                ctx = ddp.no_sync() if ddp is not None else _FsdpNoSync(model)
            else:
                ctx = _Null()
            with ctx:
                loss = 0.5 * (forward(x).squeeze(-1) - y).square().mean() / k
                loss.backward()
        monitor.step()
        model.zero_grad(set_to_none=True)
    return monitor.estimate()


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


class _FsdpNoSync:
    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.model.set_requires_gradient_sync(False)

    def __exit__(self, *a):
        self.model.set_requires_gradient_sync(True)
        return False


def _gather(value):
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def _estimate_dict(est):
    return {"b_simple": est.b_simple, "ci": list(est.ci), "n_steps": est.n_steps}


def accuracy_cases(rank, world, cfg):
    """Linreg at fixed weights under DDP (several settings) and FSDP2; returns per-case estimates."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    wl = LinearRegression(dim=16, noise_std=1.0, init_distance=1.0)
    truth = wl.b_simple(wl.make_model(0))
    out = {"truth": truth}
    b, steps = cfg["b"], cfg["steps"]
    for name, k, mode, ddp_kwargs in cfg["ddp_cases"]:
        model = wl.make_model(0)
        if name.startswith("unused"):
            model = LinregWithSpare(model)
        ddp = DDP(model, **ddp_kwargs)
        if name.startswith("hook"):
            from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

            calls = []

            def user_hook(state, bucket):
                calls.append(1)
                return default_hooks.bf16_compress_hook(state, bucket)

            ddp.register_comm_hook(dist.group.WORLD, user_hook)
        mon = GradientNoiseMonitor(ddp, micro_batch_size=b)
        est = _fixed_weight_run(model, wl, mon, rank, cfg["seed"], steps, b, k, mode, forward=ddp, ddp=ddp)
        rec = mon.records[-1]
        out[name] = {**_estimate_dict(est), "world_size": rec["world_size"], "global_batch": rec["global_batch"],
                     "accumulation": rec["accumulation"]}
        if name.startswith("hook"):
            out[name]["hook_calls"] = len(calls)
        mon.remove()
    for name, k, mode, mp in cfg.get("fsdp_cases", []):
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        model = torch.nn.Sequential(wl.make_model(0))
        kwargs = {}
        if mp:
            kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        fully_shard(model, **kwargs)
        mon = GradientNoiseMonitor(model, micro_batch_size=b)
        est = _fixed_weight_run(model, wl, mon, rank, cfg["seed"], steps, b, k, mode)
        out[name] = {**_estimate_dict(est), "world_size": mon.records[-1]["world_size"]}
        mon.remove()
    return out


def world_one_subgroup(rank, world, cfg):
    """DDP over a one-rank subgroup of a larger job: world size 1, K micro-batches."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    groups = [dist.new_group([r]) for r in range(world)]  # every rank creates every group
    wl = LinearRegression(dim=16, noise_std=1.0, init_distance=1.0)
    model = wl.make_model(0)
    ddp = DDP(model, process_group=groups[rank])
    mon = GradientNoiseMonitor(ddp, micro_batch_size=cfg["b"])
    est = _fixed_weight_run(model, wl, mon, rank, cfg["seed"], cfg["steps"], cfg["b"], 4, "no_sync", forward=ddp, ddp=ddp)
    return {**_estimate_dict(est), "world_size": mon.records[-1]["world_size"], "truth": wl.b_simple(model)}


def coverage(rank, world, cfg):
    """Interval coverage over seeds: K micro-batches on every rank, fresh data per seed."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    wl = LinearRegression(dim=16, noise_std=1.0, init_distance=1.0)
    model = wl.make_model(0)
    truth = wl.b_simple(model)
    ddp = DDP(model)
    hits, errors = 0, []
    for seed in range(cfg["seeds"]):
        mon = GradientNoiseMonitor(ddp, micro_batch_size=cfg["b"])
        est = _fixed_weight_run(model, wl, mon, rank, 100 + seed, cfg["steps"], cfg["b"], cfg["k"], "no_sync",
                                forward=ddp, ddp=ddp)
        mon.remove()
        hits += est.ci[0] <= truth <= est.ci[1]
        errors.append(est.b_simple / truth - 1)
    return {"hits": hits, "seeds": cfg["seeds"], "errors": errors}


def allreduce_count(rank, world, cfg):
    """torch.distributed.all_reduce calls made by the monitor: one per measured step."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    wl = LinearRegression(dim=16)
    model = wl.make_model(0)
    ddp = DDP(model)
    mon = GradientNoiseMonitor(ddp, micro_batch_size=4, every=cfg["every"])
    real, calls = dist.all_reduce, []

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    dist.all_reduce = counting  # DDP's reducer does not go through this Python function
    try:
        gen = torch.Generator().manual_seed(rank)
        for _ in range(cfg["steps"]):
            for i in range(4):
                with ddp.no_sync() if i < 3 else _Null():
                    x, y = wl.sample_batch(4, gen)
                    (0.5 * (ddp(x).squeeze(-1) - y).square().mean() / 4).backward()
            mon.step()
            ddp.zero_grad(set_to_none=True)
    finally:
        dist.all_reduce = real
    return {"calls": len(calls), "measured": len(mon.records)}


def auto_cadence(rank, world, cfg):
    """every="auto" under DDP, with rank 1's hooks made slow (a sleep in its norms): every rank picks the same
    cadence at the same step, through the monitor's own all-reduce, and measures the same steps."""
    import time as _time

    from torch.nn.parallel import DistributedDataParallel as DDP

    import batchlaw.noise.monitor as monitor_module

    wl = LinearRegression(dim=16)
    model = wl.make_model(0)
    ddp = DDP(model)
    real_norms = monitor_module.norms
    if rank == 1:
        def slow_norms(tensors):
            _time.sleep(cfg["sleep_s"])
            return real_norms(tensors)

        monitor_module.norms = slow_norms
    real, calls = dist.all_reduce, []

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    dist.all_reduce = counting
    try:
        mon = GradientNoiseMonitor(ddp, micro_batch_size=4, every="auto", overhead_target=cfg["target"])
        gen = torch.Generator().manual_seed(rank)
        cadences = []
        for _ in range(cfg["steps"]):
            for i in range(2):
                with ddp.no_sync() if i == 0 else _Null():
                    x, y = wl.sample_batch(4, gen)
                    (0.5 * (ddp(x).squeeze(-1) - y).square().mean() / 2).backward()
            mon.step()
            cadences.append(mon.cadence["every"])
            ddp.zero_grad(set_to_none=True)
        return {"cadences": cadences, "steps": [r["step"] for r in mon.records], "calls": len(calls),
                "report": mon.cadence}
    finally:
        dist.all_reduce = real
        monitor_module.norms = real_norms


def unequal_sizes(rank, world, cfg):
    """Micro-batches of unequal size, different on each rank (mean size and K), under DDP, for each
    loss normalisation: the first step's record against the brute-force sums over every rank's
    micro-batch gradients (linreg gradients in closed form), and the estimate against the truth."""
    import numpy as np
    from torch.nn.parallel import DistributedDataParallel as DDP

    wl = LinearRegression(dim=16, noise_std=1.0, init_distance=1.0)
    out = {"truth": wl.b_simple(wl.make_model(0))}
    k, mean = 3 + rank, 24 + 16 * rank  # rank 0: 3 micro-batches of about 24, rank 1: 4 of about 40
    for case in cfg["modes"]:
        mode, _, given = case.partition("+")  # "global_step+total": the total passed as loss_total
        model = wl.make_model(0)
        ddp = DDP(model)
        mon = GradientNoiseMonitor(ddp, loss_normalisation=mode)
        gen = torch.Generator().manual_seed(1000 * cfg["seed"] + rank)
        rng = np.random.default_rng(cfg["seed"] + 7 * rank)
        w = model.weight.detach()[0].double()
        for step in range(cfg["steps"]):
            sizes = np.maximum(1, np.round(mean * (1 + 0.3 * rng.standard_normal(k)))).astype(int).tolist()
            total = torch.tensor(float(sum(sizes)), dtype=torch.float64)
            if mode == "global_step":
                dist.all_reduce(total)
            mine = []  # (n_i, a_i, g_i): g_i the gradient of micro-batch i's mean loss
            for i, n in enumerate(sizes):
                x, y = wl.sample_batch(n, gen)
                a = {"micro_batch": 1.0 / k, "step": n / sum(sizes), "global_step": world * n / float(total)}[mode]
                with ddp.no_sync() if i < k - 1 else _Null():
                    (a * 0.5 * (ddp(x).squeeze(-1) - y).square().mean()).backward()
                if step == 0:
                    r = x.double() @ w - y.double()
                    mine.append((n, a, (r[:, None] * x.double()).mean(0)))
            mon.step(sizes=sizes, loss_total=float(total) if given else None)
            model.zero_grad(set_to_none=True)
            if step == 0:
                every = [m for part in _gather(mine) for m in part]
                n = torch.tensor([float(m[0]) for m in every], dtype=torch.float64)
                a = torch.tensor([m[1] for m in every], dtype=torch.float64)
                g = torch.stack([m[2] for m in every])  # (M, d)
                wts = a / a.sum()
                first = {"small_sq": float(g.square().sum(1).mean()), "big_sq": float((wts @ g).square().sum()),
                         "b_small": float(len(n) / n.reciprocal().sum()),
                         "b_big": float(1.0 / (wts.square() / n).sum()), "global_batch": int(n.sum())}
        rec = mon.records[0]
        est = mon.estimate()
        mon.remove()
        out[case] = {"first": first, "record": {key: rec[key] for key in first}, "b_simple": est.b_simple,
                     "accumulation": rec["accumulation"]}
    return out


def suite(rank, world, cfg):
    """Several worker functions in one process group (saves spawning processes)."""
    return {name: globals()[name](rank, world, cfg[name]) for name in cfg}


def _train_ddp(bucket_view, with_monitor, steps=6, k=3):
    from torch.nn.parallel import DistributedDataParallel as DDP

    from batchlaw.workloads import ByteMLP

    wl = ByteMLP(context=4, embed=8, hidden=32)
    model = wl.make_model(0)
    ddp = DDP(model, gradient_as_bucket_view=bucket_view)
    opt = torch.optim.Adam(ddp.parameters(), lr=3e-3)
    mon = GradientNoiseMonitor(ddp, micro_batch_size=8) if with_monitor else None
    gen = torch.Generator().manual_seed(7 + dist.get_rank())
    for _ in range(steps):
        for i in range(k):
            ctx = ddp.no_sync() if i < k - 1 else _Null()
            with ctx:
                x, y = wl.sample_batch(8, gen)
                (torch.nn.functional.cross_entropy(ddp(x), y) / k).backward()
        if mon is not None:
            mon.step()
        torch.nn.utils.clip_grad_norm_(ddp.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return [p.detach().clone() for p in model.parameters()], mon


def bit_for_bit(rank, world, cfg):
    """DDP training with and without the monitor: identical parameters on every rank."""
    out = {}
    for bucket_view in (False, True):
        plain, _ = _train_ddp(bucket_view, False)
        watched, mon = _train_ddp(bucket_view, True)
        out[str(bucket_view)] = all(torch.equal(a, b) for a, b in zip(plain, watched))
        out[f"records_{bucket_view}"] = len(mon.records)
    return out


def refusals(rank, world, cfg):
    """Each unsupported setup raises its named error (returns the messages)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    wl = LinearRegression(dim=4)
    msgs = {}

    def catch(name, fn):
        try:
            fn()
            msgs[name] = None
        except Exception as err:  # noqa: BLE001 - the test checks the type and message
            msgs[name] = f"{type(err).__name__}: {err}"

    catch("unwrapped", lambda: GradientNoiseMonitor(wl.make_model(0), micro_batch_size=4))
    catch("ddp_none", lambda: GradientNoiseMonitor(DDP(wl.make_model(0)), micro_batch_size=4, process_group=None))

    def powersgd():
        from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook

        ddp = DDP(wl.make_model(0))
        ddp.register_comm_hook(powerSGD_hook.PowerSGDState(process_group=None), powerSGD_hook.powerSGD_hook)
        GradientNoiseMonitor(ddp, micro_batch_size=4)

    catch("powersgd", powersgd)

    def last_in_no_sync():
        ddp = DDP(wl.make_model(0))
        mon = GradientNoiseMonitor(ddp, micro_batch_size=4)
        gen = torch.Generator().manual_seed(rank)
        with ddp.no_sync():
            for _ in range(2):
                x, y = wl.sample_batch(4, gen)
                (ddp(x).squeeze(-1) - y).square().mean().backward()
        mon.step()

    catch("no_sync_last", last_in_no_sync)

    def tensor_parallel():
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.tensor.parallel import ColwiseParallel, parallelize_module

        mesh = init_device_mesh("cpu", (world,))
        m = torch.nn.Sequential(torch.nn.Linear(4, 8))
        parallelize_module(m, mesh, {"0": ColwiseParallel()})
        GradientNoiseMonitor(m, micro_batch_size=4)

    catch("tensor_parallel", tensor_parallel)

    if world == 4:
        def hsdp():
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("replicate", "shard"))
            m = torch.nn.Sequential(torch.nn.Linear(4, 8))
            fully_shard(m, mesh=mesh)
            GradientNoiseMonitor(m, micro_batch_size=4)

        catch("hsdp", hsdp)

    def legacy_fsdp():
        from torch.distributed.fsdp import FullyShardedDataParallel

        m = FullyShardedDataParallel(torch.nn.Linear(4, 8), device_id=torch.device("cpu"))
        GradientNoiseMonitor(m, micro_batch_size=4)

    catch("legacy_fsdp", legacy_fsdp)
    return msgs


def entry(rank, world, port, fn_name, cfg, result_dir):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result = {"ok": globals()[fn_name](rank, world, cfg)}
    except Exception:  # noqa: BLE001 - reported to the test
        result = {"error": traceback.format_exc()}
    torch.save(result, os.path.join(result_dir, f"rank{rank}.pt"))
    dist.barrier() if "error" not in result else None
    dist.destroy_process_group()
