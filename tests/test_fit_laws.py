"""Scaling-law fits against known answers, an independent fitter, published numbers, and invariants."""

import math

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize

from batchlaw.errors import InsufficientDataError
from batchlaw.fit import (
    EPOCH_2024,
    chinchilla_loss,
    compute_optimal,
    fit_chinchilla,
    fit_isoflop,
    fit_power_law,
    inference_optimal,
)
from batchlaw.fit.curves import backtest_curve, fit_curve, predict_curve
from batchlaw.fit.hparams import STEP_LAW, deepseek_hparams, find_optima, fit_hparam_laws, step_law

N_GRID = np.repeat(np.geomspace(1e7, 1e10, 8), 6)
D_GRID = np.tile(np.geomspace(1e9, 1e12, 6), 8)


# ------------------------------------------------------------------ Chinchilla
def test_chinchilla_recovers_known_parameters_within_intervals():
    seeds, hits = 10, {k: 0 for k in EPOCH_2024}
    for seed in range(seeds):
        rng = np.random.default_rng(100 + seed)
        loss = chinchilla_loss(N_GRID, D_GRID, EPOCH_2024) * np.exp(0.01 * rng.standard_normal(N_GRID.size))
        fit = fit_chinchilla(N_GRID, D_GRID, loss, n_boot=300, seed=seed)
        for k, v in EPOCH_2024.items():
            hits[k] += fit.ci[k][0] <= v <= fit.ci[k][1]
    assert all(h >= 9 for h in hits.values()), hits


def test_chinchilla_agrees_with_curve_fit_on_clean_data():
    loss = chinchilla_loss(N_GRID, D_GRID, EPOCH_2024)
    fit = fit_chinchilla(N_GRID, D_GRID, loss, n_boot=0)
    popt, _ = optimize.curve_fit(lambda x, E, A, B, a, b: np.log(E + A / x[0] ** a + B / x[1] ** b),
                                 np.vstack([N_GRID, D_GRID]), np.log(loss), p0=[2, 300, 1000, 0.3, 0.3], maxfev=20000)
    for k, v in zip(("E", "A", "B", "alpha", "beta"), popt):
        assert fit.values[k] == pytest.approx(v, rel=1e-3)
        assert fit.values[k] == pytest.approx(EPOCH_2024[k], rel=1e-3)
    assert fit.extrapolation["median_abs_rel_error"] < 1e-4


def test_epoch_allocation_gives_about_20_tokens_per_parameter():
    """Besiroglu et al. 2024: about 20 tokens per parameter at Chinchilla's 5.88e23 FLOP."""
    a = compute_optimal(5.88e23, EPOCH_2024)
    assert 17 < a["tokens_per_param"] < 23
    assert 6 * a["params"] * a["tokens"] == pytest.approx(5.88e23, rel=1e-9)


def test_inference_aware_allocation():
    c = 1e22
    base = compute_optimal(c, EPOCH_2024)
    none = inference_optimal(c, 0.0, EPOCH_2024)
    assert none["params"] == pytest.approx(base["params"], rel=1e-3)
    heavy = inference_optimal(c, 1e13, EPOCH_2024)
    assert heavy["params"] < base["params"] and heavy["tokens"] > base["tokens"]
    assert heavy["total_compute"] < heavy["chinchilla_total_compute"]
    assert chinchilla_loss(heavy["params"], heavy["tokens"], EPOCH_2024) == pytest.approx(base["loss"], rel=1e-6)


def test_chinchilla_bad_data():
    with pytest.raises(ValueError, match="'loss' values must be finite and positive"):
        fit_chinchilla(N_GRID[:12], D_GRID[:12], [np.nan] + [2.0] * 11)
    with pytest.raises(ValueError, match="'params' values"):
        fit_chinchilla([-1.0] + [1e8] * 11, D_GRID[:12], [2.0] * 12)
    with pytest.raises(InsufficientDataError, match="At least 10 points"):
        fit_chinchilla(N_GRID[:5], D_GRID[:5], [2.0] * 5)
    with pytest.raises(InsufficientDataError, match="same 'params'"):
        fit_chinchilla([1e8] * 12, D_GRID[:12], chinchilla_loss(1e8, D_GRID[:12], EPOCH_2024))


