"""Fits on data that look like real runs (tests/realistic.py): lopsided LR bowls, divergence,
missing cells, optima near an edge, heteroscedastic noise, lopsided isoFLOP profiles. Each fit
must recover the known truth within its interval in >= 90% of seeds."""

import math
import warnings

import numpy as np
import pytest
from realistic import GRID_GROUPS, GRID_TRUTH, lopsided_grid, optimum, surface

from batchlaw.errors import InsufficientDataError
from batchlaw.fit.hparams import find_optima, fit_hparam_laws


# ------------------------------------------------------------------ optimal LR and batch
@pytest.mark.slow
def test_hparam_laws_recover_the_truth_on_lopsided_grids():
    seeds, hits = 20, np.zeros(3)
    for seed in range(seeds):
        optima = find_optima(*lopsided_grid(np.random.default_rng(seed)))
        laws = fit_hparam_laws(optima, n_boot=200, seed=seed)
        ci_n, ci_d = laws["lr_law"]["ci"]["exp_params"], laws["lr_law"]["ci"]["exp_tokens"]
        ci_b = laws["batch_law"]["ci"]["exp_tokens"]
        hits += [ci_n[0] <= GRID_TRUTH["lr_exp_params"] <= ci_n[1], ci_d[0] <= GRID_TRUTH["lr_exp_tokens"] <= ci_d[1],
                 ci_b[0] <= GRID_TRUTH["batch_exp_tokens"] <= ci_b[1]]
    assert np.all(hits / seeds >= 0.9), hits / seeds


def test_local_optimum_is_unbiased_where_the_global_quadratic_is_not():
    """On lopsided bowls the vertex of one quadratic over the grid lands far on the flat (low-LR)
    side; the local fit does not, and never leaves the runs' span or undercuts the lowest loss."""
    err = {"local": [], "global": []}
    for seed in range(8):
        n, d, lr, b, loss = lopsided_grid(np.random.default_rng(seed))
        for method in err:
            for o in find_optima(n, d, lr, b, loss, method=method):
                grp = np.isclose(n, o["params"]) & np.isclose(d, o["tokens"]) & np.isfinite(loss)
                assert lr[grp].min() <= o["lr"] <= lr[grp].max() and b[grp].min() <= o["batch"] <= b[grp].max()
                if method == "local":
                    assert o["loss"] > loss[grp].min() - 0.02
                err[method].append(math.log(o["lr"] / optimum(o["params"], o["tokens"])[0]))
    assert abs(np.mean(err["local"])) < 0.08
    assert np.mean(err["global"]) < -0.3  # the defect the local fit removes


def test_diverged_runs_are_counted_and_the_edge_is_flagged():
    n, d = 1e8, 2e9
    lr_opt, b_opt = optimum(n, d)
    rows = []
    for lr in lr_opt * 2.0 ** np.arange(-6, 1):  # the best LR is the largest tried
        for bt in b_opt * 2.0 ** np.arange(-2, 3):
            rows.append((n, d, lr, bt, float(surface(lr, bt, n, d))))
    rows.append((n, d, lr_opt * 4, b_opt, math.nan))
    rows.append((n, d, lr_opt * 4, b_opt * 2, math.inf))
    (o,) = find_optima(*map(np.array, zip(*rows)))
    assert o["n_diverged"] == 2 and o["n_runs"] == 37
    assert o["edge"]["lr"] == "high" and o["lr"] == pytest.approx(lr_opt)
    assert "diverged" in o["warnings"][0] and "add learning rates between them" in o["warnings"][0]
    rows = [r for r in rows if math.isfinite(r[4])]
    (o,) = find_optima(*map(np.array, zip(*rows)))
    assert o["warnings"] == [f"the best LR is the largest tried ({lr_opt:.3g}): extend the grid towards larger LR"]


