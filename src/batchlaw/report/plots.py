"""Matplotlib figures of a sweep: steps and examples vs batch, best LR, noise scale, loss curves."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_sweep"]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _mark(ax, value, ci, color, label):
    ax.axvline(value, color=color, lw=1.5, label=label)
    lo, hi = ci
    if lo is not None and hi is not None and np.isfinite(hi):
        ax.axvspan(lo, hi, color=color, alpha=0.12)


def _marks(ax, a):
    if a.fit is not None:
        _mark(ax, a.fit.b_crit, a.fit.b_crit_ci, "tab:red", f"B_crit = {a.fit.b_crit:.3g}")
        _mark(ax, a.fit.cbs, a.fit.cbs_ci, "tab:purple", f"CBS (Zhang) = {a.fit.cbs:.3g}")
    if a.b_simple is not None:
        _mark(ax, a.b_simple["b_simple"], a.b_simple["ci"], "tab:green", f"B_simple = {a.b_simple['b_simple']:.3g}")


def plot_sweep(a, out_dir: Path) -> list[Path]:
    """Write the PNGs of one sweep analysis; returns their paths."""
    out_dir = Path(out_dir)
    slug = _slug(a.name)
    pts = [p for p in a.points if p["steps_to_target"] is not None]
    b = np.array([p["batch_size"] for p in pts], dtype=float)
    s = np.array([p["steps_to_target"] for p in pts], dtype=float)
    paths = []

    # 1. steps and examples vs batch, with the fit and perfect scaling
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    grid = np.geomspace(b.min() / 1.5, b.max() * 1.5, 200) if b.size else np.array([1.0, 2.0])
    for ax, ylab, mult in ((axes[0], "steps to target", 1), (axes[1], "examples to target", 2)):
        y = s if mult == 1 else s * b
        ax.loglog(b, y, "o", color="k", label="measured (best LR)")
        if a.fit is not None:
            fy = a.fit.predict_steps(grid) if mult == 1 else a.fit.predict_examples(grid)
            ax.loglog(grid, fy, "-", color="tab:blue", label="fit S_min(1 + B_crit/B)" if mult == 1 else "fit E_min(1 + B/B_crit)")
            if mult == 1:
                b0 = a.fit.reference_batch
                ax.loglog(grid, a.fit.predict_steps(b0) * b0 / grid, ":", color="gray", label="perfect scaling from B0")
        _marks(ax, a)
        ax.set_xlabel("batch size (examples)")
        ax.set_ylabel(ylab)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{a.name}: steps and examples to loss {a.config['target_loss']:g}")
    fig.tight_layout()
    paths.append(out_dir / f"{slug}_steps_vs_batch.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    # 2. learning rates: every trial, best per batch
    fig, ax = plt.subplots(figsize=(6, 4))
    style = {"reached": ("o", "tab:blue"), "budget": ("s", "tab:orange"), "diverged": ("x", "tab:red")}
    for status, (m, c) in style.items():
        tr = [t for t in a.trials if t["status"] == status]
        if tr:
            ax.scatter([t["spec"]["batch_size"] for t in tr], [t["spec"]["lr"] for t in tr], marker=m, c=c,
                       label=status, alpha=0.6)
    best = [p for p in pts if p["best_lr"] is not None]
    ax.plot([p["batch_size"] for p in best], [p["best_lr"] for p in best], "k-", lw=2, label="best LR")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("batch size (examples)")
    ax.set_ylabel("learning rate")
    ax.set_title("learning-rate search")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    paths.append(out_dir / f"{slug}_lr_vs_batch.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    # 3. noise-scale trace and 4. loss curves of the best trials
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    tpe = a.tokens_per_example or 1
    cmap = plt.get_cmap("viridis")
    for i, p in enumerate(pts):
        color = cmap(i / max(len(pts) - 1, 1))
        for t in p["best_trials"][:1]:
            curve = [c for c in t["curve"] if len(c) > 2 and c[2] is not None]
            if curve:
                axes[0].plot([c[1] for c in curve], [c[2] / tpe for c in curve], "-", color=color, label=f"B={p['batch_size']}")
            seen = [c for c in t["curve"] if c[0] > 0]  # step 0 has no place on a log axis
            axes[1].plot([c[0] * p["batch_size"] for c in seen], [c[1] for c in seen], "-", color=color,
                         label=f"B={p['batch_size']}")
    axes[0].set_yscale("log")
    axes[0].invert_xaxis()
    axes[0].set_xlabel("loss (training proceeds to the right)")
    axes[0].set_ylabel("B_simple, running estimate (examples)")
    axes[0].set_title("noise scale grows as the loss falls")
    axes[1].axhline(a.config["target_loss"], color="k", ls="--", lw=1, label="target")
    axes[1].set_xscale("log")
    axes[1].set_xlabel("examples seen")
    axes[1].set_ylabel(f"{a.config['target_on']} loss")
    axes[1].set_title("loss curves (best LR per batch size)")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    paths.append(out_dir / f"{slug}_noise_and_loss.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
