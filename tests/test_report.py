"""The HTML report: everything escaped, no empty plots, plots scaled to the data, files that never collide."""

import re
import warnings

import numpy as np
import pytest

from batchlaw.cli import main
from batchlaw.errors import InsufficientDataError
from batchlaw.fit import fit_steps_law, steps_law
from batchlaw.report import plots, write_report
from batchlaw.sweep import SweepAnalysis, SweepConfig, TrialStore, analyze_sweep, run_sweep

LIN = {"dim": 8, "noise_std": 1.0, "init_distance": 4.0, "condition": 10.0}


def _result(batch, lr, steps, seed=0, payload=""):
    curve = [[0, 2.0, None], [max(1, int(steps)), 0.5, 10.0 * batch]]
    return {"key": f"k{batch}-{lr}-{seed}", "spec": {"batch_size": batch, "lr": lr, "seed": seed, "workload": payload},
            "status": "reached", "steps_to_target": float(steps), "examples_to_target": float(steps * batch),
            "tokens_to_target": None, "eval_interval": 1, "steps_run": int(steps), "wall_time_s": 1.0, "curve": curve,
            "final_loss": 0.5, "noise": {"b_simple": 30.0, "ci": [20.0, 40.0], "g_sq_mean": 1.0,
                                         "trace_sigma_mean": 30.0, "n_steps": 20},
            "unit": "examples", "tokens_per_example": None}


def _analysis(name="s", config=None, b_simple=None, **kw):
    batches = [4, 8, 16, 32, 64, 128, 256]
    results = [_result(b, 0.1, float(steps_law(b, 100.0, 40.0))) for b in batches]
    cfg = {"workload": "linreg", "target_loss": 0.5, "target_on": "heldout", "max_steps": 1000, "eval_every": 1,
           "seeds": [0]}
    cfg.update(config or {})
    a = analyze_sweep(name, cfg, results, n_boot=200)
    for k, v in kw.items():
        setattr(a, k, v)
    if b_simple is not None:
        a.b_simple = b_simple
    return a


def test_every_rendered_field_is_escaped(tmp_path):
    """Each string field gets its own payload; each must appear escaped and never raw."""
    p = {k: f"<x-{k}>&\"'" for k in ("name", "workload", "target_on", "max_steps", "eval_every", "seed",
                                     "fit_error", "warning")}
    a = _analysis(name=p["name"], config={"workload": p["workload"], "target_on": p["target_on"],
                                          "max_steps": p["max_steps"], "eval_every": p["eval_every"],
                                          "seeds": [p["seed"], 1]}, warnings=[p["warning"]])
    b = _analysis(name=p["name"] + "2", fit=None, fit_error=p["fit_error"])
    html = write_report([a, b], tmp_path).read_text()
    for key in p:
        assert f"<x-{key}>" not in html, key
        assert f"&lt;x-{key}&gt;&amp;" in html, key
    tags = set(re.findall(r"<([a-zA-Z][a-zA-Z0-9-]*)", html))
    assert tags <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "a", "table", "tr", "th", "td",
                    "img"}


def test_report_links_trials_csv_and_says_every_step(tmp_path):
    html = write_report([_analysis()], tmp_path).read_text()
    assert 'href="trials.csv"' in html
    assert "every 1 steps" not in html and "evaluated every step" in html
    assert "noise scale grows as the loss falls" not in html


def _captured_axes(monkeypatch):
    figs = {}

    def save(fig, path, paths):
        figs[path.stem.split("_", 1)[1]] = [(ax.get_xlim(), ax.get_legend()) for ax in fig.axes]
        paths.append(path)

    monkeypatch.setattr(plots, "_save", save)
    return figs


def test_axes_span_the_measured_batches_not_far_marks(tmp_path, monkeypatch):
    """A B_simple far beyond the batches measured used to stretch the batch axis to it."""
    figs = _captured_axes(monkeypatch)
    a = _analysis(b_simple={"b_simple": 1e6, "ci": [1e5, 1e7], "n_trials": 3, "unit": "examples"})
    plots.plot_sweep(a, tmp_path, "x")
    for xlim, legend in figs["steps_vs_batch"]:  # steps_vs_batch
        assert 4 / 2 <= xlim[0] and xlim[1] <= 256 * 2
        assert legend is not None
    assert any("outside the measured batches" in t.get_text() for t in figs["steps_vs_batch"][0][1].get_texts())


