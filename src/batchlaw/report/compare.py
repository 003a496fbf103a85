"""Plot and HTML page of a schedule comparison: steps against examples, the frontier of constant
batches, and each schedule with its interval over seeds.

A schedule below the frontier pays: it reaches the target in fewer steps than any constant
batch that spends as many examples. The dashed line is the frontier moved left by the
allowance (``E / 1.1``): a schedule below it has a positive Pareto gain, the comparison's
criterion (the best constant batch that spends up to 10% more examples is slower).
"""

from __future__ import annotations

import base64
import html
import io
import math
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .._format import fmt_interval, fmt_num  # noqa: E402
from ..schedule.frontier import Frontier  # noqa: E402
from .branch import _CSS  # noqa: E402

__all__ = ["plot_compare", "compare_summary", "schedule_line", "write_compare_report"]

_COLORS = ("tab:red", "tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")


def _schedules(doc: dict) -> list[tuple[str, dict]]:
    const = {"constant_small", "constant_large"}
    return [(n, s) for n, s in doc["schedules"].items() if n not in const]


def _err(iv: dict) -> list[list[float]] | None:
    lo, hi = iv["ci"]
    if iv["mean"] is None or lo is None or hi is None:
        return None
    return [[iv["mean"] - lo], [hi - iv["mean"]]]


