"""A self-contained HTML report (PNG plots embedded) for one or more sweeps.

The page is rendered by Jinja2 from ``templates/report.html.j2`` with autoescape on: every
value that comes from a store, a CSV or the command line (sweep names, workload names and
arguments, configuration fields, error messages) is escaped, never concatenated into HTML.
"""

from __future__ import annotations

import base64
import hashlib
import math
from datetime import datetime, timezone
from pathlib import Path

import jinja2

from .._format import fmt_num
from ..sweep.analysis import steps_text
from .plots import plot_sweep

__all__ = ["write_report", "headline", "file_stem"]

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("batchlaw.report", "templates"),
    autoescape=True,  # every template here is HTML
    undefined=jinja2.StrictUndefined,
)


def _ci(ci) -> str:
    lo, hi = ci
    return f"{fmt_num(lo)} to {fmt_num(hi if hi is not None else math.inf)}"


def headline(a) -> str:
    """The answer in plain words (plain text: escape it before putting it in HTML)."""
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


def file_stem(name: str) -> str:
    """A file-name stem for a sweep: its name made safe, plus a hash of the name, so two names
    that differ only in unsafe characters (``"a b"``, ``"a/b"``, ``"a_b"``) never share files.

    Examples:
        >>> file_stem("a b") != file_stem("a_b")
        True
    """
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "_.-") else "_" for c in name)[:60]
    return f"{safe}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def _eval_text(every) -> str:
    if every is None:
        return "every max(1, step // 10) steps (relative to the steps so far)"
    return "every step" if every == 1 else f"every {every} steps"


def _fit_rows(a) -> list[dict]:
    f = a.fit
    rows = [("B_crit = E_min / S_min", f.b_crit, f.b_crit_ci, "examples"),
            ("S_min", f.s_min, f.s_min_ci, "steps"),
            ("E_min", f.e_min, f.e_min_ci, "examples"),
            (f"CBS (Zhang et al., B0 = {fmt_num(f.reference_batch)})", f.cbs, f.cbs_ci, "examples")]
    if a.b_simple is not None:
        rows.append(("run-averaged B_simple (monitor)", a.b_simple["b_simple"], a.b_simple["ci"], "examples"))
    return [{"name": n, "value": fmt_num(v), "ci": _ci(ci), "unit": u} for n, v, ci, u in rows]


def _points(a) -> list[dict]:
    out = []
    tpe = a.tokens_per_example or 1
    for p in a.points:
        noise = [t["noise"]["b_simple"] for t in p["best_trials"] if t.get("noise") and t["noise"].get("b_simple")]
        lr = "-" if p["best_lr"] is None else f"{p['best_lr']:.3g}" + (f" ({p['lr_at_edge']} edge)" if p["lr_at_edge"] else "")
        steps, examples, note = steps_text(p)
        out.append({"batch": p["batch_size"], "steps": f"{steps} ({note})" if note else steps, "examples": examples,
                    "lr": lr,
                    "n_lrs": len(p["lrs_tried"]), "b_simple": fmt_num(noise[0] / tpe) if noise else "-"})
    return out


def _sweep_context(a, out: Path) -> dict:
    c = a.config
    images = [{"alt": p.stem, "data": base64.b64encode(p.read_bytes()).decode()}
              for p in plot_sweep(a, out, file_stem(a.name))]
    warnings = list(a.warnings)
    if a.fit is not None and a.fit.outliers:
        bounds = {(b, st) for b, st in a.fit.lower_bounds}
        warnings.append("Excluded from the fit as outliers (more than a factor 2 and 5 robust standard deviations off "
                        "the law fitted to the others; check those runs): " + "; ".join(
                            f"batch {fmt_num(b)}: {'> ' if (b, st) in bounds else ''}{fmt_num(st)} steps, "
                            f"{fmt_num(r)}x the law" for b, st, r in a.fit.outliers))
    ctx = {"name": a.name, "workload": c.get("workload"), "headline": headline(a), "warnings": warnings,
           "n_trials": len(a.trials), "target_loss": f"{c['target_loss']:g}", "target_on": c.get("target_on"),
           "max_steps": c.get("max_steps"), "eval_text": _eval_text(c.get("eval_every")),
           "seeds": ", ".join(str(s) for s in c.get("seeds", ())), "fit_rows": [], "fit_note": "",
           "tokens_note": "", "fit_error": a.fit_error, "points": _points(a), "images": images}
    if a.fit is not None:
        f = a.fit
        ctx["fit_rows"] = _fit_rows(a)
        bounds = (f" and {len(f.lower_bounds)} lower bound(s) (batch sizes whose median over seeds did not reach "
                  "the target: the law may lie above them, not below)" if f.lower_bounds else "")
        ctx["fit_note"] = (f"Fit of S(B) = S_min (1 + B_crit / B) to {f.n_points} batch sizes{bounds}; residual scale "
                           f"{f.residual_std:.3f} in log steps; intervals from {f.n_boot} residual-bootstrap resamples.")
        if a.tokens_per_example:
            ctx["tokens_note"] = (f"One example is {a.tokens_per_example} tokens: B_crit = "
                                  f"{fmt_num(f.b_crit * a.tokens_per_example)} tokens.")
    return ctx


def _compare_context(doc: dict, out: Path) -> dict:
    """The report's section on a schedule comparison: its verdict, the controller's line and its plot
    (also written as ``compare.png``)."""
    from .compare import compare_summary, plot_compare, schedule_line

    png = plot_compare(doc)
    (out / "compare.png").write_bytes(png)
    lines = [schedule_line(doc, name) for name in doc["schedules"] if name not in ("constant_small", "constant_large")]
    c = doc["config"]
    return {"workload": doc["workload"]["name"], "target_loss": f"{c['target_loss']:g}", "summary": compare_summary(doc),
            "lines": lines, "image": base64.b64encode(png).decode(), "notes": list(doc.get("notes", []))}


def write_report(analyses: list, out_dir: str | Path, *, compare: dict | None = None) -> Path:
    """Write ``report.html`` and one set of PNGs per sweep into ``out_dir``; returns the HTML path.

    Args:
        analyses: :class:`~batchlaw.sweep.SweepAnalysis` objects, one per sweep.
        out_dir: directory (created if missing); ``trials.csv`` is expected beside the report.
        compare: a ``batchlaw.schedule_compare/2`` document to add as a last section (its
            steps-vs-examples plot embedded, and written as ``compare.png``), or ``None``.

    Returns:
        The path of ``report.html``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    page = _ENV.get_template("report.html.j2").render(
        written=f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M}", sweeps=[_sweep_context(a, out) for a in analyses],
        compare=None if compare is None else _compare_context(compare, out))
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
