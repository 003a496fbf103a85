"""Workloads: the analytic noise scale of linreg checked by brute force; the real-text corpus."""

import numpy as np
import pytest
import torch

from batchlaw.workloads import ByteMLP, LinearRegression, get_workload, linreg_b_simple
from batchlaw.workloads.corpus import STDLIB_MODULES, load_stdlib_corpus


def test_linreg_formula_against_monte_carlo_per_example_gradients():
    """Independent of the monitor: per-example gradients r x of 400k examples."""
    wl = LinearRegression(dim=6, noise_std=0.7, init_distance=0.8)
    model = wl.make_model(3)
    x, y = wl.sample_batch(400_000, torch.Generator().manual_seed(0))
    r = (model(x).squeeze(-1) - y).detach().double()
    g = r[:, None] * x.double()  # (N, d) per-example gradients
    G = g.mean(0)
    trace = float((g - G).square().sum(1).mean())
    delta_sq = wl.delta_sq(model)
    assert float(G.square().sum()) == pytest.approx(delta_sq, rel=0.02)
    assert trace == pytest.approx(6 * (delta_sq + 0.49) + delta_sq, rel=0.01)
    assert trace / float(G.square().sum()) == pytest.approx(wl.b_simple(model), rel=0.03)


def test_linreg_b_simple_limits():
    assert linreg_b_simple(1e12, 10, 1.0) == pytest.approx(11.0)
    assert linreg_b_simple(0.0, 10, 1.0) == float("inf")


def test_linreg_model_starts_at_requested_distance():
    wl = LinearRegression(dim=10, init_distance=2.5)
    assert wl.delta_sq(wl.make_model(7)) == pytest.approx(6.25, rel=1e-5)
    assert torch.equal(wl.make_model(7).weight, wl.make_model(7).weight)


def test_corpus_is_real_deterministic_and_split():
    corpus = load_stdlib_corpus()
    assert corpus.n_bytes > 500_000
    assert len(corpus.files) >= len(STDLIB_MODULES) - 3
    assert corpus.heldout.size == pytest.approx(0.1 * corpus.n_bytes, rel=0.01)
    text = corpus.train[:20000].tobytes().decode("utf-8", errors="replace")
    assert "# file: argparse" in text and "import" in text
    assert load_stdlib_corpus.__wrapped__().sha256 == corpus.sha256


def test_bytemlp_learns_on_held_out_text():
    wl = ByteMLP()
    model = wl.make_model(0)
    opt = wl.make_optimizer(model, wl.default_lr)
    gen = torch.Generator().manual_seed(0)
    before = wl.eval_loss(model)
    for _ in range(150):
        wl.loss(model, wl.sample_batch(64, gen)).backward()
        opt.step()
        opt.zero_grad()
    after = wl.eval_loss(model)
    assert before == pytest.approx(np.log(256), rel=0.05)
    assert after < 3.0


def test_get_workload_lists_names():
    with pytest.raises(ValueError, match="'linreg', 'bytemlp'"):
        get_workload("mnist")
    with pytest.raises(ValueError, match="'dim'"):
        LinearRegression(dim=0)


def test_ill_conditioned_linreg_formula_against_monte_carlo():
    wl = LinearRegression(dim=6, noise_std=0.5, init_distance=1.0, condition=50.0)
    model = wl.make_model(1)
    x, y = wl.sample_batch(400_000, torch.Generator().manual_seed(0))
    r = (model(x).squeeze(-1) - y).detach().double()
    g = r[:, None] * x.double()
    G = g.mean(0)
    trace = float((g - G).square().sum(1).mean())
    assert trace / float(G.square().sum()) == pytest.approx(wl.b_simple(model), rel=0.03)
    assert float(0.5 * r.square().mean()) == pytest.approx(wl.eval_loss(model), rel=0.01)
