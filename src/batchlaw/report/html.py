"""A self-contained HTML report (PNG plots embedded) for one or more sweeps."""

from __future__ import annotations

import base64
import html
import math
from datetime import datetime, timezone
from pathlib import Path

from .._format import fmt_num
from .plots import plot_sweep

__all__ = ["write_report", "headline"]

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1000px; margin: 2em auto; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; } td, th { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f3f3f3; } .headline { background: #eef5ff; border-left: 4px solid #3a78c2; padding: .8em 1em; }
img { max-width: 100%; border: 1px solid #eee; margin: .5em 0; } .note { color: #666; font-size: .9em; }
"""


def _ci(ci) -> str:
    lo, hi = ci
    return f"{fmt_num(lo)} to {fmt_num(hi if hi is not None else math.inf)}"


def headline(a) -> str:
    """The answer in plain words."""
    if a.fit is None:
        return f"No critical batch size could be fitted: {a.fit_error}"
    f = a.fit
    text = (
        f"The critical batch size B_crit is about {fmt_num(f.b_crit)} examples (95% CI {_ci(f.b_crit_ci)}). "
        f"Below it, doubling the batch nearly halves the steps to reach loss {a.config['target_loss']:g}; "
        f"at B_crit a run takes twice the minimum number of steps (S_min = {fmt_num(f.s_min)}) and twice the "
        f"minimum number of examples (E_min = {fmt_num(f.e_min)}); well above it, extra examples per step buy little. "
        f"By the stricter definition of Zhang et al. (20% more steps than perfect scaling from "
        f"B0 = {fmt_num(f.reference_batch)}), the critical batch size is {fmt_num(f.cbs)} examples (95% CI {_ci(f.cbs_ci)})."
    )
    if a.b_simple is not None:
        ratio = f.b_crit / a.b_simple["b_simple"]
        text += (
            f" The gradient noise scale measured during the same runs, B_simple = {fmt_num(a.b_simple['b_simple'])} "
            f"examples (95% CI {_ci(a.b_simple['ci'])}), predicted it within a factor of {max(ratio, 1 / ratio):.1f}."
        )
    return text


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _points_table(a) -> str:
    rows = ["<tr><th>batch (examples)</th><th>steps to target</th><th>examples to target</th><th>best LR</th>"
            "<th>LRs tried</th><th>B_simple of best run</th></tr>"]
    for p in a.points:
        s = p["steps_to_target"]
        ex = None if s is None else s * p["batch_size"]
        noise = [t["noise"]["b_simple"] for t in p["best_trials"] if t.get("noise") and t["noise"].get("b_simple")]
        tpe = a.tokens_per_example or 1
        lr = "-" if p["best_lr"] is None else f"{p['best_lr']:.3g}" + (f" ({p['lr_at_edge']} edge)" if p["lr_at_edge"] else "")
        rows.append(f"<tr><td>{p['batch_size']}</td><td>{fmt_num(s)}</td><td>{fmt_num(ex)}</td><td>{lr}</td>"
                    f"<td>{len(p['lrs_tried'])}</td><td>{fmt_num(noise[0] / tpe) if noise else '-'}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _fit_table(a) -> str:
    if a.fit is None:
        return f"<p>No fit: {html.escape(a.fit_error)}</p>"
    f = a.fit
    rows = [("B_crit = E_min / S_min", f.b_crit, f.b_crit_ci, "examples"),
            ("S_min", f.s_min, f.s_min_ci, "steps"),
            ("E_min", f.e_min, f.e_min_ci, "examples"),
            (f"CBS (Zhang et al., B0 = {fmt_num(f.reference_batch)})", f.cbs, f.cbs_ci, "examples")]
    if a.b_simple is not None:
        rows.append(("run-averaged B_simple (monitor)", a.b_simple["b_simple"], a.b_simple["ci"], "examples"))
    body = "".join(f"<tr><td style='text-align:left'>{html.escape(n)}</td><td>{fmt_num(v)}</td><td>{_ci(ci)}</td>"
                   f"<td>{u}</td></tr>" for n, v, ci, u in rows)
    tpe = a.tokens_per_example
    extra = f"<p class='note'>One example is {tpe} tokens: B_crit = {fmt_num(f.b_crit * tpe)} tokens.</p>" if tpe else ""
    return ("<table><tr><th>quantity</th><th>estimate</th><th>95% interval</th><th>unit</th></tr>" + body + "</table>"
            + f"<p class='note'>Fit of S(B) = S_min (1 + B_crit / B) to {f.n_points} batch sizes; residual scale "
            f"{f.residual_std:.3f} in log steps; intervals from {f.n_boot} residual-bootstrap resamples.</p>" + extra)


def write_report(analyses: list, out_dir: str | Path) -> Path:
    """Write ``report.html`` and one set of PNGs per sweep into ``out_dir``; returns the HTML path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>batchlaw report</title><style>{_CSS}</style>"
             "</head><body><h1>batchlaw: critical batch size report</h1>",
             f"<p class='note'>Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Trials: trials.csv.</p>"]
    for a in analyses:
        pngs = plot_sweep(a, out)
        c = a.config
        parts.append(f"<h2>Sweep {html.escape(a.name)}: {html.escape(c['workload'])}</h2>")
        parts.append(f"<p class='headline'>{html.escape(headline(a))}</p>")
        parts.append(f"<p>{len(a.trials)} trials; target loss {c['target_loss']:g} on the {c['target_on']} loss, "
                     f"budget {c['max_steps']} steps, evaluated every {c['eval_every']} steps; seeds {c['seeds']}. "
                     "For each batch size the learning rate with the fewest steps to the target is used.</p>")
        parts.append(_fit_table(a))
        parts.append(_points_table(a))
        for p in pngs:
            parts.append(_img(p))
    parts.append("<h2>How to read this</h2><p>McCandlish et al. 2018 (arXiv:1812.06162) model the steps S and "
                 "examples E needed to reach a loss as (S/S_min - 1)(E/E_min - 1) = 1, i.e. S(B) = S_min (1 + B_crit/B). "
                 "The gradient noise scale B_simple = tr(Sigma)/|G|^2 is measured from gradient norms during training "
                 "and is an order-of-magnitude predictor of B_crit; the direct measurement here is the authority.</p>")
    parts.append("</body></html>")
    path = out / "report.html"
    path.write_text("\n".join(parts))
    return path