def test_groups_at_the_edge_are_left_out_of_the_laws():
    rng = np.random.default_rng(0)
    n, d, lr, b, loss = lopsided_grid(rng, guess_spread=0.0)
    # push one group's grid so its best LR is the smallest tried
    g = (n == GRID_GROUPS[0][0]) & (d == GRID_GROUPS[0][1])
    lr = np.where(g, lr * 16, lr)
    loss = np.where(g, [float(surface(a, c, x, y)) for a, c, x, y in zip(lr, b, n, d)], loss)
    optima = find_optima(n, d, lr, b, loss)
    assert [o["edge"]["lr"] for o in optima].count("low") == 1
    laws = fit_hparam_laws(optima, n_boot=0)
    assert laws["excluded"]["lr"] == [{"params": GRID_GROUPS[0][0], "tokens": GRID_GROUPS[0][1]}]
    assert laws["lr_law"]["n_groups"] == 8 and laws["batch_law"]["n_groups"] == 9
    with pytest.raises(InsufficientDataError, match="inside the grid"):
        fit_hparam_laws([dict(o, edge={"lr": "high", "batch": None}) for o in optima], n_boot=0)


def test_group_bootstrap_interval_and_bad_input():
    n, d, lr, b, loss = lopsided_grid(np.random.default_rng(3), groups=[(3e8, 8e9)])
    (o,) = find_optima(n, d, lr, b, loss, n_boot=100)
    assert o["lr_ci"][0] <= o["lr"] <= o["lr_ci"][1] and o["batch_ci"][0] <= o["batch"] <= o["batch_ci"][1]
    with pytest.raises(ValueError, match="'method' parameter"):
        find_optima(n, d, lr, b, loss, method="vertex")
    with pytest.raises(ValueError, match="Every run of the group"):
        find_optima(n, d, lr, b, np.full(loss.shape, np.nan))
    with pytest.raises(ValueError, match="'lr' values must be finite and positive"):
        find_optima(n, d, -lr, b, loss)


# ------------------------------------------------------------------ isoFLOP: Approach 2 and 3
@pytest.mark.slow
def test_isoflop_approaches_2_and_3_recover_the_truth_on_lopsided_profiles():
    from realistic import ISO_TRUTH, lopsided_isoflop

    from batchlaw.fit import fit_isoflop

    truth = ISO_TRUTH["beta"] / (ISO_TRUTH["alpha"] + ISO_TRUTH["beta"])
    seeds, hits2, hits3, skipped = 20, 0, {k: 0 for k in ("alpha", "beta", "E", "params_exponent")}, 0
    for seed in range(seeds):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = fit_isoflop(*lopsided_isoflop(np.random.default_rng(seed)), n_boot=200, seed=seed)
        assert len(caught) == len(out["skipped"])  # one warning per skipped budget
        skipped += len(out["skipped"])
        lo, hi = out["params_law"]["ci"]["exp_compute"]
        hits2 += lo <= truth <= hi
        a3 = out["approach3"]
        for k in hits3:
            want = truth if k == "params_exponent" else ISO_TRUTH[k]
            hits3[k] += a3["ci"][k][0] <= want <= a3["ci"][k][1]
        assert out["comparison"]["params_exponent"]["approach3"] == a3["params_exponent"]
    assert hits2 / seeds >= 0.9 and all(h / seeds >= 0.9 for h in hits3.values()), (hits2, hits3)
    assert skipped > 0  # the fixture has profiles whose minimum is at an edge: skipped, not fatal


