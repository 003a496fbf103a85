"""Step time with the GradientNoiseMonitor on vs off, interleaved in one run.

Identical copies of a small GPT train side by side on the same batches: one without
measurement, one with the monitor on every step, one on every 4th step, and one with a naive
per-parameter-hook baseline. Each iteration runs one step of every arm, in a random order
(so no arm always runs first, last or after another), each timed alone. Reported: the ratio of median step times, and the
median over iterations of the paired ratio (arm / off in the same iteration), which is less
sensitive to the machine's drift. On CUDA the script synchronises around each timed step and uses bf16 autocast.

    python bench/monitor_overhead.py                   # CPU: small transformer, K=4
    python bench/monitor_overhead.py --device cuda --preset gpt2   # GPU: GPT-2-small shape, bf16

Results go in bench/RESULTS.md with the machine and date.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
from contextlib import nullcontext

import torch

from batchlaw.noise import GradientNoiseMonitor
from batchlaw.workloads.corpus import load_stdlib_corpus
from batchlaw.workloads.transformer import GPTConfig, TinyGPT


class NaiveHooks:
    """Baseline for comparison: one squared-norm kernel per parameter per micro-batch, and one
    per parameter on .grad at the step (the plain per-parameter-hook design)."""

    def __init__(self, model):
        self.params = list(model.parameters())
        self.small = []
        for p in self.params:
            p.register_hook(lambda g: self.small.append(g.float().square().sum()))
        self.pairs = []

    def step(self):
        big = sum(p.grad.float().square().sum() for p in self.params)
        self.pairs.append((torch.stack(self.small).sum(), big))
        self.small = []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--preset", choices=["cpu-small", "gpt2"], default="cpu-small")
    ap.add_argument("--micro-batch", type=int, default=None, help="sequences per micro-batch")
    ap.add_argument("--accumulation", type=int, default=4)
    ap.add_argument("--steps", type=int, default=80, help="timed steps per arm")
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()

    dev = torch.device(args.device)
    if args.preset == "gpt2":
        cfg, mb = GPTConfig.gpt2_small(context=1024), args.micro_batch or 8
    else:
        cfg, mb = GPTConfig(context=64, d_model=128, n_layer=4, n_head=4), args.micro_batch or 16
    k = args.accumulation
    data = torch.from_numpy(load_stdlib_corpus().train).long()
    torch.manual_seed(0)
    base = TinyGPT(cfg).to(dev)
    n_params = sum(p.numel() for p in base.parameters())
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else nullcontext()
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    gen = torch.Generator().manual_seed(0)

    def batch():
        starts = torch.randint(0, data.numel() - cfg.context - 1, (mb,), generator=gen)
        idx = starts[:, None] + torch.arange(cfg.context + 1)[None, :]
        w = data[idx].to(dev, non_blocking=True)
        return w[:, :-1], w[:, 1:]

    arms = {}
    for name, every in (("off", None), ("every step", 1), ("every 4th step", 4), ("naive hooks", 0)):
        model = copy.deepcopy(base)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=dev.type == "cuda")
        if every is None:
            mon = None
        elif every == 0:
            mon = NaiveHooks(model)
        else:
            mon = GradientNoiseMonitor(model, micro_batch_size=mb, tokens_per_example=cfg.context, every=every)
        arms[name] = (model, opt, mon, [])

    def step(model, opt, mon, batches):
        for x, y in batches:
            with autocast:
                loss = model.loss(x, y) / k
            loss.backward()
        if mon is not None:
            mon.step()
        opt.step()
        opt.zero_grad(set_to_none=True)

    names = list(arms)
    order_gen = torch.Generator().manual_seed(1)
    for i in range(args.warmup + args.steps):
        batches = [batch() for _ in range(k)]
        order = [names[j] for j in torch.randperm(len(names), generator=order_gen)]
        for name in order:
            model, opt, mon, times = arms[name]
            sync()
            t0 = time.perf_counter()
            step(model, opt, mon, batches)
            sync()
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)

    base_ms = statistics.median(arms["off"][3]) * 1e3
    print(f"device {dev} ({torch.cuda.get_device_name() if dev.type == 'cuda' else platform.processor() or platform.machine()}), "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"model {n_params / 1e6:.1f}M params, {k} micro-batches x {mb} x {cfg.context} tokens, {args.steps} steps per arm")
    off = arms["off"][3]
    print(f"{'arm':<16} {'median ms':>10} {'ratio of medians':>17} {'median paired ratio':>20}")
    for name, (_, _, mon, times) in arms.items():
        med = statistics.median(times) * 1e3
        paired = statistics.median(t / o for t, o in zip(times, off))
        print(f"{name:<16} {med:>10.2f} {med / base_ms:>17.3f} {paired:>20.3f}")
    est = arms["every step"][2]
    print(f"(the monitor measured {len(est.records)} steps; last B_simple EMA {est.records[-1]['b_simple_ema']:.4g} tokens)")


if __name__ == "__main__":
    main()
