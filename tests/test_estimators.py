"""Known-answer tests of the pure estimators (no torch)."""

import math

import numpy as np
import pytest

from batchlaw.errors import InsufficientDataError
from batchlaw.noise.estimators import (
    BiasCorrectedEMA,
    estimate_b_simple,
    integrated_time,
    unbiased_g_sq,
    unbiased_trace_sigma,
    windowed_estimates,
)


@pytest.mark.parametrize("b_small,b_big", [(1, 2), (8, 32), (3, 300), (100.0, 101.0)])
def test_expected_norms_give_exact_answers(b_small, b_big):
    g_sq, tr = 2.5, 700.0
    small = g_sq + tr / b_small  # E|G_small|^2
    big = g_sq + tr / b_big
    assert unbiased_g_sq(small, big, b_small, b_big) == pytest.approx(g_sq, rel=1e-9)
    assert unbiased_trace_sigma(small, big, b_small, b_big) == pytest.approx(tr, rel=1e-9)


def test_unbiased_on_simulated_gaussian_gradients():
    """Per-example gradients g ~ N(G, diag(s^2)); means of b and K*b examples; the per-step
    estimates average to |G|^2 and tr(Sigma), although many single steps are negative."""
    rng = np.random.default_rng(1)
    d, b, k, steps = 20, 4, 4, 20000
    G = rng.normal(size=d) * 0.3
    s = rng.uniform(0.5, 2.0, size=d)
    ex = G + s * rng.standard_normal((steps, k, b, d))
    micro = ex.mean(axis=2)  # (steps, k, d)
    small = (micro**2).sum(-1).mean(-1)
    big = (micro.mean(1) ** 2).sum(-1)
    g = unbiased_g_sq(small, big, b, k * b)
    t = unbiased_trace_sigma(small, big, b, k * b)
    assert (g < 0).mean() > 0.05  # single steps really are noisy
    assert g.mean() == pytest.approx((G**2).sum(), rel=0.05)
    assert t.mean() == pytest.approx((s**2).sum(), rel=0.02)


def test_rejects_equal_batch_sizes():
    with pytest.raises(ValueError, match="b_big"):
        unbiased_g_sq(1.0, 1.0, 8, 8)
    with pytest.raises(ValueError, match="b_small"):
        unbiased_trace_sigma(1.0, 1.0, -1, 8)


def test_ema_bias_correction():
    ema = BiasCorrectedEMA(0.99)
    assert math.isnan(ema.value)
    for _ in range(3):
        ema.update(5.0)
    assert ema.value == pytest.approx(5.0)  # no pull towards the zero start
    state = ema.state_dict()
    other = BiasCorrectedEMA(0.5)
    other.load_state_dict(state)
    assert other.update(5.0) == pytest.approx(ema.update(5.0))


def _synthetic_steps(rng, n, g_true=1.0, tr_true=80.0, noise=0.6, rho=0.5):
    # Per-step unbiased estimates with AR(1) correlation rho, as in a training run.
    e = np.empty((n, 2))
    prev = rng.standard_normal(2)
    for i in range(n):
        prev = rho * prev + math.sqrt(1 - rho**2) * rng.standard_normal(2)
        e[i] = prev
    return g_true + noise * g_true * e[:, 0], tr_true + 0.2 * tr_true * e[:, 1]


@pytest.mark.parametrize("rho,n", [(0.0, 20), (0.0, 200), (0.5, 60), (0.5, 200), (0.8, 400), (0.9, 400)])
def test_interval_covers_true_ratio_in_most_seeds(rho, n):
    """Batch means alone covered 90.8% at (0.5, 60) and 92% at (0.9, 400) over 600 seeds; the
    autocorrelation widening brings them to 92% and 92.5%, and 95% at (0.8, 400)."""
    hits = 0
    seeds = 300
    for seed in range(seeds):
        g, t = _synthetic_steps(np.random.default_rng(seed), n, rho=rho)
        est = estimate_b_simple(g, t)
        hits += est.ci[0] <= 80.0 <= est.ci[1]
        assert est.ci[0] <= est.b_simple <= est.ci[1]
    assert hits / seeds >= 0.90


def test_integrated_time_of_ar1_series():
    """tau = (1 + rho) / (1 - rho) for AR(1)."""
    rng = np.random.default_rng(0)
    for rho in (0.0, 0.5, 0.8):
        x = np.empty(20000)
        prev = 0.0
        for i in range(x.size):
            prev = rho * prev + rng.standard_normal()
            x[i] = prev
        assert integrated_time(x) == pytest.approx((1 + rho) / (1 - rho), rel=0.15)