def test_isoflop_recovers_the_optimal_exponent():
    """For L = E + A/N^a + B/D^b, N_opt ~ C^(b/(a+b)) exactly (Hoffmann et al. 2022, App. D.2)."""
    rows = []
    for c in (1e18, 1e19, 1e20, 1e21):
        n_opt = compute_optimal(c, EPOCH_2024)["params"]
        for n in n_opt * np.geomspace(0.25, 4, 9):
            rows.append((n, c / (6 * n), c, chinchilla_loss(n, c / (6 * n), EPOCH_2024)))
    n, d, c, loss = map(np.array, zip(*rows))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a resolved grid: no warning
        out = fit_isoflop(n, d, c, loss, n_boot=200)
    expected = EPOCH_2024["beta"] / (EPOCH_2024["alpha"] + EPOCH_2024["beta"])
    assert out["params_law"]["exponent"] == pytest.approx(expected, abs=0.01)
    assert out["tokens_law"]["exponent"] == pytest.approx(1 - expected, abs=0.01)
    with pytest.raises(InsufficientDataError, match="at least 3 compute budgets"):
        fit_isoflop(n[:9], d[:9], c[:9], loss[:9])


def test_isoflop_warns_when_the_optimal_model_shrinks_with_compute():
    """A hypothesis find: a coarse grid (4 sizes a factor 4 apart) whose minima drift towards smaller models as the
    budget grows. Approach 2 gives N_opt ~ C^-0.63; the fit says the law is not to be used."""
    n = np.tile([1e6, 4e6, 1.6e7, 6.4e7], 4)
    c = np.repeat([1.2e14, 4.8e14, 1.92e15, 7.68e15], 4)
    loss = [7.0, 6.06126, 5.59612, 5.29877, 5.08517, 4.92095, 4.61464, 4.67943,
            4.58641, 4.50594, 4.28309, 4.37255, 4.31626, 4.26533, 4.21893, 4.31240]
    with pytest.warns(UserWarning, match=r"N_opt ~ C\^-0.6.*model size would shrink.*do not use this law"):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="isoFLOP budget .* skipped")  # its smallest budget: said apart
            out = fit_isoflop(n, c / (6 * n), c, loss, n_boot=100, approach3=False)
    assert out["params_law"]["exponent"] < 0


def test_approach3_coefficients_are_the_non_negative_least_squares_solution():
    """A hypothesis find: on these runs every cell of the exponent grid has an unconstrained (E, A, B) with a
    negative coefficient on some bootstrap resamples, and the search returned E = -559 (interval down to -346).
    The coefficients must be the exact non-negative least-squares solution (scipy's NNLS at the same exponents),
    and no resample negative."""
    from batchlaw.fit.varpro import fit_chinchilla_vp

    n = np.tile([1e6, 4e6, 1.6e7, 6.4e7], 4)
    d = np.array([2e7, 2e7, 4e7, 2e7] + [8e7] * 4 + [3.2e8] * 4 + [1.28e9] * 4)
    loss = np.array([7.0, 6.06126, 5.59612, 3.24486, 3.24125, 3.23769, 3.15704, 3.23071,
                     3.22728, 3.22389, 3.14426, 3.21723, 3.21396, 3.21073, 3.20753, 3.27965])
    fit = fit_chinchilla_vp(n, d, loss, n_boot=100, seed=0)
    for k in ("E", "A", "B"):
        assert fit["boot"][k].min() >= 0 and fit["ci"][k][0] >= 0, k
    # the same weighted problem (relative errors), columns scaled to 1 for NNLS's conditioning
    X = np.column_stack([np.ones_like(n), n ** -fit["alpha"], d ** -fit["beta"]]) / loss[:, None]
    norms = np.linalg.norm(X, axis=0)
    coef, resid = optimize.nnls(X / norms, np.ones_like(loss))
    ours = X @ [fit["E"], fit["A"], fit["B"]] - 1
    assert np.sum(ours ** 2) == pytest.approx(resid ** 2, rel=1e-6, abs=1e-12)
    assert [fit["E"], fit["A"], fit["B"]] == pytest.approx(coef / norms, rel=1e-4, abs=1e-6)


