"""HTML page: the branched CBS(t) beside the noise scale B_simple(t) measured on the same run.

Does the noise scale track the measured CBS? Not always (McCandlish et al. 2018 call
``B_simple`` an order-of-magnitude predictor; Merrill et al. 2025 find it can mislead), so the
page shows the ratio ``CBS / B_simple`` at every checkpoint, with the CBS's bounds where the grid
of ``k`` could not pin it down, and says in words how far apart the two are.
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

from .._format import fmt_num  # noqa: E402

__all__ = ["branch_summary", "branch_section", "write_branch_report", "plot_branch"]

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1000px; margin: 2em auto; color: #222; line-height: 1.45; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; } td, th { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f3f3f3; } .headline { background: #eef5ff; border-left: 4px solid #3a78c2; padding: .8em 1em; }
img { max-width: 100%; border: 1px solid #eee; margin: .5em 0; } .note { color: #666; font-size: .9em; }
"""


def _as_dict(result) -> dict:
    return result.to_dict() if hasattr(result, "to_dict") else dict(result)


def _cbs_text(p: dict) -> str:
    if p["censored"] == "lower":
        return f">= {fmt_num(p['cbs'])}"
    if p["censored"] == "upper":
        return f"<= {fmt_num(p['cbs'])}"
    return f"{fmt_num(p['cbs'])} to {fmt_num(p['cbs_upper'])}"


def _ratio(p: dict) -> tuple[str, float | None]:
    b = p.get("b_simple")
    if not b:
        return "-", None
    r = p["cbs"] / b
    if p["censored"] == "lower":
        return f">= {r:.2g}", r
    if p["censored"] == "upper":
        return f"<= {r:.2g}", r
    return f"{r:.2g} to {p['cbs_upper'] / b:.2g}", r


def _diverged(row: dict) -> bool:
    loss = row.get("loss")
    return row.get("status") == "diverged" or loss is None or not math.isfinite(loss)


def _caveats(pts: list[dict]) -> str:
    """Sentences on the checkpoints whose reading is noisy (not monotone) and on diverged branches."""
    out = ""
    noisy = [fmt_num(p["t_examples"]) for p in pts if p.get("non_monotone")]
    if noisy:
        out += (f" Not monotone at {', '.join(noisy)} examples seen (marked !): a larger batch came within the "
                "tolerance after a smaller one had not, so the losses there are noisier than the tolerance; average "
                "more seeds (--seeds) or use a larger tolerance before trusting the CBS there.")
    gone = [f"x{r['k']} at {fmt_num(p['t_examples'])}" for p in pts for r in p["branches"] if _diverged(r)]
    if gone:
        out += (f" Diverged (a non-finite loss, counted as outside the tolerance): {', '.join(gone)}; a gentler "
                "learning-rate rule at large k (--lr-rule sqrt or none) may keep them stable.")
    return out


def _cbs_cell(p: dict) -> str:
    """The CBS of one checkpoint as shown in tables: ``'8 to 16'``, ``'>= 32'``, with ``' !'`` when not monotone."""
    return _cbs_text(p) + (" !" if p.get("non_monotone") else "")


def branch_summary(result) -> str:
    """One paragraph: how the CBS moves over the run, and whether ``B_simple`` tracks it."""
    d = _as_dict(result)
    pts, cfg = d["points"], d["config"]
    tol = cfg["tolerance"]
    tol_text = f"{tol:.1%} of the k = 1 loss" if cfg["tolerance_kind"] == "relative" else f"{tol:g} (absolute)"
    cbs = ", ".join(f"{_cbs_text(p)} at {fmt_num(p['t_examples'])}" for p in pts)
    text = (f"Critical batch size by branching (examples, at examples seen): {cbs}. A branch counts as within the CBS "
            f"while its loss after {fmt_num(cfg['budget'])} examples is within {tol_text}; a larger tolerance gives a "
            f"larger CBS. The grid of k (x{', x'.join(str(k) for k in cfg['multipliers'])}) limits the resolution: "
            "'a to b' means the CBS lies between a and b.")
    text += _caveats(pts)
    ratios = [(p, _ratio(p)[1]) for p in pts if _ratio(p)[1] is not None]
    if not ratios:
        return text + " The noise scale was not measured on this run."
    exact = [r for p, r in ratios if p["censored"] is None]
    spread = [r for _, r in ratios]
    lo, hi = min(spread), max(spread)
    if exact and max(max(exact), 1 / min(exact)) <= 2 and hi / lo <= 4:
        verdict = "B_simple tracks the measured CBS within a factor of 2 at the checkpoints where the CBS is pinned down"
    else:
        span = f"is {lo:.2g}" if len(spread) == 1 else f"ranges from {lo:.2g} to {hi:.2g} over the run"
        verdict = (f"B_simple does not track the measured CBS closely: their ratio CBS / B_simple {span} "
                   "(a bound where the CBS is censored)")
    return f"{text} {verdict}."


