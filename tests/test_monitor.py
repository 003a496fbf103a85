"""GradientNoiseMonitor against known answers, on tiny real models."""

import math

import numpy as np
import pytest
import torch

from batchlaw.errors import InsufficientDataError
from batchlaw.noise import GradientNoiseMonitor, split_backward
from batchlaw.workloads import ByteMLP, LinearRegression


def _fixed_weight_steps(workload, model, monitor, gen, steps, b, k, divide=True, scaler=None, autocast=None):
    """Accumulate k micro-batches per step at fixed weights (no optimizer step)."""
    for _ in range(steps):
        for _ in range(k):
            batch = workload.sample_batch(b, gen)
            if autocast is not None:
                with torch.autocast("cpu", dtype=autocast):
                    loss = workload.loss(model, batch)
            else:
                loss = workload.loss(model, batch)
            loss = loss / k if divide else loss
            (scaler.scale(loss) if scaler is not None else loss).backward()
        monitor.step()
        model.zero_grad(set_to_none=True)


# ---------------------------------------------------------------- known answers
def test_linreg_matches_analytic_value_and_interval_covers_it():
    """At fixed weights, B_simple = (d+1) + d sigma^2/|delta|^2 (linreg docstring)."""
    wl = LinearRegression(dim=16, noise_std=1.0, init_distance=1.0)
    model = wl.make_model(0)
    truth = wl.b_simple(model)  # 33 examples
    assert truth == pytest.approx(33.0)
    seeds, covered, errors = 30, 0, []
    for seed in range(seeds):
        monitor = GradientNoiseMonitor(model, micro_batch_size=8)
        _fixed_weight_steps(wl, model, monitor, torch.Generator().manual_seed(seed), 400, 8, 4)
        est = monitor.estimate()
        monitor.remove()
        errors.append(est.b_simple / truth - 1)
        covered += est.ci[0] <= truth <= est.ci[1]
        assert est.unit == "examples" and est.n_steps == 400
    assert max(abs(e) for e in errors) < 0.10, errors
    assert covered / seeds >= 0.90


def test_linreg_absolute_g_sq_and_trace_with_either_loss_scaling():
    wl = LinearRegression(dim=8, noise_std=0.5, init_distance=1.5)
    model = wl.make_model(1)
    d_sq = wl.delta_sq(model)
    tr_true = 8 * (d_sq + 0.25) + d_sq
    for divide in (True, False):
        monitor = GradientNoiseMonitor(model, micro_batch_size=16, loss_divided_by_accumulation=divide)
        _fixed_weight_steps(wl, model, monitor, torch.Generator().manual_seed(2), 300, 16, 3, divide=divide)
        est = monitor.estimate()
        monitor.remove()
        assert est.g_sq == pytest.approx(d_sq, rel=0.1)
        assert est.trace_sigma == pytest.approx(tr_true, rel=0.05)


def _per_example_grads(model, loss_fn, xs, ys):
    grads = []
    for i in range(len(xs)):
        model.zero_grad()
        loss_fn(model, (xs[i : i + 1], ys[i : i + 1])).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]).clone())
    model.zero_grad(set_to_none=True)
    return torch.stack(grads).double()  # (N, P)


def test_real_mlp_matches_brute_force_per_example_gradients():
    """Finite data set of real text windows: per-example gradients give the exact B_simple of
    sampling with replacement; the monitor, sampling micro-batches with replacement, is within 10%."""
    wl = ByteMLP(context=4, embed=4, hidden=16)
    model = wl.make_model(0)
    xs, ys = wl.sample_batch(256, torch.Generator().manual_seed(0))
    g = _per_example_grads(model, wl.loss, xs, ys)  # (256, P)
    G = g.mean(0)
    trace = float((g - G).square().sum(1).mean())  # population covariance: with-replacement sampling
    exact = trace / float(G.square().sum())
    gen = torch.Generator().manual_seed(1)
    monitor = GradientNoiseMonitor(model, micro_batch_size=8)
    for _ in range(600):
        for _ in range(4):
            idx = torch.randint(0, 256, (8,), generator=gen)
            (wl.loss(model, (xs[idx], ys[idx])) / 4).backward()
        monitor.step()
        model.zero_grad(set_to_none=True)
    est = monitor.estimate()
    assert est.b_simple == pytest.approx(exact, rel=0.10)
    assert est.ci[0] <= exact <= est.ci[1]
    assert est.trace_sigma == pytest.approx(trace, rel=0.10)