# ------------------------------------------------------------------ power laws
def test_power_law_recovers_exponents_within_intervals():
    hits, seeds = np.zeros(2), 40
    n = np.repeat(np.geomspace(1e7, 1e9, 5), 5)
    d = np.tile(np.geomspace(1e9, 1e11, 5), 5)
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        y = 1.79 * n**-0.713 * d**0.307 * np.exp(0.05 * rng.standard_normal(n.size))
        fit = fit_power_law(y, inputs={"params": n, "tokens": d}, n_boot=300, seed=seed)
        hits += [fit.ci["exp_params"][0] <= -0.713 <= fit.ci["exp_params"][1],
                 fit.ci["exp_tokens"][0] <= 0.307 <= fit.ci["exp_tokens"][1]]
    print(hits / seeds)
    assert np.all(hits / seeds >= 0.85)


def test_power_law_refuses_a_constant_column_by_name():
    """One model size for every run: its exponent trades against the coefficient. Before the
    check the fit gave params^-0.21 with a 95% CI of -0.219 to -0.197 (a confident wrong answer)."""
    rng = np.random.default_rng(0)
    d = np.geomspace(1e9, 1e11, 6)
    y = 0.02 * d**0.45 * np.exp(0.05 * rng.standard_normal(6))
    with pytest.raises(InsufficientDataError, match=r"Column 'params' is constant \(1e\+08 in every row\)"):
        fit_power_law(y, inputs={"tokens": d, "params": np.full(6, 1e8)}, n_boot=50)
    with pytest.raises(InsufficientDataError, match="'params' is constant .*a ratio of 1.002"):
        fit_power_law(y, inputs={"tokens": d, "params": 1e8 * (1 + 0.002 * (np.arange(6) % 2))}, n_boot=0)


@pytest.mark.parametrize("columns, named, relation", [
    (lambda n, d: {"params": n, "tokens": 20 * n}, "'params' and 'tokens'", "= 20 \\* params\\^1 in every row"),
    (lambda n, d: {"params": n, "tokens": d, "compute": 6 * n * d}, "'params', 'tokens' and 'compute'", "in every row"),
    (lambda n, d: {"params": n, "tokens": 20 * n * np.exp(0.005 * np.sin(np.arange(n.size)))}, "'params' and 'tokens'",
     "rms scatter"),
])
def test_power_law_refuses_collinear_columns_by_name(columns, named, relation):
    """Inputs that move together (tokens = 20 x params on a Chinchilla frontier; compute = 6 N D
    beside N and D): only a combination of their exponents is determined. Before the check,
    tokens = 20 params gave exponents 1.349 and -0.917 (truth 0.45 and 0) with intervals 0.07 wide."""
    n = np.geomspace(1e8, 1e10, 8)
    d = np.geomspace(1e9, 1e11, 8)[[3, 0, 6, 1, 7, 2, 5, 4]]
    inputs = columns(n, d)
    y = 0.02 * np.prod([v ** 0.2 for v in inputs.values()], axis=0)
    with pytest.raises(InsufficientDataError, match=f"Columns {named} move together: .*{relation}"):
        fit_power_law(y, inputs=inputs, n_boot=50)