def _frontier_axes(ax, doc: dict) -> None:
    pts = doc["frontier"]["points"]
    for p in pts:  # every seed's run, faint
        for r in p["runs"]:
            if r["examples"] is not None:
                ax.plot(r["examples"], r["steps"], ".", color="#999", alpha=0.5, ms=4)
    med = [p for p in pts if p["median_steps"] is not None and p["median_examples"] is not None]
    on = [p for p in med if p["on_frontier"]]
    xs, ys = [p["median_examples"] for p in on], [p["median_steps"] for p in on]
    if len(on) > 1:  # the interpolant the gains use (the McCandlish hyperbola between points)
        f = Frontier(xs, ys)
        xs = [xs[0] * (xs[-1] / xs[0]) ** (i / 200) for i in range(201)]
        ys = [f.steps_at(min(max(x, f.examples[0]), f.examples[-1])).value for x in xs]
    ax.plot(xs, ys, "-", color="k", lw=1.5, label="frontier (constant batches, median over seeds)")
    a = doc["goal"]["allowance"]
    if a > 1 and len(on) > 1:
        ax.plot([x / a for x in xs], ys, "--", color="k", lw=1, alpha=0.6,
                label=f"frontier at examples / {a:g} (below: Pareto gain > 0)")
    for p in med:
        ax.plot(p["median_examples"], p["median_steps"], "o", color="k" if p["on_frontier"] else "#888", ms=5)
        ax.annotate(f"B={p['batch']}", (p["median_examples"], p["median_steps"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=7, color="#444")
    censored = [p["batch"] for p in pts if p not in med]
    if censored:
        ax.plot([], [], "x", color="#888", label=f"censored (median not reached): B = {', '.join(map(str, censored))}")


def plot_compare(doc: dict) -> bytes:
    """PNG bytes: steps vs examples (log-log) with the frontier and each schedule's mean and 95%
    interval over seeds; beside it, the held-out loss of the first seed's runs against examples."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.6))
    _frontier_axes(ax, doc)
    for j, (name, s) in enumerate(_schedules(doc)):
        color = _COLORS[j % len(_COLORS)]
        for r in s["runs"]:
            if r["examples"] is not None:
                ax.plot(r["examples"], r["steps"], ".", color=color, alpha=0.45, ms=5)
        if s["steps"]["mean"] is not None:
            g = s["pareto_gain"]
            side = {"lower": ">= ", "upper": "<= "}.get(g["bound"], "")
            gain = "-" if g["mean"] is None else f"{side}{g['mean']:.2f}"
            ax.errorbar(s["examples"]["mean"], s["steps"]["mean"], xerr=_err(s["examples"]), yerr=_err(s["steps"]),
                        fmt="s", color=color, ms=7, capsize=3, label=f"{name} (mean, 95% CI; gain {gain})")
        else:
            ax.plot([], [], "s", color=color, label=f"{name}: not reached on every seed")
    tpe = doc["config"].get("tokens_per_example")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log_labels(ax.xaxis)
    _plain_log_labels(ax.yaxis)
    ax.set_xlabel("examples to the target" + (f" (x {tpe} tokens)" if tpe else ""))
    ax.set_ylabel("optimizer steps to the target")
    ax.set_title(f"{doc['workload']['name']}: steps vs examples to held-out loss {doc['config']['target_loss']:g}",
                 fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    _loss_axes(ax2, doc)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _plain_log_labels(axis) -> None:
    """Tick labels of a log axis as plain numbers (``13,000``, not ``1.3 x 10^4``), minor ticks labelled
    only while the axis spans less than a decade (else they would crowd)."""
    from matplotlib.ticker import FuncFormatter

    lo, hi = axis.get_view_interval()
    axis.set_major_formatter(FuncFormatter(lambda x, _: fmt_num(x)))
    narrow = lo > 0 and hi / lo < 10
    axis.set_minor_formatter(FuncFormatter(lambda x, _: fmt_num(x) if narrow else ""))
    for label in axis.get_ticklabels(which="both"):
        label.set_fontsize(7)


def _loss_axes(ax, doc: dict) -> None:
    seed = doc["config"]["seeds"][0]
    series = [("constant_small", doc["schedules"].get("constant_small"), "k")]
    series += [(n, s, _COLORS[j % len(_COLORS)]) for j, (n, s) in enumerate(_schedules(doc))]
    for name, s, color in series:
        if s is None:
            continue
        r = next((r for r in s["runs"] if r["seed"] == seed), None)
        pts = [(e, v) for _, e, _, v in (r["curve"] if r else []) if e > 0 and v is not None and math.isfinite(v)]
        if pts:
            ax.plot([e for e, _ in pts], [v for _, v in pts], "-", color=color, lw=1.2, label=name)
    ax.axhline(doc["config"]["target_loss"], color="#999", lw=1, ls=":", label="target")
    if doc["budget"]["examples"]:
        ax.axvline(doc["budget"]["examples"], color="#999", lw=1, ls="--", label="common budget")
    ax.set_xscale("log")
    ax.set_xlabel("examples seen")
    ax.set_ylabel("held-out loss")
    ax.set_title(f"held-out loss, seed {seed}", fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def compare_summary(doc: dict) -> str:
    """One paragraph (plain text): the verdict and each schedule's Pareto gain."""
    g = doc["goal"]
    verdict = {True: "Goal met", False: "Goal not met", None: "No verdict"}[g["met"]]
    parts = []
    for r in g["results"]:
        if r["pareto_gain"] is None:
            parts.append(f"{r['schedule']}: no gain ({r['why']})")
            continue
        side = {"lower": "at least ", "upper": "at most "}.get(r["bound"], "")
        ci = "" if r["ci"][0] is None else f" (95% CI {r['ci'][0]:.2f} to {r['ci'][1]:.2f})"
        parts.append(f"{r['schedule']}: Pareto gain {side}{r['pareto_gain']:.2f}{ci}")
    b = doc["budget"]
    budget = "" if b["examples"] is None else (f" Held-out losses are compared at {fmt_num(b['examples'])} examples, "
                                               "the fewest with which any run reached the target.")
    return f"{verdict}: {g['reason']}. " + "; ".join(parts) + "." + budget


def schedule_line(doc: dict, name: str = "controller") -> str:
    """One line on one schedule of a comparison: its Pareto gain with the interval, its examples and
    steps to the target (mean [95% interval over seeds]) and, for a schedule that branches, the part
    of them its branches took (already counted in the totals).

    Examples:
        >>> iv = lambda m, lo=None, hi=None: {"mean": m, "ci": [lo, hi], "values": [m]}
        >>> doc = {"config": {"seeds": [0, 1], "frontier_batches": [8, 16, 32]}, "schedules": {"controller": {
        ...     "pareto_gain": {**iv(0.25, 0.125, 0.375), "bound": None}, "examples": iv(1500, 1000, 2000),
        ...     "steps": iv(60, 50, 70), "branch_examples": iv(40), "branch_share": iv(0.025), "branch_steps": iv(6)}}}
        >>> print(schedule_line(doc))  # doctest: +NORMALIZE_WHITESPACE
        controller against 3 constant batches (2 seeds): Pareto gain 0.25 [0.125, 0.375]; 1,500 [1,000, 2,000]
        examples and 60 [50, 70] steps to the target, of which branches took 40 examples (2.5%) and 6 steps
    """
    c, s = doc["config"], doc["schedules"][name]
    g = s["pareto_gain"]
    text = (f"{name} against {len(c['frontier_batches'])} constant batches ({len(c['seeds'])} seed"
            f"{'s' if len(c['seeds']) != 1 else ''}): Pareto gain {fmt_interval(g)}; "
            f"{fmt_interval(s['examples'], 'not reached')} examples and {fmt_interval(s['steps'], 'not reached')} "
            "steps to the target")
    if "branch_examples" in s and s["branch_examples"]["mean"] is not None:
        text += (f", of which branches took {fmt_num(s['branch_examples']['mean'])} examples "
                 f"({100 * s['branch_share']['mean']:.2g}%) and {fmt_num(s['branch_steps']['mean'])} steps")
    return text


def write_compare_report(doc: dict, path: str | Path) -> Path:
    """Write a self-contained HTML page (plot embedded) for a comparison; returns its path."""
    path = Path(path)
    e = html.escape
    png = base64.b64encode(plot_compare(doc)).decode()
    front = ["<tr><th>batch</th><th>LR</th><th>reached</th><th>median steps</th><th>median examples</th>"
             "<th>on the frontier</th></tr>"]
    for p in doc["frontier"]["points"]:
        front.append(f"<tr><td>{p['batch']}</td><td>{fmt_num(p['lr'])}</td><td>{p['reached']}/{len(p['runs'])}"
                     f"{' (' + str(p['diverged']) + ' diverged)' if p['diverged'] else ''}</td>"
                     f"<td>{fmt_num(p['median_steps']) if p['median_steps'] else 'censored'}</td>"
                     f"<td>{fmt_num(p['median_examples']) if p['median_examples'] else 'censored'}</td>"
                     f"<td>{'yes' if p['on_frontier'] else 'no'}</td></tr>")
    rows = ["<tr><th>schedule</th><th>reached</th><th>steps</th><th>examples</th><th>Pareto gain</th>"
            "<th>example overhead</th><th>loss at budget</th><th>loss penalty</th></tr>"]
    for name, s in doc["schedules"].items():
        cells = [fmt_interval(s[k], "not reached") for k in ("steps", "examples")]
        cells += [fmt_interval(s[k]) for k in ("pareto_gain", "example_overhead", "loss_at_budget", "loss_penalty")]
        rows.append(f"<tr><td style='text-align:left'>{e(name)}</td><td>{s['reached']}/{len(s['runs'])}</td>"
                    + "".join(f"<td>{e(x)}</td>" for x in cells) + "</tr>")
    notes = "".join(f"<li>{e(n)}</li>" for n in doc.get("notes", []))
    c = doc["config"]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>batchlaw schedule compare</title><style>{_CSS}"
            "</style></head><body><h1>batchlaw: batch-size schedules against the constant-batch frontier</h1>"
            f"<p class='note'>Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Workload {e(doc['workload']['name'])}, "
            f"target held-out loss {c['target_loss']:g}, seeds {e(', '.join(map(str, c['seeds'])))}; batches in examples.</p>"
            f"<p class='headline'>{e(compare_summary(doc))}</p>"
            f"<img alt='steps against examples: frontier and schedules' src='data:image/png;base64,{png}'>"
            f"<h2>Frontier of constant batches</h2><p class='note'>{e(doc['frontier']['statistic'])}.</p>"
            f"<table>{''.join(front)}</table><h2>Schedules</h2><p class='note'>Mean [95% interval over seeds]. "
            f"{e(doc['goal']['rule'][:1].upper() + doc['goal']['rule'][1:])}.</p><table>{''.join(rows)}</table>"
            + (f"<h2>Notes</h2><ul>{notes}</ul>" if notes else "") + "</body></html>")
    path.write_text(page)
    return path