def test_interval_coverage_on_exact_linear_regression_gradients():
    """Exact per-example gradients of linear regression (d = 64, |delta| = 1, sigma = 1: B_simple =
    129), K = 4 micro-batches of 8, 200 steps: the 95% interval over 300 seeds."""
    rng = np.random.default_rng(0)
    d, k, b, steps = 64, 4, 8, 200
    delta = rng.standard_normal(d)
    delta /= np.linalg.norm(delta)
    truth = (d + 1) + d
    hits = 0
    for _ in range(300):
        x = rng.standard_normal((steps, k, b, d))
        r = x @ delta - rng.standard_normal((steps, k, b))
        micro = (r[..., None] * x).mean(2)  # (steps, k, d)
        small, big = (micro**2).sum(-1).mean(1), (micro.mean(1) ** 2).sum(-1)
        est = estimate_b_simple(unbiased_g_sq(small, big, b, k * b), unbiased_trace_sigma(small, big, b, k * b))
        hits += est.ci[0] <= truth <= est.ci[1]
    assert hits / 300 >= 0.92


def test_negative_mean_trace_is_explained_not_inverted():
    g = np.full(40, 1.0)
    t = np.full(40, -5.0) + np.random.default_rng(0).normal(size=40)
    with pytest.raises(InsufficientDataError, match=r"tr\(Sigma\) estimate .* <= 0.*zero_grad"):
        estimate_b_simple(g, t)


def test_significantly_negative_gradient_norm_points_at_the_call_order():
    rng = np.random.default_rng(0)
    g = -0.5 + 0.1 * rng.normal(size=60)
    with pytest.raises(InsufficientDataError, match="clipping or GradScaler.unscale_"):
        estimate_b_simple(g, np.full(60, 10.0))


def test_ratio_of_means_not_mean_of_ratios():
    g = np.array([0.1, 1.9] * 10)
    t = np.array([10.0, 10.0] * 10)
    est = estimate_b_simple(g, t)
    assert est.b_simple == pytest.approx(10.0)  # 10 / mean(g) = 10 / 1.0
    assert np.mean(t / g) > 50  # the biased alternative


def test_too_few_steps_carries_provisional():
    with pytest.raises(InsufficientDataError, match="at least 10") as info:
        estimate_b_simple([1.0] * 5, [30.0] * 5)
    assert info.value.provisional.b_simple == pytest.approx(30.0)


def test_unresolved_gradient_refused():
    rng = np.random.default_rng(0)
    g = rng.normal(-0.1, 1.0, size=50)
    g -= g.mean() + 0.01
    with pytest.raises(InsufficientDataError, match="buried in noise") as info:
        estimate_b_simple(g, np.full(50, 10.0))
    assert math.isinf(info.value.provisional.b_simple)


def test_unbounded_upper_end_when_gradient_barely_resolved():
    rng = np.random.default_rng(3)
    g = 0.05 + rng.normal(size=40)
    g += 0.05 - g.mean()
    est = estimate_b_simple(g, np.full(40, 10.0))
    assert math.isinf(est.ci[1]) and est.to_dict()["ci"][1] is None


@pytest.mark.parametrize("bad", [dict(confidence=1.0), dict(n_batches=2), dict(min_steps=0)])
def test_bad_arguments(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        estimate_b_simple(np.ones(20), np.ones(20), **bad)


def test_non_finite_and_mismatched_inputs():
    with pytest.raises(ValueError, match="finite"):
        estimate_b_simple([1.0, math.nan] * 10, [1.0] * 20)
    with pytest.raises(ValueError, match="same length"):
        estimate_b_simple([1.0] * 20, [1.0] * 19)


def test_windowed_trace_reports_each_window():
    rng = np.random.default_rng(0)
    g, t = _synthetic_steps(rng, 95)
    rows = windowed_estimates(np.arange(95), g, t, n_windows=5)
    assert [r["n_steps"] for r in rows] == [19] * 5
    assert rows[0]["step_start"] == 0 and rows[-1]["step_end"] == 94
    for r in rows:
        assert r["ci"][0] <= r["b_simple"] <= (r["ci"][1] or math.inf)
    short = windowed_estimates(np.arange(15), g[:15], t[:15], n_windows=3)
    assert all(r["b_simple"] is None and r["note"] == "too few steps" for r in short)
    assert short[0]["provisional"] is not None