def test_power_law_with_inputs_that_vary_together_but_not_in_lockstep_still_fits():
    """The check refuses only what the data cannot tell apart: tokens = 20 x params with 10% scatter
    (condition number about 30) is fitted, and the intervals hold the truth."""
    rng = np.random.default_rng(3)
    n = np.geomspace(1e8, 1e10, 16)
    d = 20 * n * np.exp(0.1 * rng.standard_normal(16))
    y = 0.02 * d**0.45 * n**0.1 * np.exp(0.02 * rng.standard_normal(16))
    fit = fit_power_law(y, inputs={"tokens": d, "params": n}, n_boot=300)
    for k, truth in (("exp_tokens", 0.45), ("exp_params", 0.1)):
        lo, hi = fit.ci[k]
        assert lo <= truth <= hi, (k, lo, hi)


def test_power_law_agrees_with_curve_fit():
    x = np.geomspace(1e3, 1e8, 12)
    y = 0.3 * x**0.33 * np.exp(0.02 * np.sin(np.arange(12)))
    fit = fit_power_law(y, inputs={"x": x}, n_boot=0, delta=10.0)  # large delta: least squares
    (lc, a), _ = optimize.curve_fit(lambda t, lc, a: lc + a * np.log(t), x, np.log(y), p0=[0.0, 0.3])
    assert fit.values["coef"] == pytest.approx(math.exp(lc), rel=1e-4) and fit.values["exp_x"] == pytest.approx(a, rel=1e-5)


@settings(max_examples=25, deadline=None)
@given(kx=st.floats(1e-3, 1e3), sy=st.floats(1e-3, 1e3))
def test_power_law_unit_invariance(kx, sy):
    """Changing units of x (by kx) and y (by sy) rescales the coefficient, never the exponents."""
    x = np.geomspace(10, 1e6, 10)
    y = 2.0 * x**-0.4 * np.exp(0.03 * np.cos(np.arange(10)))
    base = fit_power_law(y, inputs={"x": x}, n_boot=0)
    moved = fit_power_law(sy * y, inputs={"x": kx * x}, n_boot=0)
    a = base.values["exp_x"]
    assert moved.values["exp_x"] == pytest.approx(a, abs=1e-6)
    assert moved.values["coef"] == pytest.approx(base.values["coef"] * sy * kx**-a, rel=1e-5)


# ------------------------------------------------------------------ hyperparameters
def _grid_runs(rng, noise=0.002):
    rows = []
    for n in (1e8, 3e8, 1e9):
        for d in (2e9, 8e9, 3.2e10):
            opt = step_law(n, d)
            for lr in opt["lr"] * 1.3 * np.geomspace(0.25, 4, 5):  # the optimum falls between grid points
                for b in opt["batch_tokens"] / 1.3 * np.geomspace(0.25, 4, 5):
                    loss = (2.0 + 0.05 * math.log(lr / opt["lr"]) ** 2 + 0.03 * math.log(b / opt["batch_tokens"]) ** 2
                            + noise * rng.standard_normal())
                    rows.append((n, d, lr, b, loss))
    return map(np.array, zip(*rows))


def test_hparam_laws_recover_step_law():
    n, d, lr, b, loss = _grid_runs(np.random.default_rng(0))
    optima = find_optima(n, d, lr, b, loss)
    assert len(optima) == 9 and all(o["method"] == "local" for o in optima)
    laws = fit_hparam_laws(optima, n_boot=300)
    assert laws["lr_law"]["exp_params"] == pytest.approx(STEP_LAW["lr_exp_params"], abs=0.03)
    assert laws["lr_law"]["exp_tokens"] == pytest.approx(STEP_LAW["lr_exp_tokens"], abs=0.03)
    assert laws["batch_law"]["exp_tokens"] == pytest.approx(STEP_LAW["batch_exp_tokens"], abs=0.03)
    ci = laws["lr_law"]["ci"]["exp_params"]
    assert ci[0] <= STEP_LAW["lr_exp_params"] <= ci[1]
    # the raw argmin sits on the grid, so it is coarser than the local fit
    raw_err = np.median([abs(math.log(o["raw"]["lr"] / step_law(o["params"], o["tokens"])["lr"])) for o in optima])
    sm_err = np.median([abs(math.log(o["lr"] / step_law(o["params"], o["tokens"])["lr"])) for o in optima])
    assert sm_err <= raw_err + 1e-9


