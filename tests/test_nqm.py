"""The noisy quadratic model: its exact expected dynamics against Monte Carlo, its exact noise
scale against the monitor, and a sweep that recovers its exact critical batch size."""

import json
import math

import numpy as np
import pytest
import torch

from batchlaw.cli import main
from batchlaw.fit import fit_steps_law
from batchlaw.noise import GradientNoiseMonitor
from batchlaw.sweep import SweepConfig, TrialStore, analyze_sweep, run_sweep
from batchlaw.workloads import NoisyQuadratic
from batchlaw.workloads.nqm import (
    nqm_best_steps,
    nqm_exact_cbs,
    nqm_expected_g_sq,
    nqm_expected_loss,
    nqm_steps_to_target,
)


def test_recursion_agrees_with_monte_carlo_sgd():
    """20,000 independent SGD runs on a 6-coordinate NQM (numpy, not the closed form)."""
    wl = NoisyQuadratic(dim=6, h_exponent=1.0, c_exponent=0.5)
    rng = np.random.default_rng(0)
    lr, batch, steps, runs = 0.6, 4, 40, 20_000
    theta = np.full((runs, 6), wl.init)
    losses = [0.5 * (wl.h * theta**2).sum(1)]
    for _ in range(steps):
        xi = rng.standard_normal((runs, batch, 6)).mean(1) * np.sqrt(wl.c)  # batch mean: cov C / B
        theta = theta - lr * (wl.h * theta + xi)
        losses.append(0.5 * (wl.h * theta**2).sum(1))
    losses = np.array(losses)  # (steps + 1, runs)
    exact = nqm_expected_loss(wl.h, wl.c, wl.theta0_sq, lr, batch, np.arange(steps + 1))
    se = losses.std(1) / math.sqrt(runs)
    assert np.all(np.abs(losses.mean(1) - exact) < 4 * se + 1e-12)
    assert exact[-1] == pytest.approx(0.5 * (wl.h * lr * wl.c / (batch * wl.h * (2 - lr * wl.h))).sum(), rel=0.05)


def test_workload_gradient_has_mean_h_theta_and_covariance_c_over_b():
    wl = NoisyQuadratic(dim=4, h_exponent=1.0, c_exponent=2.0, c_max=3.0)
    model = wl.make_model(0)
    gen = torch.Generator().manual_seed(0)
    grads = []
    for _ in range(4000):
        model.zero_grad()
        wl.loss(model, wl.sample_batch(5, gen)).backward()
        grads.append(model.theta.grad.double().clone())
    g = torch.stack(grads).numpy()  # (4000, 4)
    np.testing.assert_allclose(g.mean(0), wl.h * wl.init, atol=4 * math.sqrt(3.0 / 5 / 4000))
    np.testing.assert_allclose(g.var(0), wl.c / 5, rtol=0.1)
    assert wl.eval_loss(model) == pytest.approx(0.5 * wl.h.sum())


def test_steps_to_target_limits_and_refusals():
    h, c, m0 = np.array([1.0, 0.1]), np.array([1.0, 1.0]), np.ones(2)
    assert nqm_steps_to_target(h, c, m0, 2.5, 8, 0.1) == math.inf  # unstable: lr >= 2 / max h
    assert nqm_steps_to_target(h, c, m0, 1.0, 1, 0.01) == math.inf  # noise floor above the target
    s = nqm_steps_to_target(h, c * 0, m0, 1.0, 1, 0.02)  # noiseless: L(t) = 0.05 * 0.81^t
    assert s == pytest.approx(math.log(0.4) / math.log(0.81), abs=1.0)
    steps, lr = nqm_best_steps(h, c, m0, 64, 0.05)
    assert all(nqm_steps_to_target(h, c, m0, lr * f, 64, 0.05) >= steps - 1e-6 for f in (0.9, 1.1))
    with pytest.raises(ValueError, match="at least 3 positive sizes"):
        nqm_exact_cbs(h, c, m0, [1, 2], 0.05)