# ---------------------------------------------------------------- training unchanged
def _train(with_monitor, scaler=False, steps=12, k=3):
    wl = ByteMLP(context=4, embed=8, hidden=32)
    torch.manual_seed(0)
    model = wl.make_model(0)
    opt = wl.make_optimizer(model, 3e-3)
    sc = torch.amp.GradScaler("cpu", init_scale=2.0**10) if scaler else None
    monitor = GradientNoiseMonitor(model, micro_batch_size=8, scaler=sc) if with_monitor else None
    gen = torch.Generator().manual_seed(3)
    for _ in range(steps):
        for _ in range(k):
            loss = wl.loss(model, wl.sample_batch(8, gen)) / k
            (sc.scale(loss) if sc else loss).backward()
        if monitor:
            monitor.step()
        if sc:
            sc.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if sc:
            sc.step(opt)
            sc.update()
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)
    return model, monitor


@pytest.mark.parametrize("scaler", [False, True])
def test_training_is_bit_for_bit_unchanged(scaler):
    plain, _ = _train(False, scaler)
    watched, monitor = _train(True, scaler)
    for a, b in zip(plain.parameters(), watched.parameters()):
        assert torch.equal(a, b)
    assert len(monitor.records) == 12 and monitor.records[0]["accumulation"] == 3


# ---------------------------------------------------------------- mixed precision
def test_grad_scaler_scale_is_divided_out():
    wl = LinearRegression(dim=8, noise_std=1.0, init_distance=1.0)
    model = wl.make_model(0)
    plain = GradientNoiseMonitor(model, micro_batch_size=8)
    _fixed_weight_steps(wl, model, plain, torch.Generator().manual_seed(0), 20, 8, 4)
    plain.remove()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    scaled = GradientNoiseMonitor(model, micro_batch_size=8, scaler=scaler)
    _fixed_weight_steps(wl, model, scaled, torch.Generator().manual_seed(0), 20, 8, 4, scaler=scaler)
    for a, b in zip(plain.records, scaled.records):
        assert b["small_sq"] == pytest.approx(a["small_sq"], rel=1e-5)
        assert b["big_sq"] == pytest.approx(a["big_sq"], rel=1e-5)


def test_non_finite_steps_are_skipped_and_counted():
    wl = LinearRegression(dim=8, noise_std=1.0, init_distance=1.0)
    model = wl.make_model(0)
    monitor = GradientNoiseMonitor(model, micro_batch_size=8)
    gen = torch.Generator().manual_seed(0)
    _fixed_weight_steps(wl, model, monitor, gen, 15, 8, 2)
    for _ in range(2):  # an overflowing step
        (wl.loss(model, wl.sample_batch(8, gen)) * math.inf).backward()
    monitor.step()
    model.zero_grad(set_to_none=True)
    _fixed_weight_steps(wl, model, monitor, gen, 15, 8, 2)
    assert monitor.skipped_steps == 1
    assert [r["step"] for r in monitor.records if r["skipped"]] == [15]
    est = monitor.estimate()
    assert est.n_steps == 30 and math.isfinite(est.b_simple)


@pytest.mark.parametrize("mode", ["autocast", "bf16_params"])
def test_bf16(mode):
    wl = LinearRegression(dim=16, noise_std=1.0, init_distance=1.0)
    model = wl.make_model(0)
    truth = wl.b_simple(model)
    if mode == "bf16_params":
        model = model.to(torch.bfloat16)
        orig_loss = wl.loss
        wl.loss = lambda m, batch: orig_loss(m, (batch[0].bfloat16(), batch[1].bfloat16())).float()
    monitor = GradientNoiseMonitor(model, micro_batch_size=8)
    autocast = torch.bfloat16 if mode == "autocast" else None
    _fixed_weight_steps(wl, model, monitor, torch.Generator().manual_seed(0), 300, 8, 4, autocast=autocast)
    est = monitor.estimate()
    assert est.b_simple == pytest.approx(truth, rel=0.15)


# ---------------------------------------------------------------- modes
def test_split_backward_gives_the_same_gradient_and_an_estimate():
    wl = LinearRegression(dim=16, noise_std=1.0, init_distance=1.0)
    model = wl.make_model(0)
    x, y = wl.sample_batch(32, torch.Generator().manual_seed(0))
    wl.loss(model, (x, y)).backward()
    full = model.weight.grad.clone()
    model.zero_grad(set_to_none=True)
    monitor = GradientNoiseMonitor(model, micro_batch_size=8)
    split_backward(lambda mb: wl.loss(model, mb), (x, y), chunks=4)
    torch.testing.assert_close(model.weight.grad, full)
    monitor.step()
    assert monitor.records[-1]["accumulation"] == 4
    with pytest.raises(ValueError, match="does not split"):
        split_backward(lambda mb: wl.loss(model, mb), (x, y), chunks=5)


def test_single_micro_batch_is_refused_with_advice():
    wl = LinearRegression()
    model = wl.make_model(0)
    monitor = GradientNoiseMonitor(model, micro_batch_size=8)
    _fixed_weight_steps(wl, model, monitor, torch.Generator().manual_seed(0), 20, 8, 1)
    with pytest.raises(InsufficientDataError, match="split_backward"):
        monitor.estimate()