def test_hparam_laws_need_enough_groups():
    n, d, lr, b, loss = _grid_runs(np.random.default_rng(0))
    optima = find_optima(n, d, lr, b, loss)
    with pytest.raises(InsufficientDataError, match="at least 4"):
        fit_hparam_laws(optima[:3])
    with pytest.raises(InsufficientDataError, match="2 model sizes"):
        fit_hparam_laws([o for o in optima if np.isclose(o["params"], 1e8)] * 2)


@pytest.mark.parametrize("n_layer,d_model,lr,batch_seqs,rel_batch", [(30, 4096, 4.2e-4, 2304, 0.05),
                                                                    (95, 8192, 3.2e-4, 4608, 0.12)])
def test_deepseek_law_reproduces_the_7b_and_67b_settings(n_layer, d_model, lr, batch_seqs, rel_batch):
    """DeepSeek LLM (arXiv:2401.02954): compute C = M D with M = 72 n_layer d^2 + 12 n_layer d l_seq
    non-embedding FLOPs per token, 2T tokens, 4096-token sequences; the 7B (30 x 4096) and 67B
    (95 x 8192) were trained with lr 4.2e-4 / 3.2e-4 and 2304 / 4608 sequences per batch. The law
    gives lr within 3% and batch within 3% (7B) and 10% (67B, whose batch was rounded down)."""
    m = 72 * n_layer * d_model**2 + 12 * n_layer * d_model * 4096
    h = deepseek_hparams(m * 2e12)
    assert h["lr"] == pytest.approx(lr, rel=0.03)
    assert h["batch_tokens"] / 4096 == pytest.approx(batch_seqs, rel=rel_batch)


# ------------------------------------------------------------------ learning curves
def test_learning_curve_fit_prediction_and_backtest():
    t = np.arange(100, 10001, 100, dtype=float)
    rng = np.random.default_rng(0)
    loss = (2.0 + 5.0 * t**-0.3) * np.exp(0.003 * rng.standard_normal(t.size))
    fit = fit_curve(t, loss, n_boot=300)
    assert fit.ci["y_inf"][0] <= 2.0 <= fit.ci["y_inf"][1]
    assert fit.ci["alpha"][0] <= 0.3 <= fit.ci["alpha"][1]
    pred = predict_curve(fit, 20000, steps=t, loss=loss)
    truth = 2.0 + 5.0 * 20000**-0.3
    assert pred["interval"][0] <= truth <= pred["interval"][1]
    inside = 0
    for seed in range(30):
        noisy = (2.0 + 5.0 * t**-0.3) * np.exp(0.003 * np.random.default_rng(seed).standard_normal(t.size))
        bt = backtest_curve(t, noisy, fraction=0.5, n_boot=100)
        assert abs(bt["rel_error"]) < 0.015
        inside += bt["inside"]
    assert inside / 30 >= 0.85
    with pytest.raises(ValueError, match="positive"):
        fit_curve([0, 1, 2, 3, 4], [5, 4, 3, 2.5, 2.2])


def test_compute_optimal_refuses_a_degenerate_law():
    """A law whose loss does not fall with N or D has no allocation: a clear error, not a
    ZeroDivisionError or OverflowError."""
    for p in (dict(EPOCH_2024, alpha=0.0, beta=0.0), dict(EPOCH_2024, A=0.0), dict(EPOCH_2024, alpha=1e-9)):
        with pytest.raises(ValueError, match="alpha|overflows"):
            compute_optimal(1e21, p)