def test_isoflop_skips_a_budget_without_a_minimum_and_names_it():
    from batchlaw.fit import EPOCH_2024, chinchilla_loss, compute_optimal, fit_isoflop

    rows = []
    for c in (1e18, 1e19, 1e20, 1e21):
        n_opt = compute_optimal(c, EPOCH_2024)["params"]
        factors = np.geomspace(0.25, 4, 9) if c != 1e21 else np.geomspace(0.05, 0.5, 5)  # 1e21: all below N_opt
        for n in n_opt * factors:
            rows.append((n, c / (6 * n), c, float(chinchilla_loss(n, c / (6 * n), EPOCH_2024))))
    n, d, c, loss = map(np.array, zip(*rows))
    with pytest.warns(UserWarning, match=r"budget 1e\+21 FLOPs skipped: the lowest loss is at the largest model"):
        out = fit_isoflop(n, d, c, loss, n_boot=100)
    assert [s["compute"] for s in out["skipped"]] == [1e21] and len(out["optima"]) == 3
    want = EPOCH_2024["beta"] / (EPOCH_2024["alpha"] + EPOCH_2024["beta"])
    assert out["params_law"]["exponent"] == pytest.approx(want, abs=0.01)
    assert out["approach3"]["params_exponent"] == pytest.approx(want, abs=0.005)
    with pytest.raises(InsufficientDataError, match="at least 3 compute budgets.*1e\\+21 FLOPs: the lowest loss"), \
            pytest.warns(UserWarning):
        fit_isoflop(n[c >= 1e20], d[c >= 1e20], c[c >= 1e20], loss[c >= 1e20])


def test_variable_projection_agrees_with_the_huber_engine_on_clean_data():
    from batchlaw.fit import EPOCH_2024, chinchilla_loss, fit_chinchilla, fit_chinchilla_vp

    n = np.repeat(np.geomspace(1e7, 1e10, 8), 6)
    d = np.tile(np.geomspace(1e9, 1e12, 6), 8)
    loss = chinchilla_loss(n, d, EPOCH_2024)
    vp, hub = fit_chinchilla_vp(n, d, loss, n_boot=0), fit_chinchilla(n, d, loss, n_boot=0)
    for k in ("alpha", "beta", "E"):
        assert vp[k] == pytest.approx(hub.values[k], rel=3e-3) and vp[k] == pytest.approx(EPOCH_2024[k], rel=3e-3)
    with pytest.raises(InsufficientDataError, match="same 'tokens'"):
        fit_chinchilla_vp(n, np.full(n.size, 1e10), loss)


# ------------------------------------------------------------------ learning curves
@pytest.mark.slow
def test_curve_interval_is_honest_on_autocorrelated_constant_lr_curves():
    """From the first quarter or half of a realistic constant-LR curve (warmup, EMA-smoothed noise),
    the 95% predictive interval holds the final loss in >= 90% of seeds, and from the half the
    prediction is unbiased to within 1%."""
    from realistic import realistic_curve

    from batchlaw.fit.curves import backtest_curve

    for frac in (0.25, 0.5):
        inside, errs = 0, []
        for seed in range(10):
            st, _, loss = realistic_curve(np.random.default_rng(seed), "constant")
            bt = backtest_curve(st, loss, fraction=frac, n_boot=150)
            inside += bt["inside"]
            errs.append(bt["rel_error"])
        assert inside >= 9, (frac, inside, errs)
        if frac == 0.5:
            assert abs(np.median(errs)) < 0.01


def test_block_bootstrap_is_wider_than_iid_on_autocorrelated_noise():
    from realistic import realistic_curve

    from batchlaw.fit.curves import fit_curve, predict_curve

    st, _, loss = realistic_curve(np.random.default_rng(1), "constant")
    sel = st <= st[-1] / 4
    blocked = fit_curve(st[sel], loss[sel], n_boot=200)
    iid = fit_curve(st[sel], loss[sel], n_boot=200, block=1)
    assert blocked.block > 1
    w = [np.diff(predict_curve(f, st[-1])["interval"])[0] for f in (blocked, iid)]
    assert w[0] > w[1]


