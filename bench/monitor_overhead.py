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
    python bench/monitor_overhead.py --preset gpt-tied     # CPU: the regression guard's model (below)
    python bench/monitor_overhead.py --preset gpt-tied --baseline-rev 36fff97   # this tree vs a revision
    python bench/monitor_overhead.py --preset mlp --nproc 2   # DDP on 2 gloo processes
    python bench/monitor_overhead.py --device cuda --preset gpt2   # GPU: GPT-2 small, bf16

``gpt-tied`` is the model the regression guard watches: a 4-layer GPT with tied embeddings
(d=128, sequence 64, 52 parameter tensors, most of them small), micro-batch 16, K=4, AdamW,
2 threads, 70 interleaved iterations after 5 warm-up, in a random order each iteration; at the
end every monitored copy must hold the unmonitored copy's weights bit for bit.

``--baseline-rev REV`` exports ``src/batchlaw`` at git revision REV next to this tree (as the
package ``batchlaw_base``, imported in the same process) and adds its monitor as an arm:
both versions run alternately on the same batches. It prints both ratios to no monitor and the
per-iteration difference of the two, and exits with status 1 when this tree is worse by more
than the noise allows: when the interquartile range of ``(this tree - REV) / off`` lies
entirely above 0 (in three quarters of the iterations this tree was slower than REV).

Results go in bench/RESULTS.md with the machine and date.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import os
import platform
import random
import re
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

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

    # cpu-small and gpt-tied are the same model (tied embeddings, 52 parameter tensors); gpt-tied is timed as the
    # regression guard: 3 arms, 2 threads, 70 iterations
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
GUARD_ARMS = ("off", "batchlaw, every step", "copying estimator (traintools)")
#: Defaults per preset: micro-batch, steps, threads
PRESETS = {"mlp": (32, 80, None), "cpu-small": (16, 80, None), "gpt-tied": (16, 70, 2), "gpt2": (8, 80, None)}


