"""Step time with the GradientNoiseMonitor on vs off, and against other designs, in one run.

Identical copies of a model train side by side on the same batches: one without measurement
(the baseline), batchlaw's monitor on every step and on every 4th step, a copy-based
accumulation estimator as traintools implements it (the flattened gradient of every
micro-batch is copied and the variance taken at the step), and plain per-parameter hooks
(one squared-norm kernel per parameter per micro-batch). Each iteration runs one step of every
arm in a random order, each timed alone. Reported: the ratio of median step times and the
median over iterations of the paired ratio (arm / off in the same iteration), which is less
sensitive to the machine's drift. On CUDA the script synchronises around each timed step and
uses bf16 autocast.

    python bench/monitor_overhead.py --preset mlp          # CPU: 1.1M-parameter MLP, K=4
    python bench/monitor_overhead.py --preset cpu-small    # CPU: small GPT, K=4
    python bench/monitor_overhead.py --preset mlp --nproc 2   # DDP on 2 gloo processes
    python bench/monitor_overhead.py --device cuda --preset gpt2   # GPU: GPT-2 small, bf16

Results go in bench/RESULTS.md with the machine and date.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import random
import socket
import statistics
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from batchlaw.noise import GradientNoiseMonitor


class NaiveHooks:
    """One squared-norm kernel per parameter per micro-batch, one per parameter on .grad."""

    def __init__(self, model):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.small = []
        for p in self.params:
            p.register_hook(lambda g: self.small.append(g.float().square().sum()))
        self.pairs = []

    def after_backward(self):
        pass

    def step(self):
        big = sum(p.grad.float().square().sum() for p in self.params)
        self.pairs.append((torch.stack(self.small).sum(), big))
        self.small = []


class CopyingAccumulationEstimator:
    """The copy-based design (traintools): after each micro-batch, copy the flattened gradient
    of that micro-batch (accumulated .grad minus the running sum); at the step, the variance over
    the K copies and the norm of their mean."""

    def __init__(self, model):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.copies = []
        self.prev = None

    def after_backward(self):
        flat = torch.cat([p.grad.detach().reshape(-1).float() for p in self.params])
        self.copies.append(flat - self.prev if self.prev is not None else flat.clone())
        self.prev = flat

    def step(self):
        g = torch.stack(self.copies)  # (K, P)
        self.var = g.var(0).sum()
        self.mean_sq = g.mean(0).square().sum()
        self.copies, self.prev = [], None


def _mlp(dev):
    model = torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.GELU(), torch.nn.Linear(1024, 768),
                                torch.nn.GELU(), torch.nn.Linear(768, 10)).to(dev)
    gen = torch.Generator().manual_seed(0)

    def batch(mb):
        return torch.randn(mb, 256, generator=gen).to(dev), torch.randint(0, 10, (mb,), generator=gen).to(dev)

    def loss(m, x, y):
        return F.cross_entropy(m(x), y)

    return model, batch, loss, None


def _gpt(dev, preset):
    from batchlaw.workloads.corpus import load_stdlib_corpus
    from batchlaw.workloads.transformer import GPTConfig, TinyGPT

    cfg = GPTConfig.gpt2_small(context=1024) if preset == "gpt2" else GPTConfig(context=64, d_model=128, n_layer=4, n_head=4)
    data = torch.from_numpy(load_stdlib_corpus().train).long()
    model = TinyGPT(cfg).to(dev)
    gen = torch.Generator().manual_seed(0)

    def batch(mb):
        starts = torch.randint(0, data.numel() - cfg.context - 1, (mb,), generator=gen)
        w = data[starts[:, None] + torch.arange(cfg.context + 1)[None, :]].to(dev, non_blocking=True)
        return w[:, :-1], w[:, 1:]

    def loss(m, x, y):
        logits = m(x)  # (B, T, vocab); through the DDP wrapper when there is one
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    return model, batch, loss, cfg.context


ARMS = ("off", "batchlaw, every step", "batchlaw, every 4th step", "copying estimator (traintools)", "naive hooks")


def run(args, rank=0, world=1):
    dev = torch.device(args.device if world == 1 or args.device == "cpu" else f"cuda:{rank}")
    torch.manual_seed(0)
    if args.preset == "mlp":
        base, batch, loss_fn, tpe = _mlp(dev)
        mb = args.micro_batch or 32
    else:
        base, batch, loss_fn, tpe = _gpt(dev, args.preset)
        mb = args.micro_batch or (8 if args.preset == "gpt2" else 16)
    n_params = sum(p.numel() for p in base.parameters())
    k = args.accumulation
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else nullcontext()
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    arms = {}
    names = ARMS if world == 1 else ("off", "batchlaw, every step")
    for name in names:
        model = copy.deepcopy(base)
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            model = DDP(model, device_ids=[rank] if dev.type == "cuda" else None)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=dev.type == "cuda")
        if name == "off":
            mon = None
        elif name.startswith("batchlaw"):
            mon = GradientNoiseMonitor(model, micro_batch_size=mb, tokens_per_example=tpe,
                                       every=1 if "every step" in name else 4)
        elif name.startswith("copying"):
            mon = CopyingAccumulationEstimator(model)
        else:
            mon = NaiveHooks(model)
        arms[name] = (model, opt, mon, [])

    def step(model, opt, mon, batches):
        for i, (x, y) in enumerate(batches):
            ctx = model.no_sync() if world > 1 and i < k - 1 else nullcontext()
            with ctx:
                with autocast:
                    loss = loss_fn(model, x, y) / k
                loss.backward()
            if mon is not None and hasattr(mon, "after_backward"):
                mon.after_backward()
        if mon is not None:
            mon.step()
        opt.step()
        opt.zero_grad(set_to_none=True)

    order_rng = random.Random(1)
    for i in range(args.warmup + args.steps):
        batches = [batch(mb) for _ in range(k)]
        order = list(arms)
        order_rng.shuffle(order)
        for name in order:
            model, opt, mon, times = arms[name]
            sync()
            if world > 1:
                torch.distributed.barrier()
            t0 = time.perf_counter()
            step(model, opt, mon, batches)
            sync()
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
    if rank != 0:
        return
    base_ms = statistics.median(arms["off"][3]) * 1e3
    machine = torch.cuda.get_device_name() if dev.type == "cuda" else (platform.processor() or platform.machine())
    print(f"device {dev} ({machine}), torch {torch.__version__}, threads {torch.get_num_threads()}, world size {world}")
    what = f"{mb} x {tpe} tokens" if tpe else f"{mb} examples"
    print(f"preset {args.preset}: {n_params / 1e6:.2f}M params, {k} micro-batches x {what} per rank, {args.steps} steps per arm")
    off = arms["off"][3]
    print(f"{'arm':<32} {'median ms':>10} {'ratio of medians':>17} {'median paired ratio':>20}")
    for name, (_, _, _, times) in arms.items():
        med = statistics.median(times) * 1e3
        paired = statistics.median(t / o for t, o in zip(times, off))
        print(f"{name:<32} {med:>10.2f} {med / base_ms:>17.3f} {paired:>20.3f}")


def _dist_entry(rank, world, port, args):
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(max(1, torch.get_num_threads() // world))
    backend = "nccl" if args.device == "cuda" else "gloo"
    torch.distributed.init_process_group(backend, rank=rank, world_size=world)
    calls = [0]
    real = torch.distributed.all_reduce

    def counting(*a, **kw):
        calls[0] += 1
        return real(*a, **kw)

    torch.distributed.all_reduce = counting  # count the monitor's all-reduces (DDP's own use the reducer)
    try:
        run(args, rank, world)
    finally:
        if rank == 0:
            measured = (args.warmup + args.steps)
            print(f"torch.distributed.all_reduce calls from the monitor: {calls[0]} over {measured} measured steps")
        torch.distributed.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--preset", choices=["mlp", "cpu-small", "gpt2"], default="mlp", help="model to time")
    ap.add_argument("--micro-batch", type=int, default=None, help="examples (sequences) per micro-batch")
    ap.add_argument("--accumulation", type=int, default=4, help="micro-batches per step (K)")
    ap.add_argument("--steps", type=int, default=80, help="timed steps per arm")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps per arm")
    ap.add_argument("--nproc", type=int, default=1, help="DDP processes (gloo on CPU, nccl on GPUs)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per process")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.nproc > 1:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        torch.multiprocessing.spawn(_dist_entry, args=(args.nproc, port, args), nprocs=args.nproc)
    else:
        run(args)


if __name__ == "__main__":
    main()
