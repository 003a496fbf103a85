"""Measure the gradient noise scale of a data-parallel run: DDP or FSDP2, launched with torchrun.

    torchrun --standalone --nproc_per_node 2 examples/ddp_noise_scale.py            # DDP
    torchrun --standalone --nproc_per_node 2 examples/ddp_noise_scale.py --fsdp     # FSDP2

Runs on CPUs (gloo) or GPUs (nccl, one per process). The model is linear regression at fixed
weights, whose noise scale is known exactly, so the printout shows the measurement beside the
truth. Swap in your own model, data and optimizer: the three monitor lines stay the same.
"""

import argparse
import os

import torch
import torch.distributed as dist

from batchlaw.noise import GradientNoiseMonitor
from batchlaw.workloads import LinearRegression

ap = argparse.ArgumentParser()
ap.add_argument("--fsdp", action="store_true", help="shard with FSDP2 (fully_shard) instead of DDP")
ap.add_argument("--steps", type=int, default=200)
ap.add_argument("--micro-batch", type=int, default=8)
ap.add_argument("--accumulation", type=int, default=4)
args = ap.parse_args()

cuda = torch.cuda.is_available()
dist.init_process_group("nccl" if cuda else "gloo")
rank, world = dist.get_rank(), dist.get_world_size()
device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu")
if cuda:
    torch.cuda.set_device(device)

wl = LinearRegression(dim=16, noise_std=1.0, init_distance=1.0)
model = wl.make_model(0)
truth = wl.b_simple(model)  # exact, at these (fixed) weights
model = model.to(device)
if args.fsdp:
    from torch.distributed.fsdp import fully_shard

    fully_shard(model)
    net = model
else:
    from torch.nn.parallel import DistributedDataParallel as DDP

    net = DDP(model, device_ids=[device.index] if cuda else None)

monitor = GradientNoiseMonitor(net, micro_batch_size=args.micro_batch)  # 1. attach to the wrapped model
gen = torch.Generator().manual_seed(rank)  # each rank draws its own examples
k = args.accumulation
for step in range(args.steps):
    for i in range(k):
        last = i == k - 1
        if args.fsdp:
            net.set_requires_gradient_sync(last)  # reduce-scatter on the last micro-batch only
            ctx = torch.enable_grad()
        else:
            ctx = net.no_sync() if not last else torch.enable_grad()  # all-reduce on the last only
        with ctx:
            x, y = (t.to(device) for t in wl.sample_batch(args.micro_batch, gen))
            loss = 0.5 * (net(x).squeeze(-1) - y).square().mean() / k
            loss.backward()
    monitor.step()  # 2. after the last backward, before clipping and optimizer.step()
    net.zero_grad(set_to_none=True)  # (weights stay fixed here: no optimizer step)

est = monitor.estimate()  # 3. the same estimate on every rank
if rank == 0:
    rec = monitor.records[-1]
    print(f"{'FSDP2' if args.fsdp else 'DDP'}: {world} ranks x {k} micro-batches x {args.micro_batch} examples "
          f"= global batch {rec['global_batch']}")
    print(f"measured {est}")
    print(f"exact    B_simple = {truth:.1f} examples")
dist.destroy_process_group()
