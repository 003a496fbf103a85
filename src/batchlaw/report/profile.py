"""Matplotlib figure of a hardware profile: throughput and peak memory vs micro-batch, forward latency."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plot_profile"]


def plot_profile(profile: dict, path: str | Path) -> Path:
    """Write a PNG of a ``batchlaw.profile/1`` dict and return its path.

    Panels: training throughput (examples/s) and peak memory vs micro-batch, the first size that
    ran out of memory marked; forward latency vs batch when the profile has it.
    """
    ok = [r for r in profile["train"] if r["status"] == "ok"]
    oom = [r["micro_batch"] for r in profile["train"] if r["status"] == "oom"]
    fwd = [r for r in profile.get("forward", []) if r["status"] == "ok"]
    n = 3 if fwd else 2
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), constrained_layout=True)
    b = [r["micro_batch"] for r in ok]
    ax = axes[0]
    ax.plot(b, [r["throughput_per_s"] for r in ok], "o-", color="tab:blue")
    ax.set(xscale="log", yscale="log", xlabel="micro-batch (examples)", ylabel="throughput (examples/s)",
           title=f"training step, {profile.get('device', '?')}" + (", checkpointing" if profile.get("checkpointing") else ""))
    ax = axes[1]
    mem = [(r["micro_batch"], r["peak_memory_bytes"] / 2**20) for r in ok if r.get("peak_memory_bytes")]
    if mem:
        ax.plot(*zip(*mem), "o-", color="tab:orange")
    kind = {"cuda_max_allocated": "GPU max allocated", "cpu_peak_rss": "process peak RSS"}.get(profile.get("memory_kind"), "")
    ax.set(xscale="log", xlabel="micro-batch (examples)", ylabel=f"peak memory (MiB, {kind})" if kind else "peak memory (MiB)",
           title="memory")
    for a in axes[:2]:
        for x in oom:
            a.axvline(x, color="tab:red", ls="--", label=f"out of memory at {x}")
        if oom:
            a.legend(loc="best", fontsize=8)
    if fwd:
        ax = axes[2]
        ax.plot([r["batch"] for r in fwd], [r["latency_s"] * 1e3 for r in fwd], "o-", color="tab:green")
        ax.set(xscale="log", yscale="log", xlabel="batch (examples)", ylabel="forward latency (ms)",
               title="serving: forward latency")
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
