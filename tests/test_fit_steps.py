"""The steps-vs-batch law: known answers, an independent fit, coverage, clear refusals."""

import numpy as np
import pytest
from scipy import optimize

from batchlaw.errors import InsufficientDataError
from batchlaw.fit import fit_steps_law, steps_law, zhang_cbs

B = np.array([8, 16, 32, 64, 128, 256, 512, 1024.0])


@pytest.mark.parametrize("sigma,b_crit,batches", [(0.05, 128.0, B), (0.15, 128.0, B), (0.1, 40.0, B[:6])])
def test_intervals_cover_true_parameters_in_most_seeds(sigma, b_crit, batches):
    seeds, hit_s, hit_b = 60, 0, 0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        s = steps_law(batches, 1000.0, b_crit) * np.exp(sigma * rng.standard_normal(batches.size))
        fit = fit_steps_law(batches, s, n_boot=300, seed=seed)
        hit_s += fit.s_min_ci[0] <= 1000.0 <= fit.s_min_ci[1]
        hit_b += fit.b_crit_ci[0] <= b_crit <= fit.b_crit_ci[1]
        assert fit.b_crit_ci[0] <= fit.b_crit <= fit.b_crit_ci[1]
    assert hit_s / seeds >= 0.90 and hit_b / seeds >= 0.90


def test_agrees_with_scipy_curve_fit_on_clean_data():
    rng = np.random.default_rng(0)
    s = steps_law(B, 500.0, 200.0) * np.exp(0.01 * rng.standard_normal(B.size))
    fit = fit_steps_law(B, s)
    (a, b), _ = optimize.curve_fit(lambda x, a, b: np.log(a + b / x), B, np.log(s), p0=[400.0, 1e5])
    assert fit.s_min == pytest.approx(a, rel=0.01)
    assert fit.b_crit == pytest.approx(b / a, rel=0.02)
    assert fit.e_min == pytest.approx(fit.s_min * fit.b_crit)


def test_robust_to_one_outlier():
    s = steps_law(B, 1000.0, 128.0)
    s[3] *= 3.0  # one run that stalled
    fit = fit_steps_law(B, s)
    assert fit.b_crit == pytest.approx(128.0, rel=0.05)


def test_zhang_cbs_matches_brute_force_definition():
    s_min, b_crit, b0 = 1000.0, 700.0, 64.0
    linear = lambda bb: steps_law(b0, s_min, b_crit) * b0 / bb  # noqa: E731
    root = optimize.brentq(lambda bb: steps_law(bb, s_min, b_crit) - 1.2 * linear(bb), b0 * 1.01, 1e6)
    assert zhang_cbs(b_crit, b0) == pytest.approx(root, rel=1e-9)
    fit = fit_steps_law(B, steps_law(B, s_min, b_crit), reference_batch=b0)
    assert fit.cbs == pytest.approx(root, rel=0.01) and fit.reference_batch == b0


def test_examples_law():
    fit = fit_steps_law(B, steps_law(B, 1000.0, 128.0))
    assert fit.predict_examples(128.0) == pytest.approx(2 * fit.e_min, rel=0.01)  # 2 E_min at B_crit
    assert fit.predict_steps(128.0) == pytest.approx(2 * fit.s_min, rel=0.01)


def test_reference_batch_above_every_measured_batch_is_refused_by_name():
    with pytest.raises(ValueError, match=r"'reference_batch' \(B0 = 1e\+308\) is above every batch size measured"):
        fit_steps_law(B, steps_law(B, 1000.0, 128.0), reference_batch=1e308)
    assert fit_steps_law(B, steps_law(B, 1000.0, 128.0), reference_batch=float(B.max())).reference_batch == B.max()


def test_refusals():
    with pytest.raises(InsufficientDataError, match="at least 3 distinct batch sizes"):
        fit_steps_law([8, 8, 16], [100, 90, 50])
    with pytest.raises(InsufficientDataError, match="do not decrease"):
        fit_steps_law(B, np.full(B.size, 100.0))
    with pytest.raises(ValueError, match="'steps' values must be finite and positive"):
        fit_steps_law([8, 16, 32], [100, -5, 20])
    with pytest.raises(ValueError, match="same length"):
        fit_steps_law([8, 16, 32], [100, 50])
    with pytest.raises(InsufficientDataError, match="no bend") as info:
        fit_steps_law(B[:4], steps_law(B[:4], 100.0, 1e6))  # still perfectly linear
    assert info.value.provisional.b_crit > 10 * B[3]


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=20, deadline=None)
@given(k=st.floats(1e-2, 1e3), s=st.floats(1e-2, 1e3))
def test_units_scale_the_right_parameters(k, s):
    """Batch in other units (x k) scales B_crit and E_min by k; steps x s scales S_min and E_min by s."""
    steps = steps_law(B, 1000.0, 128.0) * np.exp(0.03 * np.sin(np.arange(B.size)))
    base = fit_steps_law(B, steps, n_boot=100)
    moved = fit_steps_law(k * B, s * steps, n_boot=100)
    assert moved.b_crit == pytest.approx(k * base.b_crit, rel=1e-3)
    assert moved.s_min == pytest.approx(s * base.s_min, rel=1e-3)
    assert moved.e_min == pytest.approx(k * s * base.e_min, rel=2e-3)


def test_extreme_batches_raise_no_overflow_warning():
    """Found by the fuzz test: a batch of 1e308 in a CSV, or a reference batch of 1e-308, printed numpy's
    'RuntimeWarning: overflow encountered' beside the answer. The law's limit is inf, without a warning."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isinf(steps_law(1e-320, 1.0, 64.0))
        b = np.array([16.0, 32.0, 64.0, 128.0, 1e308])
        try:
            fit_steps_law(b, steps_law(b, 1000.0, 64.0), n_boot=100)
        except ValueError:  # an InsufficientDataError is an answer here; a RuntimeWarning raised as error is not
            pass