def test_every_nth_step():
    wl = LinearRegression()
    model = wl.make_model(0)
    monitor = GradientNoiseMonitor(model, micro_batch_size=8, every=3)
    _fixed_weight_steps(wl, model, monitor, torch.Generator().manual_seed(0), 10, 8, 2)
    assert [r["step"] for r in monitor.records] == [0, 3, 6, 9]
    assert monitor.steps == 10


def test_tokens_unit():
    wl = LinearRegression(dim=16, noise_std=1.0, init_distance=1.0)
    model = wl.make_model(0)
    ex = GradientNoiseMonitor(model, micro_batch_size=8)
    _fixed_weight_steps(wl, model, ex, torch.Generator().manual_seed(0), 50, 8, 4)
    ex.remove()
    tok = GradientNoiseMonitor(model, micro_batch_size=8, tokens_per_example=128)
    _fixed_weight_steps(wl, model, tok, torch.Generator().manual_seed(0), 50, 8, 4)
    assert tok.estimate().unit == "tokens"
    assert tok.estimate().b_simple == pytest.approx(128 * ex.estimate().b_simple, rel=1e-6)


def test_state_dict_resume_continues_the_same_measurement():
    wl = LinearRegression()
    model = wl.make_model(0)
    whole = GradientNoiseMonitor(model, micro_batch_size=8)
    _fixed_weight_steps(wl, model, whole, torch.Generator().manual_seed(0), 40, 8, 2)
    whole.remove()
    gen = torch.Generator().manual_seed(0)
    first = GradientNoiseMonitor(model, micro_batch_size=8)
    _fixed_weight_steps(wl, model, first, gen, 25, 8, 2)
    state = first.state_dict()
    first.remove()
    second = GradientNoiseMonitor(model, micro_batch_size=8)
    second.load_state_dict(state)
    _fixed_weight_steps(wl, model, second, gen, 15, 8, 2)
    assert second.records == whole.records
    assert second.estimate() == whole.estimate()


# ---------------------------------------------------------------- bad input
def test_bad_arguments_are_named():
    model = torch.nn.Linear(2, 1)
    with pytest.raises(ValueError, match=r"'micro_batch_size' parameter must be a positive integer\. Got -3"):
        GradientNoiseMonitor(model, micro_batch_size=-3)
    with pytest.raises(ValueError, match="'every'"):
        GradientNoiseMonitor(model, every=0)
    with pytest.raises(ValueError, match="no parameters with requires_grad"):
        GradientNoiseMonitor(torch.nn.ReLU())
    frozen = torch.nn.Linear(2, 1).requires_grad_(False)
    with pytest.raises(ValueError, match="no parameters"):
        GradientNoiseMonitor(frozen)


def test_k_that_changes_mid_step_is_an_error():
    a, b = torch.nn.Linear(3, 3), torch.nn.Linear(3, 1)
    model = torch.nn.Sequential(a, b)
    monitor = GradientNoiseMonitor(model, micro_batch_size=4)
    x = torch.randn(4, 3)
    model(x).sum().backward()
    a(x).sum().backward()  # second micro-batch reaches only the first layer
    with pytest.raises(ValueError, match="changed mid-step"):
        monitor.step()


def test_step_without_backward_and_without_batch_size():
    model = torch.nn.Linear(3, 1)
    monitor = GradientNoiseMonitor(model)
    with pytest.raises(RuntimeError, match="no gradient"):
        monitor.step()
    model(torch.randn(4, 3)).sum().backward()
    model(torch.randn(4, 3)).sum().backward()
    with pytest.raises(ValueError, match="micro-batch size is unknown"):
        monitor.step()


def test_removed_monitor_sees_nothing():
    model = torch.nn.Linear(3, 1)
    monitor = GradientNoiseMonitor(model, micro_batch_size=4)
    monitor.remove()
    model(torch.randn(4, 3)).sum().backward()
    with pytest.raises(RuntimeError, match="no gradient"):
        monitor.step()


def test_small_buckets_give_the_same_numbers():
    wl = ByteMLP(context=4, embed=8, hidden=32)
    model = wl.make_model(0)
    out = []
    for bucket in (64 * 2**20, 1):  # one bucket per backward vs. a flush per parameter
        monitor = GradientNoiseMonitor(model, micro_batch_size=8, bucket_bytes=bucket)
        _fixed_weight_steps(wl, model, monitor, torch.Generator().manual_seed(0), 5, 8, 3)
        monitor.remove()
        out.append(np.array([[r["small_sq"], r["big_sq"]] for r in monitor.records]))
    np.testing.assert_allclose(out[0], out[1], rtol=1e-6)
