"""Seeds that never reach the target are censored, not missing: the median over seeds counts them as
+inf, a censored median is a lower bound in the fit, and the report, plots, CLI table and JSON say so.

Constructed sweeps follow S(B) = 30 (1 + 64 / B) exactly (science: "Censored runs"); three seeds per
batch size take 0.9, 1 and 1.1 times S(B), so the median over seeds is S(B) itself, and a budget cuts
the slow seeds of the small batch sizes.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import optimize

from batchlaw.cli.sweep import _print_analysis
from batchlaw.fit import fit_steps_law, steps_law
from batchlaw.fit.engine import huber
from batchlaw.fit.steps import HUBER_DELTA
from batchlaw.report import plots, write_report
from batchlaw.sweep import analyze_sweep, batch_summary
from batchlaw.sweep.analysis import censored_median

BATCHES = [8, 16, 32, 64, 128, 256, 512]
S_MIN, B_CRIT = 30.0, 64.0


def _trial(batch, seed, lr, steps, budget, status=None):
    status = status or ("reached" if steps <= budget else "budget")
    reached = status == "reached"
    last = steps if reached else budget
    return {"key": f"k{batch}-{seed}-{lr}", "spec": {"batch_size": batch, "seed": seed, "lr": lr, "max_steps": budget,
                                                    "eval_every": None, "target_on": "heldout"},
            "status": status, "steps_to_target": float(steps) if reached else None,
            "examples_to_target": float(steps * batch) if reached else None, "tokens_to_target": None,
            "eval_interval": max(1, int(steps) // 10), "steps_run": int(last), "wall_time_s": 1.0,
            "curve": [[0, 2.0, None], [last, 1.0 if reached else 1.5, None]], "final_loss": 1.0, "noise": None,
            "unit": "examples", "tokens_per_example": None}


def _sweep(budget, spread=0.1):
    results = []
    for b in BATCHES:
        s = float(steps_law(b, S_MIN, B_CRIT))
        for seed, f in enumerate((1 - spread, 1.0, 1 + spread)):
            results.append(_trial(b, seed, 0.1, s * f, budget))
    config = {"workload": "nqm", "target_loss": 1.0, "target_on": "heldout", "max_steps": budget, "eval_every": None,
              "seeds": [0, 1, 2]}
    return analyze_sweep("censored", config, results, n_boot=200)


def _dropped_median_b_crit(budget, spread=0.1):
    """What the analysis did before: the median over the seeds that reached the target only."""
    b, s = [], []
    for bb in BATCHES:
        reached = [x for x in steps_law(bb, S_MIN, B_CRIT) * np.array([1 - spread, 1.0, 1 + spread]) if x <= budget]
        if reached:
            b.append(bb)
            s.append(float(np.median(reached)))
    return fit_steps_law(b, s, n_boot=200).b_crit


def test_median_counts_a_censored_seed_as_above_the_budget():
    assert censored_median([100, 120, 300], [False, False, True]) == (120.0, False)  # dropping it gave 110
    assert censored_median([100, 300], [False, True]) == (200.0, True)  # > (100 + 300) / 2
    assert censored_median([300, 300, 100], [True, True, False]) == (300.0, True)
    assert censored_median([120, 100, 130, 140], [False] * 4) == (125.0, False)


def test_best_lr_follows_the_median_rule_with_an_even_number_of_seeds():
    """Four seeds, one over the budget at every learning rate: median (120 + 130) / 2, the upper middle's
    learning rate. Dropping the censored seed gave median 120 and the learning rate of the seed at 120."""
    trials = [_trial(16, 0, 0.1, 100, 500), _trial(16, 1, 0.2, 120, 500), _trial(16, 2, 0.4, 130, 500),
              _trial(16, 3, 0.1, 900, 500), _trial(16, 3, 0.2, 900, 500), _trial(16, 3, 0.4, 900, 500)]
    p = batch_summary(trials)[0]
    got = (p["steps_to_target"], p["best_lr"], p["censored"], p["n_censored"], p["n_seeds"])
    assert got == (125.0, 0.4, False, 1, 4)
    two = batch_summary([_trial(16, 0, 0.1, 100, 500), _trial(16, 1, 0.2, 900, 500, status="diverged")])[0]
    assert two["steps_to_target"] is None and two["censored"] and two["steps_lower_bound"] == 300.0
    assert two["best_lr"] == 0.1  # the slowest measured seed at or below the median's place


@pytest.mark.parametrize("budget,spread,n_cut", [(290, 0.1, 1), (250, 0.3, 2), (160, 0.1, 4)])
def test_b_crit_of_a_sweep_with_censored_seeds(budget, spread, n_cut):
    """Budget cuts: 290 steps cuts one seed of batch 8 (the median stays measured); 250 steps with a
    30% spread leaves batch 8 a lower bound; 160 steps cuts batch 8 entirely and one seed of batch 16.
    Before: B_crit 61.6, 56.1 and 60.7 for the truth 64 (the median over reached seeds only)."""
    a = _sweep(budget, spread)
    before = _dropped_median_b_crit(budget, spread)
    print(f"budget {budget}: B_crit {a.fit.b_crit:.2f} (before {before:.2f}), truth {B_CRIT}")
    assert sum(p["n_censored"] for p in a.points) == n_cut
    assert a.fit.b_crit == pytest.approx(B_CRIT, rel=0.005)
    assert a.fit.s_min == pytest.approx(S_MIN, rel=0.005)
    assert before < 0.97 * B_CRIT
    assert any("did not reach" in w or "reached the target at no learning rate" in w for w in a.warnings)


def test_censored_median_enters_the_fit_as_a_lower_bound():
    a = _sweep(250, 0.3)  # batch 8: S = 270, seeds 189 / 270 / 351, two over the budget
    p = a.points[0]
    assert p["censored"] and p["steps_to_target"] is None and p["steps_lower_bound"] == 250.0
    assert a.fit.lower_bounds == ((8.0, 250.0),) and a.fit.n_points == len(BATCHES) - 1
    d = json.loads(json.dumps(a.to_dict()))
    assert d["points"][0]["censored"] is True and d["points"][0]["steps_lower_bound"] == 250.0
    assert d["fit"]["lower_bounds"] == [[8.0, 250.0]]


def _one_sided_objective(b, s, cens):
    def f(p):
        r = np.log(s) - p[0] - np.logaddexp(0.0, p[1] - np.log(b))
        return huber(np.where(cens, np.maximum(r, 0.0), r), HUBER_DELTA).sum()
    return f


def test_a_lower_bound_pulls_the_law_up_only_when_it_would_pass_below():
    """Noise makes the measured points favour a small B_crit; the bound at batch 8 (true S = 270) then
    lifts the law to pass above it. A bound below the law changes nothing. Cross-checked by minimising
    the one-sided Huber objective directly."""
    b = np.array(BATCHES, dtype=float)
    s = steps_law(b, S_MIN, B_CRIT) * np.exp([0.0, -0.08, -0.06, 0.02, 0.05, 0.03, 0.0])
    free = fit_steps_law(b[1:], s[1:], n_boot=200)
    assert free.predict_steps(8.0) < 255.0
    cens = np.array([True] + [False] * 6)
    for bound, binding in ((265.0, True), (150.0, False)):
        s_b = s.copy()
        s_b[0] = bound
        fit = fit_steps_law(b, s_b, censored=cens, n_boot=200)
        if binding:
            assert fit.predict_steps(8.0) > free.predict_steps(8.0) and fit.b_crit > free.b_crit
        else:
            assert fit.b_crit == pytest.approx(free.b_crit, rel=1e-6)
        best = optimize.minimize(_one_sided_objective(b, s_b, cens), [np.log(fit.s_min), np.log(fit.b_crit)],
                                 method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 5000})
        assert fit.s_min == pytest.approx(np.exp(best.x[0]), rel=1e-4)
        assert fit.b_crit == pytest.approx(np.exp(best.x[1]), rel=1e-4)
        assert fit.b_crit_ci[0] <= fit.b_crit <= fit.b_crit_ci[1]


def test_lower_bounds_alone_cannot_make_a_fit_and_a_wild_bound_is_an_outlier():
    b = np.array(BATCHES, dtype=float)
    s = steps_law(b, S_MIN, B_CRIT)
    with pytest.raises(Exception, match="3 distinct batch sizes that reached the target; got 2.*lower bound"):
        fit_steps_law(b[:4], s[:4], censored=np.array([True, True, False, False]))
    s_w = s.copy()
    s_w[0] = 20 * s[0]  # a bound 20x above the law: a stalled or mis-configured batch size
    fit = fit_steps_law(b, s_w, censored=np.array([True] + [False] * 6), n_boot=200)
    assert fit.b_crit == pytest.approx(B_CRIT, rel=1e-3) and fit.outliers[0][0] == 8.0
    assert "> 5,400 steps" in str(fit)
    with pytest.raises(ValueError, match="'censored' parameter must hold one boolean per batch size"):
        fit_steps_law(b, s, censored=[1, 0, 0, 0, 0, 0, 0])


def test_report_plot_and_table_mark_the_lower_bound(tmp_path, monkeypatch, capsys):
    a = _sweep(250, 0.3)
    _print_analysis(a)
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.strip().startswith("8 "))
    assert "> 250" in row and "censored: 2 of 3 seeds did not reach the target within the budget" in row
    assert "lower bounds (the median over seeds did not reach the target): batch 8 examples > 250 steps" in out
    labels = []
    real_save = plots._save

    def save(fig, path, paths):
        labels.extend(lab for ax in fig.axes for lab in ax.get_legend_handles_labels()[1])
        real_save(fig, path, paths)

    monkeypatch.setattr(plots, "_save", save)
    html = write_report([a], tmp_path).read_text()
    assert "&gt; 250 (censored: 2 of 3 seeds did not reach the target within the budget)" in html
    assert "1 lower bound(s)" in html
    assert "lower bound (median over seeds did not reach the target)" in labels


def test_a_batch_size_where_every_learning_rate_diverged_is_a_bound_far_above_the_law():
    """Batch 1024, every trial diverged: a lower bound at the budget (no learning rate reached the target),
    far above the law, so it is excluded and named as an outlier; the fit of the others is unchanged."""
    base = _sweep(400)
    results = list(base.trials) + [_trial(1024, s, 0.8, 1e9, 400, status="diverged") for s in range(3)]
    a = analyze_sweep("diverged", base.config, results, n_boot=200)
    p = a.points[-1]
    assert p["batch_size"] == 1024 and p["censored"] and p["steps_lower_bound"] == 400.0
    assert a.fit.b_crit == pytest.approx(B_CRIT, rel=1e-3) and [o[0] for o in a.fit.outliers] == [1024.0]


def test_train_target_trials_read_with_the_lagged_average_are_left_out_and_said_so():
    old = _sweep(400)
    lagged = [{**t, "key": t["key"] + "-old", "spec": {**t["spec"], "target_on": "train"},
               "steps_to_target": t["steps_to_target"] + 11} for t in old.trials]
    current = [{**t, "spec": {**t["spec"], "target_on": "train", "train_window": 0.2}} for t in old.trials]
    a = analyze_sweep("train", {**old.config, "target_on": "train"}, lagged + current, n_boot=200)
    assert len(a.trials) == len(current) and a.fit.b_crit == pytest.approx(B_CRIT, rel=1e-3)
    assert any(w.startswith(f"{len(lagged)} train-target trials were read with the lagged") for w in a.warnings)