# ------------------------------------------------------------------ profile likelihood of a prediction
def _line_law():
    from batchlaw.fit.engine import Law

    def predict(theta, X):
        return theta[:, :1] + theta[:, 1:2] * X[:, 0][None, :]

    def jac(theta, X):
        return np.broadcast_to(np.stack([np.ones(X.shape[0]), X[:, 0]], -1), (theta.shape[0], X.shape[0], 2)).copy()

    return Law("line", ("a", "b"), predict, jac, lambda th: {"a": th[:, 0], "b": th[:, 1]}, ((None, None),) * 2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_profile_prediction_equals_the_t_interval_of_a_straight_line(seed):
    """For a straight line fitted by least squares (noise far inside the Huber threshold, so the
    engine's loss is the squared error), the profile-likelihood interval of a prediction with the
    critical value ``t^2`` is the textbook t interval of the mean at ``x0``:
    ``t s sqrt(x0' (X'X)^-1 x0)``, on both sides, even far outside the data, with the default
    shifts (the first, 0.005, is far beyond the edge: refits there leave the squared-error part of
    the Huber loss; measuring their squared errors instead put the edge 10% short)."""
    from scipy import stats

    from batchlaw.fit.engine import fit_law, profile_prediction

    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(0, 1, 25))
    logy = 0.3 - 0.7 * x + 2e-5 * rng.standard_normal(x.size)
    law, X = _line_law(), x[:, None]
    fit = fit_law(law, X, logy, starts=np.zeros((1, 2)), n_boot=0)
    D = np.column_stack([np.ones_like(x), x])
    resid = logy - D @ np.linalg.lstsq(D, logy, rcond=None)[0]
    s2, t = resid @ resid / (x.size - 2), stats.t.ppf(0.975, x.size - 2)
    for x0 in (0.5, 3.0):
        half = t * math.sqrt(s2 * np.array([1, x0]) @ np.linalg.inv(D.T @ D) @ np.array([1, x0]))
        below, above = profile_prediction(law, X, logy, fit.theta, np.array([[x0]]), critical=t * t)
        assert below == pytest.approx(half, rel=0.02) and above == pytest.approx(half, rel=0.02), (x0, half)


def test_profile_prediction_reports_an_unbounded_side_as_the_largest_shift():
    """With a critical value no refit can exceed, every shift fits: the side is the largest tried, not 0."""
    from batchlaw.fit.engine import fit_law, profile_prediction

    x = np.linspace(0, 1, 10)
    law, X = _line_law(), x[:, None]
    logy = 0.1 * x + 0.01 * np.random.default_rng(0).standard_normal(x.size)
    fit = fit_law(law, X, logy, starts=np.zeros((1, 2)), n_boot=0)
    below, above = profile_prediction(law, X, logy, fit.theta, np.array([[2.0]]), critical=1e9, shifts=(0.01, 0.1))
    assert below == pytest.approx(0.1, rel=1e-3) and above == pytest.approx(0.1, rel=1e-3)


