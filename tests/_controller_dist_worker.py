"""Worker for tests/test_controller_ddp.py: the batch controller under real DDP (gloo, spawned ranks)."""

from __future__ import annotations

import contextlib
import os
import traceback
import warnings

import torch
import torch.distributed as dist


def controller_ddp(rank: int, world: int, cfg: dict) -> dict:
    """Train linear regression under DDP with a controller that branches; every rank returns what it decided."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    from batchlaw.noise import GradientNoiseMonitor
    from batchlaw.schedule import BatchController, apply_choice
    from batchlaw.workloads import LinearRegression

    wl = LinearRegression(dim=16, noise_std=1.0, init_distance=1.0)
    model = wl.make_model(0)
    ddp = DDP(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
    monitor = GradientNoiseMonitor(ddp)
    ctl = BatchController(cfg["base"], cfg["lr"], max_batch=cfg["max_batch"], lr_rule="linear", world_size=world,
                          max_micro_batch=cfg["micro"], margin=cfg["margin"], planned_examples=cfg["planned"],
                          branch_budget=cfg["budget"], seed=3)
    ctl.bind(ddp, opt, loss_fn=wl.loss, sample_fn=wl.sample_batch)
    gen = torch.Generator().manual_seed(100 + rank)  # each rank its own data
    seen, batches = 0, []
    for _ in range(cfg["steps"]):
        c = ctl.step(seen, monitor)
        batches.append(c.global_batch)
        for i in range(c.accumulation):
            ctx = ddp.no_sync() if i < c.accumulation - 1 else contextlib.nullcontext()
            with ctx:
                (wl.loss(ddp, wl.sample_batch(c.micro_batch_size, gen)) / c.accumulation).backward()
        monitor.step(c.micro_batch_size)
        apply_choice(opt, c)
        opt.step()
        opt.zero_grad(set_to_none=True)
        seen += c.global_batch
    monitor.remove()
    copy = ctl._runner._copy[0] if ctl._runner._copy is not None else None  # the branch model after its last arm
    decisions = [{k: d.get(k) for k in ("step", "batch", "new_batch", "decision", "path", "reason")}
                 for d in ctl.decisions]
    branch = [d["branch"]["pairs"] for d in ctl.decisions if "branch" in d]
    return {"batches": batches, "decisions": decisions, "branch_pairs": branch,
            "branch_examples": ctl.branch_examples, "weights": [p.detach().clone() for p in model.parameters()],
            "branch_weights": [p.detach().clone() for p in copy.parameters()] if copy is not None else None}


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