def test_no_empty_plots_and_no_empty_legends_when_nothing_reached(tmp_path, capsys):
    config = SweepConfig(workload="linreg", batch_sizes=(4, 16, 64), target_loss=0.01, max_steps=15, lr_base=0.05,
                         eval_every=5, workload_kwargs=LIN, lr_points=1, max_extensions=0, name="hard")
    with TrialStore(tmp_path / "s.db") as store:
        results = run_sweep(config, store, progress=False)
    a = analyze_sweep(config.name, config.to_dict(), results)
    assert a.fit is None
    assert re.search(r"target 0.01 not reached by any batch size within the budget; best loss [0-9.]+ at batch "
                     r"(4|16|64): raise the target loss \(above 0.01\) or the budget \(--max-steps, now 15\)",
                     a.fit_error), a.fit_error
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns about a legend with no series
        html = write_report([a], tmp_path / "rep").read_text()
    pngs = sorted(p.name for p in (tmp_path / "rep").glob("*.png"))
    assert not any("steps_vs_batch" in n for n in pngs) and len(pngs) == 2
    assert "not reached by any batch size" in html


def test_report_of_a_sweep_without_trials_and_of_an_empty_store(tmp_path, capsys):
    db = tmp_path / "s.db"
    with TrialStore(db) as store:
        pass
    assert main(["report", str(db), "--out", str(tmp_path / "r0")]) == 2
    err = capsys.readouterr().err
    assert "holds no sweep" in err and len(err.strip().splitlines()) == 1
    with TrialStore(db) as store:
        store.save_sweep("empty", SweepConfig(workload="linreg", batch_sizes=(4, 8), target_loss=0.5, max_steps=10,
                                              lr_base=0.1, name="empty").to_dict())
    assert main(["report", str(db), "--out", str(tmp_path / "r1")]) == 0
    html = (tmp_path / "r1" / "report.html").read_text()
    assert "no finished trial" in html and "data:image/png" not in html


def test_sweeps_whose_names_slug_alike_keep_their_own_plots(tmp_path):
    html = write_report([_analysis(name="a b"), _analysis(name="a_b"), _analysis(name="a/b")], tmp_path).read_text()
    assert len(list(tmp_path.glob("*.png"))) == 9
    assert html.count("data:image/png;base64,") == 9


def test_outlier_is_named_and_cannot_blow_up_the_interval():
    """One cell of 1e308 steps gave intervals 60 orders of magnitude from the estimate, exit 0."""
    b = np.array([16, 32, 64, 128, 256, 512, 1024.0])
    s = steps_law(b, 2000.0, 200.0) * np.exp(0.03 * np.sin(b))
    s[3] = 1e308
    fit = fit_steps_law(b, s, n_boot=300)
    assert fit.outliers and fit.outliers[0][0] == 128.0 and "excluded as outliers: batch 128" in str(fit)
    for v, (lo, hi) in ((fit.s_min, fit.s_min_ci), (fit.b_crit, fit.b_crit_ci), (fit.e_min, fit.e_min_ci),
                        (fit.cbs, fit.cbs_ci)):
        assert lo <= v <= hi and hi / lo < 3
    assert fit.b_crit == pytest.approx(200.0, rel=0.15) and fit.n_points == 6
    b4 = b[:4]
    s4 = steps_law(b4, 2000.0, 200.0)
    s4[2] = s4[3] = 1e-3  # half the points wild: refused by name (was scipy's "Initial guess is outside...")
    with pytest.raises(InsufficientDataError, match="B_crit"):
        fit_steps_law(b4, s4, n_boot=300)


def test_outlier_through_fit_cbs(tmp_path, capsys):
    b = [16, 32, 64, 128, 256, 512, 1024]
    s = [float(steps_law(x, 2000.0, 200.0)) for x in b]
    s[2] = 1e308
    csv = tmp_path / "runs.csv"
    csv.write_text("batch,steps\n" + "".join(f"{x},{y!r}\n" for x, y in zip(b, s)))
    assert main(["fit", "cbs", str(csv), "--batch-col", "batch", "--steps-col", "steps", "--bootstrap", "200"]) == 0
    out = capsys.readouterr().out
    assert "excluded as outliers: batch 64" in out


def test_report_names_the_outliers_it_excluded(tmp_path):
    batches = [4, 8, 16, 32, 64, 128, 256]
    results = [_result(b, 0.1, float(steps_law(b, 100.0, 40.0)) * (50.0 if b == 32 else 1.0)) for b in batches]
    cfg = {"workload": "linreg", "target_loss": 0.5, "target_on": "heldout", "max_steps": 1000, "eval_every": 1,
           "seeds": [0]}
    a = analyze_sweep("o", cfg, results, n_boot=200)
    assert a.fit is not None and [o[0] for o in a.fit.outliers] == [32.0]
    html = write_report([a], tmp_path).read_text()
    assert "Excluded from the fit as outliers" in html and "batch 32:" in html