def plot_branch(result) -> bytes:
    """PNG bytes: CBS(t) (with its bracket) and B_simple(t) (with its interval) against examples seen."""
    d = _as_dict(result)
    pts = d["points"]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    t = [max(p["t_examples"], 1) for p in pts]
    ax.plot(t, [p["cbs"] for p in pts], "o-", color="tab:red", label="CBS (branched)")
    for ti, p in zip(t, pts):
        hi = p["cbs_upper"] if p["cbs_upper"] is not None else p["cbs"] * 2
        ax.vlines(ti, p["cbs"], hi, color="tab:red", alpha=0.35, lw=6)
        if p["censored"] == "lower":
            ax.annotate("", (ti, p["cbs"] * 1.8), (ti, p["cbs"]), arrowprops={"arrowstyle": "->", "color": "tab:red"})
    bs = [(ti, p) for ti, p in zip(t, pts) if p.get("b_simple")]
    if bs:
        ax.plot([ti for ti, _ in bs], [p["b_simple"] for _, p in bs], "s-", color="tab:green", label="B_simple (monitor)")
        for ti, p in bs:
            lo, hi = p.get("b_simple_ci") or [None, None]
            if lo is not None and hi is not None and math.isfinite(hi):
                ax.vlines(ti, lo, hi, color="tab:green", alpha=0.6)
        r = [(ti, p["cbs"] / p["b_simple"]) for ti, p in bs]
        ax2.plot([x for x, _ in r], [y for _, y in r], "o-", color="tab:purple")
        ax2.axhline(1.0, color="#999", lw=1)
    trace = [(e, b) for e, b in (d.get("trace") or []) if b]
    if trace:
        ax.plot([e for e, _ in trace], [b for _, b in trace], color="tab:green", alpha=0.3, lw=1, label="B_simple EMA")
    for a in (ax, ax2):
        a.set_xscale("symlog", linthresh=max(1, min(t[1:] or [1])))
        a.set_yscale("log")
        a.set_xlabel("examples seen")
        a.grid(alpha=0.3)
    ax.set_ylabel("batch (examples)")
    ax.legend(fontsize=8)
    ax2.set_ylabel("CBS / B_simple")
    ax2.set_title("ratio (1 = the noise scale predicts the CBS)", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def branch_section(result, title: str = "Critical batch size over the run") -> str:
    """An HTML fragment (heading, summary, plot, table) for one branched measurement."""
    d = _as_dict(result)
    rows = ["<tr><th>examples seen</th><th>trunk loss</th><th>k=1 loss</th><th>CBS (examples)</th>"
            "<th>B_simple (examples, 95% CI)</th><th>CBS / B_simple</th><th>losses by k</th></tr>"]
    for p in d["points"]:
        ci = p.get("b_simple_ci") or [None, None]
        b = "-" if not p.get("b_simple") else f"{fmt_num(p['b_simple'])} ({fmt_num(ci[0])} to {fmt_num(ci[1])})"
        losses = ", ".join(f"x{r['k']}: {'diverged' if _diverged(r) else format(r['loss'], '.4g')}"
                           f"{'' if r['within'] else '*'}" for r in p["branches"])
        rows.append(f"<tr><td>{fmt_num(p['t_examples'])}</td><td>{fmt_num(p.get('trunk_loss'))}</td>"
                    f"<td>{p['reference_loss']:.4g}</td><td>{html.escape(_cbs_cell(p))}</td><td>{b}</td>"
                    f"<td>{html.escape(_ratio(p)[0])}</td><td style='text-align:left'>{losses}</td></tr>")
    png = base64.b64encode(plot_branch(d)).decode()
    tpe = d["config"].get("tokens_per_example")
    note = f" One example is {tpe} tokens." if tpe else ""
    return (f"<h2>{html.escape(title)}</h2><p class='headline'>{html.escape(branch_summary(d))}</p>"
            f"<img alt='CBS and B_simple' src='data:image/png;base64,{png}'><table>{''.join(rows)}</table>"
            f"<p class='note'>* : outside the tolerance. ! : not monotone (a larger batch within the tolerance after "
            f"a smaller one was not: noise). B_simple is measured on the trunk over the steps since the previous "
            f"checkpoint.{note}</p>")


def write_branch_report(result, path: str | Path) -> Path:
    """Write a self-contained HTML page for a branched measurement; returns its path."""
    path = Path(path)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>batchlaw branched CBS</title><style>{_CSS}"
            "</style></head><body><h1>batchlaw: branched critical batch size</h1>"
            f"<p class='note'>Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.</p>"
            + branch_section(result) + "</body></html>")
    path.write_text(page)
    return path