@pytest.mark.slow
def test_schedule_law_recovers_tissue_parameters_and_predicts_the_decay():
    """Data drawn from the schedule-aware law itself (cosine with warmup): parameters inside their
    intervals, and the final loss predicted from the first 60% of the run."""
    from realistic import lr_schedule

    from batchlaw.fit.curves import Schedule, fit_curve, predict_curve

    lr = lr_schedule("cosine", 6000)
    steps = np.arange(20, 6001, 20, dtype=float)
    sched = Schedule(np.arange(1, 6001), lr)
    s1, s2 = sched.areas(steps)
    truth = {"L0": 2.5, "A": 4.0, "alpha": 0.4, "C": 2e-4}
    clean = truth["L0"] + truth["A"] * s1 ** -truth["alpha"] - truth["C"] * s2
    hits, inside = {k: 0 for k in truth}, 0
    for seed in range(10):
        loss = clean * np.exp(0.003 * np.random.default_rng(seed).standard_normal(steps.size))
        sel = steps <= 3600
        fit = fit_curve(steps[sel], loss[sel], lr=lr[steps[sel].astype(int) - 1], schedule=sched, n_boot=150)
        for k, v in truth.items():
            hits[k] += fit.ci[k][0] <= v <= fit.ci[k][1]
        p = predict_curve(fit, 6000)
        inside += p["interval"][0] <= clean[-1] <= p["interval"][1]
    assert all(h >= 9 for h in hits.values()) and inside >= 9, (hits, inside)


def test_schedule_law_refuses_to_predict_a_decay_it_has_not_seen():
    from realistic import realistic_curve

    from batchlaw.fit.curves import Schedule, fit_curve, predict_curve

    st, lr, loss = realistic_curve(np.random.default_rng(0), "wsd")
    sel = st <= 4000  # the stable phase only
    fit = fit_curve(st[sel], loss[sel], lr=lr[sel], schedule=Schedule(st, lr), n_boot=50)
    assert fit.kind == "tissue" and fit.values["C"] >= 0
    with pytest.raises(InsufficientDataError, match="annealing term is not determined"):
        predict_curve(fit, st[-1])
    assert predict_curve(fit, 4000)["interval"][0] is not None  # inside the stable phase it predicts
    with pytest.raises(ValueError, match="known from step 1 to 4000"):
        predict_curve(fit_curve(st[sel], loss[sel], lr=lr[sel], n_boot=0), 6000)


def test_schedule_areas():
    from batchlaw.fit.curves import ANNEAL_DECAY, Schedule

    s1, s2 = Schedule([1, 10, 11, 20], [2.0, 2.0, 1.0, 1.0]).areas([10, 11, 20])
    assert s1.tolist() == pytest.approx([10.0, 10.5, 15.0])  # in units of the peak LR
    # one drop of 0.5 at step 11, carried with momentum lambda: sum_{j=0}^{k} lambda^j
    assert s2.tolist() == pytest.approx([0.0, 0.5, 0.5 * sum(ANNEAL_DECAY**j for j in range(10))])
    with pytest.raises(ValueError, match="'lr' values must be finite and >= 0 in the schedule"):
        Schedule([1, 2], [1.0, -1.0])


@pytest.mark.slow
def test_leaving_out_the_warmup_removes_the_power_laws_first_quarter_bias():
    """A power law in steps reads the warmup's transient as curvature: from the first quarter of a
    constant-LR curve with a 300-step warmup it predicts the final loss about 3.5% too low. With
    ``warmup_steps`` (or the LR column, which gives it) the points before step 600 are left out:
    measured over 20 seeds, median +0.65% with 18 of 20 intervals holding the final loss."""
    from realistic import realistic_curve

    from batchlaw.fit.curves import backtest_curve

    with_warmup, without, inside = [], [], 0
    for seed in range(10):
        st, lr, loss = realistic_curve(np.random.default_rng(seed), "constant")
        without.append(backtest_curve(st, loss, fraction=0.25, n_boot=100)["rel_error"])
        bt = backtest_curve(st, loss, fraction=0.25, n_boot=100, warmup_steps=300)
        with_warmup.append(bt["rel_error"])
        inside += bt["inside"]
        if seed == 0:  # the LR column gives the same warmup to the power law
            from_lr = backtest_curve(st, loss, lr=lr, law="power", fraction=0.25, n_boot=100)
            assert from_lr["fit_points"] == bt["fit_points"] == np.sum((st >= 600) & (st <= 2000))
            assert from_lr["predicted"] == pytest.approx(bt["predicted"], rel=1e-9)
    assert np.median(without) < -0.025, without
    assert abs(np.median(with_warmup)) < 0.015 and inside >= 8, (with_warmup, inside)