def load_revision(rev: str) -> type:
    """``GradientNoiseMonitor`` of ``src/batchlaw`` at git revision ``rev``, imported beside this tree's as the
    package ``batchlaw_base`` (its absolute ``batchlaw`` imports renamed)."""
    root = Path(__file__).resolve().parents[1]
    dest = Path(tempfile.mkdtemp(prefix="batchlaw_base_"))
    archive = dest / "src.tar"
    with archive.open("wb") as fh:
        subprocess.run(["git", "-C", str(root), "archive", "--format=tar", rev, "src/batchlaw"], stdout=fh, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    pkg = dest / "src" / "batchlaw"
    pattern = re.compile(r"(?<![\w/.-])batchlaw(?=[.\s]|$)")
    for path in pkg.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        path.write_text("\n".join(pattern.sub("batchlaw_base", line) if re.search(r"\b(import|from)\b|['\"]batchlaw\.",
                                                                                  line) else line
                                  for line in text.split("\n")), encoding="utf-8")
    pkg.rename(dest / "batchlaw_base")
    sys.path.insert(0, str(dest))
    return importlib.import_module("batchlaw_base.noise").GradientNoiseMonitor


def run(args, rank=0, world=1) -> int:
    dev = torch.device(args.device if world == 1 or args.device == "cpu" else f"cuda:{rank}")
    torch.manual_seed(0)
    if args.preset == "mlp":
        base, batch, loss_fn, tpe = _mlp(dev)
    else:
        base, batch, loss_fn, tpe = _gpt(dev, args.preset)
    mb = args.micro_batch or PRESETS[args.preset][0]
    n_params = sum(p.numel() for p in base.parameters())
    k = args.accumulation
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else nullcontext()
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    arms = {}
    names = list(GUARD_ARMS if args.preset == "gpt-tied" else ARMS) if world == 1 else ["off", "batchlaw, every step"]
    baseline = None
    if args.baseline_rev:
        baseline = load_revision(args.baseline_rev)
        names.insert(2, f"batchlaw @{args.baseline_rev}")
    for name in names:
        model = copy.deepcopy(base)
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            model = DDP(model, device_ids=[rank] if dev.type == "cuda" else None)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=dev.type == "cuda")
        if name == "off":
            mon = None
        elif name.startswith("batchlaw @"):
            mon = baseline(model, micro_batch_size=mb, tokens_per_example=tpe)
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
        return 0
    base_ms = statistics.median(arms["off"][3]) * 1e3
    machine = torch.cuda.get_device_name() if dev.type == "cuda" else (platform.processor() or platform.machine())
    print(f"device {dev} ({machine}), torch {torch.__version__}, threads {torch.get_num_threads()}, world size {world}")
    what = f"{mb} x {tpe} tokens" if tpe else f"{mb} examples"
    print(f"preset {args.preset}: {n_params / 1e6:.2f}M params, {k} micro-batches x {what} per rank, {args.steps} steps per arm")
    off = arms["off"][3]
    print(f"{'arm':<32} {'median ms':>10} {'ratio of medians':>17} {'median paired ratio':>20} {'95% CI':>14} "
          f"{'IQR':>14}")
    for name, (_, _, _, times) in arms.items():
        med = statistics.median(times) * 1e3
        ratios = [t / o for t, o in zip(times, off)]
        q1, paired, q3 = _quartiles(ratios)
        lo, hi = _median_ci(ratios)
        print(f"{name:<32} {med:>10.2f} {med / base_ms:>17.3f} {paired:>20.3f} {lo:>6.3f}-{hi:.3f} {q1:>6.3f}-{q3:.3f}")
    same = {name: all(torch.equal(a, b) for a, b in zip(arms[name][0].parameters(), arms["off"][0].parameters()))
            for name in arms if name != "off"}
    print("weights bit-identical to the unmonitored copy: "
          + ", ".join(f"{name}: {'yes' if ok else 'NO'}" for name, ok in same.items()))
    status = 0 if all(same[n] for n in same if n.startswith("batchlaw")) else 1
    if world == 1 and args.auto_steps:
        # every="auto" times the monitor against the time between its step() calls, so it runs alone here (in the
        # interleaved loop above that time would include the other arms' steps)
        model = copy.deepcopy(base)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=dev.type == "cuda")
        mon = GradientNoiseMonitor(model, micro_batch_size=mb, tokens_per_example=tpe, every="auto")
        for _ in range(args.auto_steps):
            step(model, opt, mon, [batch(mb) for _ in range(k)])
            sync()
        c = mon.cadence
        print(f"every='auto' alone, {args.auto_steps} steps: every {c['every']} (decided at step "
              f"{c['decided_at_step']}); monitor {c.get('measured_step_cost_s', float('nan')) * 1e3:.2f} ms at a "
              f"measured step, {c.get('skipped_step_cost_s', float('nan')) * 1e3:.3f} ms at a skipped one, step "
              f"{c.get('step_time_s', float('nan')) * 1e3:.2f} ms; expected overhead "
              f"{c.get('expected_overhead', float('nan')):.2%} (target {c['target']:.0%}); interval width x"
              f"{c['interval_width_factor']:.2f}" + (f"; {c['note']}" if c.get("note") else ""))
        mon.remove()
    if baseline is not None:
        cur, old = arms["batchlaw, every step"][3], arms[f"batchlaw @{args.baseline_rev}"][3]
        q1, med, q3 = _quartiles([(c - b) / o for c, b, o in zip(cur, old, off)])
        verdict = "worse (IQR above 0)" if q1 > 0 else "not worse"
        print(f"this tree - {args.baseline_rev}, per iteration, in units of the unmonitored step: median {med:+.4f} "
              f"(IQR {q1:+.4f} to {q3:+.4f}): {verdict}")
        status = max(status, 1 if q1 > 0 else 0)
    return status


def _median_ci(values, z=1.96):
    """Distribution-free 95% interval of the median: the order statistics n/2 -+ z sqrt(n)/2."""
    v = sorted(values)
    n = len(v)
    half = z * n**0.5 / 2
    return v[max(0, int(n / 2 - half))], v[min(n - 1, int(-(-(n / 2 + half) // 1)))]


def _quartiles(values):
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[1], q[2]


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
    ap.add_argument("--preset", choices=list(PRESETS), default="mlp", help="model to time")
    ap.add_argument("--micro-batch", type=int, default=None, help="examples (sequences) per micro-batch")
    ap.add_argument("--accumulation", type=int, default=4, help="micro-batches per step (K)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per arm (default: the preset's)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps per arm")
    ap.add_argument("--nproc", type=int, default=1, help="DDP processes (gloo on CPU, nccl on GPUs)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per process (default: the preset's)")
    ap.add_argument("--baseline-rev", default=None, help="git revision whose monitor runs beside this tree's")
    ap.add_argument("--auto-steps", type=int, default=60,
                    help="after the timed arms, steps of a monitor with every='auto' run alone; its choice is printed "
                    "(0: skip)")
    args = ap.parse_args()
    args.steps = args.steps or PRESETS[args.preset][1]
    threads = args.threads or PRESETS[args.preset][2]
    if threads:
        torch.set_num_threads(threads)
    if args.nproc > 1:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        torch.multiprocessing.spawn(_dist_entry, args=(args.nproc, port, args), nprocs=args.nproc)
    else:
        sys.exit(run(args))


if __name__ == "__main__":
    main()