def test_exact_law_matches_its_limits():
    wl = NoisyQuadratic(dim=64, h_exponent=1.0, c_exponent=0.0)
    target = 0.2 * wl.eval_loss(wl.make_model(0))
    ex = wl.exact_cbs([8**k for k in range(6)], target)  # 1 to 32768
    lim = ex["limits"]
    # over a wide range the fitted law approaches the exact limits S_min (B -> inf), E_min (B -> 0)
    assert ex["steps"][-1] == pytest.approx(lim["s_min"], rel=0.05)
    assert ex["batch_sizes"][0] * ex["steps"][0] == pytest.approx(lim["e_min"], rel=0.05)
    assert ex["cbs"] == pytest.approx(1.2 + ex["b_crit"] / 5)


def test_monitor_b_simple_matches_exact_value_at_the_measured_weights():
    """The weights move during the run: compare with tr(C) / |H theta|^2 at each measured step."""
    wl = NoisyQuadratic(dim=32, h_exponent=1.0, c_exponent=0.5)
    model = wl.make_model(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.02)
    monitor = GradientNoiseMonitor(model, micro_batch_size=4)
    gen = torch.Generator().manual_seed(1)
    exact_g_sq = []
    for _ in range(300):
        exact_g_sq.append(float(((wl.h * model.theta.detach().double().numpy()) ** 2).sum()))
        for _ in range(4):  # K = 4 micro-batches of 4 examples
            (wl.loss(model, wl.sample_batch(4, gen)) / 4).backward()
        monitor.step()
        opt.step()
        opt.zero_grad()
    est = monitor.estimate()
    exact = wl.c.sum() / np.mean(exact_g_sq)  # ratio of means, as the monitor pools
    lo, hi = est.to_dict()["ci"]
    print(f"monitor B_simple {est.b_simple:.2f} ({lo:.2f} to {hi}), exact {exact:.2f}")
    assert lo <= exact <= (hi if hi is not None else math.inf)
    assert est.b_simple == pytest.approx(exact, rel=0.15)
    assert est.trace_sigma == pytest.approx(wl.c.sum(), rel=0.1)


# Three spectra (curvature and noise power laws with different exponents), d = 256 coordinates.
# The target is a fraction of the initial loss; 7 batch sizes from about B_crit/20; the budget is
# 3x the exact steps at the smallest batch (learning rates whose noise floor lies above the target
# run to the budget).
SPECTRA = [
    # h_exponent, c_exponent, target fraction, batch sizes, max steps
    (1.0, 0.0, 0.2, (32, 7), 720),
    (0.5, 0.0, 0.1, (8, 7), 400),
    (0.5, 0.5, 0.1, (1, 7), 400),
]