def _noisy_line(seed, sigma, n=25, outlier=0.0):
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(0, 1, n))
    logy = 0.3 - 0.7 * x + sigma * rng.standard_normal(n)
    logy[n // 2] += outlier
    return x[:, None], logy


def test_huber_dispersion_is_the_variance_or_the_absolute_deviations_factor():
    """``E[psi^2] / E[psi']`` for Gaussian residuals: their variance where the threshold is far
    above them (squared error), ``delta sigma sqrt(pi / 2)`` where it is far below (absolute
    deviations: ``delta^2 / (2 delta f(0))``), and the Gaussian integrals in between."""
    from scipy import stats

    from batchlaw.fit.engine import huber_dispersion

    r = 0.01 * np.random.default_rng(0).standard_normal(200_000)
    assert huber_dispersion(r, 1.0, 2) == pytest.approx(1e-4, rel=0.01)
    assert huber_dispersion(r, 1e-5, 2) == pytest.approx(1e-5 * 0.01 * math.sqrt(math.pi / 2), rel=0.01)
    k = 1.0  # delta = sigma
    psi2 = 1e-4 * (2 * stats.norm.cdf(k) - 1 - 2 * k * stats.norm.pdf(k)) + 2 * 1e-4 * stats.norm.sf(k)
    assert huber_dispersion(r, 0.01, 2) == pytest.approx(psi2 / (2 * stats.norm.cdf(k) - 1), rel=0.01)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_profile_prediction_of_a_robust_fit_is_robust_to_an_outlier(seed):
    """One point 20 noise standard deviations off barely moves a Huber fit, and so barely moves the
    profile interval of its prediction, which profiles that same Huber loss: each side within a
    factor 1.5 of the interval without the outlier (measured: 0.7 to 1.05 on these seeds; the
    profile of a loss this close to absolute deviations is piecewise, so not closer). Measuring
    the refits' squared errors, the outlier dominated them and the interval came out 3 to 5
    times wider."""
    from scipy import stats

    from batchlaw.fit.engine import fit_law, profile_prediction

    law, t = _line_law(), stats.t.ppf(0.975, 23)
    sides = []
    for outlier in (0.0, 0.2):
        X, logy = _noisy_line(seed, 0.01, outlier=outlier)
        fit = fit_law(law, X, logy, starts=np.zeros((1, 2)), n_boot=0)
        sides.append(profile_prediction(law, X, logy, fit.theta, np.array([[3.0]]), critical=t * t))
    (b0, a0), (b1, a1) = sides
    assert 1 / 1.5 < b1 / b0 < 1.5 and 1 / 1.5 < a1 / a0 < 1.5, sides


def test_profile_prediction_covers_a_line_and_a_power_law():
    """Coverage of the 95% profile interval of the law's value at ``x0``, simulated with Gaussian
    noise: a line with noise ten times the Huber threshold (the fit is close to least absolute
    deviations), predicted at x0 = 3 (three data widths out), and the power law
    ``L = 2 + 5 t^-0.3`` fitted on t in [100, 2000] and predicted at t = 8,000 with 0.5% noise.
    bench/profile_coverage.py measures more seeds (docs/fits.md)."""
    from scipy import stats

    from batchlaw.fit.engine import fit_law, profile_prediction
    from batchlaw.fit.laws import saturating_law

    law, t, inside = _line_law(), stats.t.ppf(0.975, 23), 0
    for seed in range(12):
        X, logy = _noisy_line(seed, 0.01)
        fit = fit_law(law, X, logy, starts=np.zeros((1, 2)), n_boot=0)
        below, above = profile_prediction(law, X, logy, fit.theta, np.array([[3.0]]), critical=t * t)
        lp = fit.theta[0] + 3.0 * fit.theta[1]
        inside += lp - below <= 0.3 - 0.7 * 3.0 <= lp + above
    assert inside >= 11, inside

    law, t, inside = saturating_law(), stats.t.ppf(0.975, 27), 0
    steps = np.geomspace(100, 2000, 30)
    X, at = np.log(steps)[:, None], np.array([[math.log(8000.0)]])
    truth = math.log(2.0 + 5.0 * 8000.0**-0.3)
    for seed in range(6):
        logy = np.log(2.0 + 5.0 * steps**-0.3) + 0.005 * np.random.default_rng(seed).standard_normal(steps.size)
        starts = np.array([(math.log(f * math.exp(logy.min())), logy.min() + al * X[:, 0].mean(), al)
                           for f in (0.2, 0.5, 0.8, 0.95) for al in (0.2, 0.5, 1.0)])
        fit = fit_law(law, X, logy, starts=starts, n_boot=0)
        below, above = profile_prediction(law, X, logy, fit.theta, at, critical=t * t, starts=starts)
        lp = float(law.predict_log(fit.theta[None, :], at)[0, 0])
        inside += lp - below <= truth <= lp + above
    assert inside >= 5, inside


def test_profile_prediction_refuses_a_bad_critical_value():
    from batchlaw.fit.engine import profile_prediction

    law, X = _line_law(), np.linspace(0, 1, 5)[:, None]
    with pytest.raises(ValueError, match="'critical'.*Got -1"):
        profile_prediction(law, X, 0.1 * X[:, 0], np.zeros(2), np.array([[2.0]]), critical=-1)
