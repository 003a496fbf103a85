"""Matplotlib figures of a sweep: steps and examples vs batch, best LR, noise scale, loss curves.

A figure is drawn only when there is something to draw (no empty axes), the batch axes span
the measured batch sizes (a mark beyond them is named in the legend, not allowed to stretch the
axis), legends list only the series drawn, and titles state what the data show. A batch size
whose median over seeds did not reach the target is drawn at its lower bound with an upward
arrow.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_sweep"]

_WIDTH = 12.0  # inches: the report shows figures at full width


def _mark(ax, value, ci, color, label, xlim):
    lo_x, hi_x = xlim
    if not (value is not None and math.isfinite(value)):
        return
    if lo_x <= value <= hi_x:
        ax.axvline(value, color=color, lw=1.5, label=label)
    else:
        ax.plot([], [], color=color, lw=1.5, label=f"{label} (outside the measured batches)")
    lo, hi = ci
    if lo is not None and hi is not None and np.isfinite(hi) and np.isfinite(lo) and lo < hi_x and hi > lo_x:
        ax.axvspan(max(lo, lo_x), min(hi, hi_x), color=color, alpha=0.12)


def _marks(ax, a, xlim):
    if a.fit is not None:
        _mark(ax, a.fit.b_crit, a.fit.b_crit_ci, "tab:red", f"B_crit = {a.fit.b_crit:.3g}", xlim)
        _mark(ax, a.fit.cbs, a.fit.cbs_ci, "tab:purple", f"CBS (Zhang) = {a.fit.cbs:.3g}", xlim)
    if a.b_simple is not None:
        _mark(ax, a.b_simple["b_simple"], a.b_simple["ci"], "tab:green", f"B_simple = {a.b_simple['b_simple']:.3g}",
              xlim)


def _legend(ax, **kw) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kw)


def _save(fig, path: Path, paths: list[Path]) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    paths.append(path)


def _steps_figure(a, pts, bounds, stem, out_dir, paths):
    b = np.array([p["batch_size"] for p in pts], dtype=float)
    s = np.array([p["steps_to_target"] for p in pts], dtype=float)
    bb = np.array([p["batch_size"] for p in bounds], dtype=float)
    sb = np.array([p["steps_lower_bound"] for p in bounds], dtype=float)
    xlim = (min(b.min(), bb.min(initial=np.inf)) / 1.5, max(b.max(), bb.max(initial=0.0)) * 1.5)
    grid = np.geomspace(*xlim, 200)
    fig, axes = plt.subplots(1, 2, figsize=(_WIDTH, 4.4))
    for ax, ylab, examples in ((axes[0], "steps to target", False), (axes[1], "examples to target", True)):
        y = s * b if examples else s
        yb = sb * bb if examples else sb
        ax.loglog(b, y, "o", color="k", label="measured (best LR, median over seeds)")
        if bounds:  # a bar at the bound and an arrow up from it
            ax.loglog(bb, yb, ls="none", marker="_", ms=14, mew=2.5, color="tab:orange")
            for x, v in zip(bb, yb):
                ax.annotate("", xy=(x, v * 1.45), xytext=(x, v),
                            arrowprops={"arrowstyle": "-|>", "color": "tab:orange", "lw": 2.0})
            ax.plot([], [], ls="none", marker="$\\uparrow$", ms=12, color="tab:orange",
                    label="lower bound (median over seeds did not reach the target)")
        if a.fit is not None:
            fy = a.fit.predict_examples(grid) if examples else a.fit.predict_steps(grid)
            ax.loglog(grid, fy, "-", color="tab:blue",
                      label="fit E_min (1 + B/B_crit)" if examples else "fit S_min (1 + B_crit/B)")
            if not examples:
                b0 = a.fit.reference_batch
                ax.loglog(grid, a.fit.predict_steps(b0) * b0 / grid, ":", color="gray", label="perfect scaling from B0")
        _marks(ax, a, xlim)
        ax.set_xlim(*xlim)
        ys = np.concatenate([y, yb * 1.45] + ([fy] if a.fit is not None else []))
        ax.set_ylim(ys.min() / 1.3, ys.max() * 1.3)
        ax.set_xlabel("batch size (examples)")
        ax.set_ylabel(ylab)
        ax.grid(True, which="both", alpha=0.3)
        _legend(ax, fontsize=8)
    target = a.config["target_loss"]
    censored = f", {len(bounds)} lower bound{'s' if len(bounds) > 1 else ''}" if bounds else ""
    if a.fit is not None:
        title = (f"{a.name}: steps and examples to loss {target:g}; B_crit = {a.fit.b_crit:.3g} examples, "
                 f"S_min = {a.fit.s_min:.3g} steps ({len(pts)} batch sizes{censored})")
    else:
        title = f"{a.name}: steps and examples to loss {target:g} ({len(pts)} batch sizes reached it{censored}; no fit)"
    fig.suptitle(title)
    _save(fig, out_dir / f"{stem}_steps_vs_batch.png", paths)


def _lr_figure(a, pts, stem, out_dir, paths):
    fig, ax = plt.subplots(figsize=(_WIDTH, 4.4))
    style = {"reached": ("o", "tab:blue"), "budget": ("s", "tab:orange"), "diverged": ("x", "tab:red")}
    counts = {}
    for status, (m, c) in style.items():
        tr = [t for t in a.trials if t["status"] == status]
        counts[status] = len(tr)
        if tr:
            ax.scatter([t["spec"]["batch_size"] for t in tr], [t["spec"]["lr"] for t in tr], marker=m, c=c,
                       label=f"{status} ({len(tr)})", alpha=0.6)
    best = [p for p in pts if p["best_lr"] is not None]
    if best:
        ax.plot([p["batch_size"] for p in best], [p["best_lr"] for p in best], "k-", lw=2, label="best LR")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("batch size (examples)")
    ax.set_ylabel("learning rate")
    ax.set_title(f"learning-rate search: {len(a.trials)} trials, {counts['reached']} reached the target, "
                 f"{counts['diverged']} diverged, {counts['budget']} ran out of budget")
    _legend(ax, fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    _save(fig, out_dir / f"{stem}_lr_vs_batch.png", paths)


def _trend(curves) -> str:
    """What the running B_simple did over the best runs, from first to last reading."""
    ratios = [c[-1][2] / c[0][2] for c in curves if len(c) >= 2 and c[0][2] > 0]
    if not ratios:
        return "running B_simple vs loss"
    r = float(np.median(ratios))
    if r > 1.25:
        return f"B_simple grew {r:.2g}x over the run (median, best runs)"
    if r < 0.8:
        return f"B_simple fell to {r:.2g}x its first reading (median, best runs)"
    return "B_simple stayed within 25% of its first reading (median, best runs)"


def _curves_figure(a, stem, out_dir, paths):
    rows = [(p, p["best_trials"][0]) for p in a.points if p["best_trials"]]
    if not rows:  # nothing reached the target: show the lowest-loss trial of each batch size instead
        rows = []
        for p in a.points:
            tr = [t for t in a.trials if t["spec"]["batch_size"] == p["batch_size"] and t["status"] != "diverged"]
            finite = [t for t in tr if any(c[1] is not None and math.isfinite(c[1]) for c in t["curve"])]
            if finite:
                rows.append((p, min(finite, key=lambda t: min(c[1] for c in t["curve"] if c[1] is not None))))
    if not rows:
        return
    tpe = a.tokens_per_example or 1
    cmap = plt.get_cmap("viridis")
    noise_curves = [[c for c in t["curve"] if len(c) > 2 and c[2] is not None] for _, t in rows]
    has_noise = any(noise_curves)
    fig, axes = plt.subplots(1, 2 if has_noise else 1, figsize=(_WIDTH, 4.4), squeeze=False)
    axes = axes[0]
    loss_ax = axes[-1]
    for i, ((p, t), nc) in enumerate(zip(rows, noise_curves)):
        color = cmap(i / max(len(rows) - 1, 1))
        if has_noise and nc:
            axes[0].plot([c[1] for c in nc], [c[2] / tpe for c in nc], "-", color=color, label=f"B={p['batch_size']}")
        seen = [c for c in t["curve"] if c[0] > 0 and c[1] is not None and math.isfinite(c[1])]
        if seen:
            loss_ax.plot([c[0] * p["batch_size"] for c in seen], [c[1] for c in seen], "-", color=color,
                         label=f"B={p['batch_size']}")
    if has_noise:
        axes[0].set_yscale("log")
        axes[0].invert_xaxis()
        axes[0].set_xlabel("loss (training proceeds to the right)")
        axes[0].set_ylabel("B_simple, running estimate (examples)")
        axes[0].set_title(_trend([c for c in noise_curves if c]))
    loss_ax.axhline(a.config["target_loss"], color="k", ls="--", lw=1, label=f"target {a.config['target_loss']:g}")
    loss_ax.set_xscale("log")
    loss_ax.set_xlabel("examples seen")
    loss_ax.set_ylabel(f"{a.config['target_on']} loss")
    reached = any(p["steps_to_target"] is not None for p, _ in rows)
    loss_ax.set_title("loss curves, best LR per batch size" if reached else
                      "loss curves: no batch size reached the target (lowest-loss trial per batch size)")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        _legend(ax, fontsize=7, ncol=2)
    _save(fig, out_dir / f"{stem}_noise_and_loss.png", paths)


def plot_sweep(a, out_dir: Path, stem: str | None = None) -> list[Path]:
    """Write the PNGs of one sweep analysis; returns their paths (none for a sweep without trials).

    Args:
        a: a :class:`~batchlaw.sweep.SweepAnalysis`.
        out_dir: directory of the PNGs.
        stem: file-name stem (default: the sweep's name made safe; the report passes a unique one).
    """
    out_dir = Path(out_dir)
    stem = stem or "".join(c if c.isalnum() or c in "_.-" else "_" for c in a.name)
    paths: list[Path] = []
    if not a.trials:
        return paths
    pts = [p for p in a.points if p["steps_to_target"] is not None]
    bounds = [p for p in a.points if p.get("steps_lower_bound") is not None]
    if pts:
        _steps_figure(a, pts, bounds, stem, out_dir, paths)
    _lr_figure(a, pts, stem, out_dir, paths)
    _curves_figure(a, stem, out_dir, paths)
    return paths