@pytest.mark.slow
@pytest.mark.parametrize("h_exp,c_exp,frac,batch_grid,max_steps", SPECTRA)
def test_sweep_recovers_the_exact_critical_batch_size(h_exp, c_exp, frac, batch_grid, max_steps, tmp_path, capsys):
    kwargs = {"dim": 256, "h_exponent": h_exp, "c_exponent": c_exp}
    wl = NoisyQuadratic(**kwargs)
    target = round(frac * wl.eval_loss(wl.make_model(0)), 6)
    b_min, n_batches = batch_grid
    batches = [b_min * 2**k for k in range(n_batches)]
    args = ["sweep", "--workload", "nqm", "--batch-sizes", ",".join(map(str, batches)), "--target-loss", str(target),
            "--max-steps", str(max_steps), "--eval-every", "1", "--seeds", "0,1", "--lr-base", "0.5",
            "--lr-scaling", "0.5", "--lr-factor", "2", "--max-extensions", "4", "--lr-refine", "2",
            "--store", str(tmp_path / "nqm.db"), "--jobs", "1", "--no-progress", "--json"]
    for key, value in kwargs.items():
        args += ["--workload-arg", f"{key}={value}"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    exact = wl.exact_cbs(batches, target)
    exact_fit = fit_steps_law(exact["batch_sizes"], exact["steps"])  # the same estimator, noise-free steps
    fit = out["fit"]
    lo, hi = fit["b_crit_ci"]
    print(f"h^-{h_exp} c^-{c_exp}: measured B_crit {fit['b_crit']:.0f} ({lo:.0f} to {hi:.0f}), exact "
          f"{exact_fit.b_crit:.0f}, ratio {fit['b_crit'] / exact_fit.b_crit:.3f}; S_min {fit['s_min']:.1f} vs "
          f"{exact_fit.s_min:.1f}; limits {exact['limits']}")
    assert exact_fit.b_crit == pytest.approx(exact["b_crit"], rel=1e-3)
    assert lo <= exact_fit.b_crit <= hi
    assert 0.75 <= fit["b_crit"] / exact_fit.b_crit <= 1.33
    assert fit["cbs_ci"][0] <= exact_fit.cbs <= fit["cbs_ci"][1]  # CBS = 1.2 B0 + B_crit / 5, B0 = smallest batch
    # The monitor's pooled B_simple (best trials, ratio of means) against its exact value along the
    # same trajectories: tr(Sigma) = sum(c) at every step, E|G_t|^2 from the recursion.
    with TrialStore(tmp_path / "nqm.db") as store:
        trials = store.trials("sweep")
    a = analyze_sweep("sweep", out["config"], trials)
    best = [t for p in a.points for t in p["best_trials"] if t["noise"] and t["noise"]["g_sq_mean"] is not None]
    g_exact = [nqm_expected_g_sq(wl.h, wl.c, wl.theta0_sq, t["spec"]["lr"], t["spec"]["batch_size"],
                                 np.arange(t["steps_run"])).mean() for t in best]
    exact_b_simple = wl.c.sum() / np.mean(g_exact)
    b_lo, b_hi = a.b_simple["ci"]
    print(f"  pooled B_simple {a.b_simple['b_simple']:.0f} ({b_lo:.0f} to {b_hi}), exact {exact_b_simple:.0f}")
    assert b_lo <= exact_b_simple <= (b_hi if b_hi is not None else math.inf)
    assert a.b_simple["b_simple"] == pytest.approx(exact_b_simple, rel=0.25)


@pytest.mark.slow
def test_train_target_sweep_recovers_the_exact_critical_batch_size():
    """target_on="train" on the NQM (C = H, d = 256, target 10% of the initial loss: S_min ~ 30 steps,
    B_crit ~ 28 examples). The EMA of a one-step-stale training loss read crossings ~11 steps late and
    measured B_crit 0.44x the exact value here (12.3 vs 27.8); the centred window reads 0.99x."""
    kwargs = {"dim": 256, "h_exponent": 1.0, "c_exponent": 1.0}
    wl = NoisyQuadratic(**kwargs)
    target = round(0.1 * wl.eval_loss(wl.make_model(0)), 6)
    batches = tuple(4 * 2**k for k in range(7))
    exact = wl.exact_cbs(batches, target)
    exact_fit = fit_steps_law(exact["batch_sizes"], exact["steps"])  # the same estimator, noise-free steps
    config = SweepConfig(workload="nqm", workload_kwargs=kwargs, batch_sizes=batches, target_loss=target, max_steps=800,
                         lr_base=0.4, lr_scaling=0.5, lr_factor=2.0, max_extensions=4, lr_refine=2, seeds=(0, 1),
                         target_on="train")
    results = run_sweep(config, TrialStore(":memory:"), progress=False)
    a = analyze_sweep(config.name, config.to_dict(), results, n_boot=300)
    assert a.fit is not None, a.fit_error
    fit = a.fit
    print(f"train target: B_crit {fit.b_crit:.1f} ({fit.b_crit_ci[0]:.1f} to {fit.b_crit_ci[1]:.1f}), exact "
          f"{exact_fit.b_crit:.1f}, ratio {fit.b_crit / exact_fit.b_crit:.3f}")
    assert fit.b_crit_ci[0] <= exact_fit.b_crit <= fit.b_crit_ci[1]
    assert 0.8 <= fit.b_crit / exact_fit.b_crit <= 1.25
