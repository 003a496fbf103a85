"""GradientNoiseMonitor against known answers, on tiny real models."""

import math
import time
import warnings

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


def _timed_steps(model, monitor, steps, work_s=0.0, k=2):
    """``steps`` optimizer steps of a linear model at fixed weights, each with ``work_s`` seconds of other work
    (the rest of a training step the monitor does not see)."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        for _ in range(k):
            model(torch.randn(8, 16, generator=gen)).pow(2).mean().backward()
        if work_s:
            time.sleep(work_s)
        monitor.step()
        model.zero_grad(set_to_none=True)


def test_every_auto_picks_a_larger_cadence_when_its_hooks_are_slow(monkeypatch):
    """A monitor whose hooks cost about 4 ms a measured step (a sleep in its norms, 2 micro-batches + the big
    batch) against ~20 ms steps: every step would cost ~20%, so with the 1% target it measures every ~25th step
    (between 10 and 60 on a loaded machine), says so, and what that does to the interval width."""
    import batchlaw.noise.monitor as monitor_module

    real = monitor_module.norms

    def slow(tensors):
        time.sleep(0.0013)
        return real(tensors)

    monkeypatch.setattr(monitor_module, "norms", slow)
    model = torch.nn.Linear(16, 1)
    monitor = GradientNoiseMonitor(model, micro_batch_size=8, every="auto")
    _timed_steps(model, monitor, 200, work_s=0.02)
    c = monitor.cadence
    assert c["auto"] and c["decided_at_step"] == 5 and 10 <= c["every"] <= 60, c
    assert c["measured_step_cost_s"] > 0.003 and c["skipped_step_cost_s"] == 0.0  # every step measured until then
    assert c["expected_overhead"] <= 0.01 and c["interval_width_factor"] == pytest.approx(math.sqrt(c["every"]))
    steps = [r["step"] for r in monitor.records]
    assert steps[:6] == list(range(6)) and steps[6:] == list(range(5 + c["every"], 200, c["every"]))


def test_every_auto_keeps_measuring_every_step_when_cheap():
    """A tiny linear model's monitor (about 0.3-1 ms a step, most of it the step's own statistics) against 30 ms
    steps and a 20% target: well under it, so every step stays measured (decided again after 50 more measured
    steps)."""
    model = torch.nn.Linear(16, 1)
    monitor = GradientNoiseMonitor(model, micro_batch_size=8, every="auto", overhead_target=0.2)
    _timed_steps(model, monitor, 60, work_s=0.03)
    c = monitor.cadence
    assert c["every"] == 1 and c["decided_at_step"] == 55 and c["expected_overhead"] < 0.2, c
    assert len(monitor.records) == 60
    fixed = GradientNoiseMonitor(torch.nn.Linear(16, 1), micro_batch_size=8)
    assert fixed.cadence == {"every": 1, "auto": False}


def test_every_auto_cadence_survives_a_checkpoint(monkeypatch):
    """The agreed cadence and the next measured step travel in state_dict: a resumed monitor goes on measuring
    the same steps."""
    import batchlaw.noise.monitor as monitor_module

    real = monitor_module.norms
    monkeypatch.setattr(monitor_module, "norms", lambda t: (time.sleep(0.0013), real(t))[1])
    model = torch.nn.Linear(16, 1)
    first = GradientNoiseMonitor(model, micro_batch_size=8, every="auto")
    _timed_steps(model, first, 30, work_s=0.02)
    state = first.state_dict()
    every, last = first.cadence["every"], first.records[-1]["step"]
    first.remove()
    second = GradientNoiseMonitor(model, micro_batch_size=8, every="auto")
    second.load_state_dict(state)
    assert second.cadence["every"] == every > 1
    _timed_steps(model, second, 3 * every)
    assert [r["step"] for r in second.records][-3:] == [last + every, last + 2 * every, last + 3 * every]


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
    with pytest.raises(ValueError, match="'every' parameter must be a positive integer or 'auto'. Got 'sometimes'"):
        GradientNoiseMonitor(model, every="sometimes")
    with pytest.raises(ValueError, match="'overhead_target'"):
        GradientNoiseMonitor(model, every="auto", overhead_target=0)
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


# ---------------------------------------------------------------- misuse: a clear error, never a wrong number
def _linreg_setup(dim=16):
    wl = LinearRegression(dim=dim, noise_std=1.0, init_distance=1.0)
    model = wl.make_model(0)
    return wl, model, wl.b_simple(model)


def test_forgotten_zero_grad_is_caught():
    """Without zero_grad, .grad sums every step so far; the monitor used to report a negative
    B_simple with an inverted interval."""
    wl, model, _ = _linreg_setup()
    monitor = GradientNoiseMonitor(model, micro_batch_size=8)
    gen = torch.Generator().manual_seed(0)
    with pytest.warns(RuntimeWarning, match="zero_grad"):
        for _ in range(30):
            for _ in range(4):
                (wl.loss(model, wl.sample_batch(8, gen)) / 4).backward()
            monitor.step()
        monitor.records
    with pytest.raises(InsufficientDataError, match=r"optimizer.zero_grad\(\) is missing"):
        monitor.estimate()


def test_same_micro_batch_fed_k_times_is_caught():
    wl, model, _ = _linreg_setup()
    monitor = GradientNoiseMonitor(model, micro_batch_size=8)
    gen = torch.Generator().manual_seed(0)
    with pytest.warns(RuntimeWarning, match="identical"):
        for _ in range(20):
            batch = wl.sample_batch(8, gen)
            for _ in range(4):
                (wl.loss(model, batch) / 4).backward()
            monitor.step()
            model.zero_grad(set_to_none=True)
        monitor.records
    with pytest.raises(InsufficientDataError, match="identical"):
        monitor.estimate()


def test_a_one_weight_model_is_not_flagged_identical_by_chance():
    """A deep fuzz find (`branch --workload-arg dim=1`): with one weight, two fresh micro-batch gradients agree to
    0.3% by chance every few hundred steps, and the monitor warned that the same examples were fed twice. The check
    needs >= 8 degrees of freedom (elements x (K - 1)); with fewer it is skipped, and the same examples fed K times
    to a model with 16 weights are still caught (above)."""
    wl = LinearRegression(dim=1)
    model = wl.make_model(0)
    monitor = GradientNoiseMonitor(model, micro_batch_size=4)
    gen = torch.Generator().manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(2000):
            for _ in range(2):
                (wl.loss(model, wl.sample_batch(4, gen)) / 2).backward()
            monitor.step()
            model.zero_grad(set_to_none=True)
        records = monitor.records
    assert not any(r.get("flag") for r in records)


def _one_step(wl, model, gen, k=2):
    for _ in range(k):
        (wl.loss(model, wl.sample_batch(8, gen)) / k).backward()


def test_unscale_before_step_is_refused():
    wl, model, _ = _linreg_setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    monitor = GradientNoiseMonitor(model, micro_batch_size=8, scaler=scaler)
    gen = torch.Generator().manual_seed(0)
    for _ in range(2):
        (scaler.scale(wl.loss(model, wl.sample_batch(8, gen)) / 2)).backward()
    scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match=r"unscale_\(\) ran before GradientNoiseMonitor.step"):
        monitor.step()


@pytest.mark.parametrize("change", ["clip", "zero_grad_keep", "reassign"])
def test_grad_changed_after_backward_is_refused(change):
    wl, model, _ = _linreg_setup()
    monitor = GradientNoiseMonitor(model, micro_batch_size=8)
    _one_step(wl, model, torch.Generator().manual_seed(0))
    if change == "clip":
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1e-3)
    elif change == "zero_grad_keep":
        model.zero_grad(set_to_none=False)
    else:
        model.weight.grad = model.weight.grad * 0.5
    with pytest.raises(RuntimeError, match=".grad was modified between the last backward"):
        monitor.step()


def test_zero_grad_before_step():
    wl, model, _ = _linreg_setup()
    monitor = GradientNoiseMonitor(model, micro_batch_size=8)
    _one_step(wl, model, torch.Generator().manual_seed(0))
    model.zero_grad(set_to_none=True)
    with pytest.raises(RuntimeError, match="found no .grad"):
        monitor.step()
    with pytest.raises(RuntimeError, match="no gradient reached the model"):  # today: IndexError
        monitor.step()


def test_optimizer_step_before_monitor_step_still_measures_the_same_weights():
    """optimizer.step() between backward and monitor.step() leaves .grad alone (SGD, Adam): the
    norms were all taken at the same weights, so the estimate is still right."""
    wl, model, truth = _linreg_setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    monitor = GradientNoiseMonitor(model, micro_batch_size=8)
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        _one_step(wl, model, gen, k=4)
        opt.step()
        monitor.step()
        opt.zero_grad(set_to_none=True)
    assert monitor.estimate().b_simple == pytest.approx(truth, rel=0.1)


def test_gradient_penalty_through_autograd_grad_is_not_counted():
    """An extra torch.autograd.grad per micro-batch fires the parameter hooks; it used to count
    as a micro-batch (K=8 instead of 4) and inflate B_simple about 3.6x."""
    wl, model, truth = _linreg_setup()
    monitor = GradientNoiseMonitor(model, micro_batch_size=8)
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        for _ in range(4):
            loss = wl.loss(model, wl.sample_batch(8, gen)) / 4
            torch.autograd.grad(loss, list(model.parameters()), retain_graph=True)  # e.g. a penalty's norm
            loss.backward()
        monitor.step()
        model.zero_grad(set_to_none=True)
    assert {r["accumulation"] for r in monitor.records} == {4}
    assert monitor.estimate().b_simple == pytest.approx(truth, rel=0.1)


class _TiedLinreg(torch.nn.Module):
    """The linreg model with its weight used twice in the forward (tied weights)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return 0.5 * (self.inner(x) + x @ self.inner.weight.t())


def test_tied_weights_count_one_gradient_per_micro_batch():
    wl, inner, truth = _linreg_setup()
    model = _TiedLinreg(inner)
    monitor = GradientNoiseMonitor(model, micro_batch_size=8)
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        for _ in range(4):
            x, y = wl.sample_batch(8, gen)
            (0.5 * (model(x).squeeze(-1) - y).square().mean() / 4).backward()
        monitor.step()
        model.zero_grad(set_to_none=True)
    assert monitor.records[-1]["accumulation"] == 4
    assert monitor.estimate().b_simple == pytest.approx(truth, rel=0.1)


def test_parameters_added_after_attaching_are_reported():
    wl, model, _ = _linreg_setup()
    monitor = GradientNoiseMonitor(model, micro_batch_size=8)
    model.extra = torch.nn.Linear(2, 2)
    _fixed_weight_steps(wl, model, monitor, torch.Generator().manual_seed(0), 60, 8, 2)
    with pytest.warns(RuntimeWarning, match="added after the GradientNoiseMonitor was created"):
        monitor.estimate()


def test_load_state_dict_rejects_foreign_state():
    model = torch.nn.Linear(3, 1)
    monitor = GradientNoiseMonitor(model, micro_batch_size=4)
    with pytest.raises(ValueError, match=r"state_dict\(\) with keys 'step' and 'tracker'. Got \[\]"):
        monitor.load_state_dict({})


def test_records_carry_world_size_and_global_batch():
    wl, model, _ = _linreg_setup()
    monitor = GradientNoiseMonitor(model, micro_batch_size=8)
    _fixed_weight_steps(wl, model, monitor, torch.Generator().manual_seed(0), 3, 8, 4)
    rec = monitor.records[-1]
    assert rec["world_size"] == 1 and rec["global_batch"] == 32 and rec["b_big"] == 32


def test_process_group_arguments_outside_a_process_group():
    """A one-rank group is allowed (nothing is shared); the multi-rank refusal is in test_distributed."""
    import torch.distributed as dist

    from batchlaw.noise.distributed import UnsupportedSetupError

    with pytest.raises(UnsupportedSetupError, match="torch.distributed is not initialised"):
        GradientNoiseMonitor(torch.nn.Linear(3, 1), micro_batch_size=4, process_group=object())
    assert not dist.is_initialized()
    monitor = GradientNoiseMonitor(torch.nn.Linear(3, 1), micro_batch_size=4, process_group=None)
    assert monitor.world_size == 1 and monitor.setup.kind == "none"


def test_float64_model():
    """float64 parameters (Lightning's 64-true precision) are measured in float64."""
    wl, model, truth = _linreg_setup()
    model = model.double()
    orig = wl.loss
    wl.loss = lambda m, batch: orig(m, (batch[0].double(), batch[1].double()))
    monitor = GradientNoiseMonitor(model, micro_batch_size=8)
    _fixed_weight_steps(wl, model, monitor, torch.Generator().manual_seed(0), 300, 8, 4)
    assert monitor.estimate().b_simple == pytest.approx(truth, rel=0.1)


# ---------------------------------------------------------------- micro-batches of unequal size
def _unequal_run(wl, model, monitor, seed, steps, k=4, mean=32, cv=0.3, normalisation="step", give_sizes=True,
                 total_factor=None):
    """``k`` micro-batches per step at fixed weights, sizes ``round(mean (1 + cv z))``; each loss a
    sum over the micro-batch divided by the step's total (``"step"``; by ``total_factor`` times it,
    passed as ``loss_total``, if given) or a mean divided by ``k``."""
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        sizes = np.maximum(1, np.round(mean * (1 + cv * rng.standard_normal(k)))).astype(int).tolist()
        for n in sizes:
            x, y = wl.sample_batch(n, gen)
            per_example = 0.5 * (model(x).squeeze(-1) - y).square()
            total = sum(sizes) * (total_factor or 1)
            loss = per_example.sum() / total if normalisation == "step" else per_example.mean() / k
            loss.backward()
        if total_factor:
            monitor.step(sizes=sizes, loss_total=total)
        else:
            monitor.step(sizes=sizes) if give_sizes else monitor.step()
        model.zero_grad(set_to_none=True)
    monitor.remove()
    return monitor


@pytest.mark.parametrize("normalisation", ["step", "micro_batch"])
def test_unequal_micro_batches_cv_0_3_within_3_percent_of_exact(normalisation):
    """Sizes with coefficient of variation 0.3 around b = 32, near B_simple = 33: taking every
    micro-batch as b examples weighed 1/K (the only estimator before) reads about 15% high."""
    wl, model, truth = _linreg_setup()
    monitor = GradientNoiseMonitor(model, loss_normalisation=normalisation)
    est = _unequal_run(wl, model, monitor, 0, 2500, normalisation=normalisation).estimate()
    assert est.b_simple == pytest.approx(truth, rel=0.03)
    assert est.ci[0] <= truth <= est.ci[1]
    recs = monitor.records
    assert all(r["micro_batch_size"] == r["b_small"] for r in recs)  # the harmonic mean of the sizes
    assert recs[0]["accumulation"] == 4 and isinstance(recs[0]["global_batch"], int)
    naive = GradientNoiseMonitor(model, micro_batch_size=32)
    biased = _unequal_run(wl, model, naive, 0, 1000, normalisation=normalisation, give_sizes=False).estimate()
    assert biased.b_simple > 1.08 * truth  # the bias this fixes


@pytest.mark.parametrize("total_factor", [None, 1.25])
def test_step_normalised_loss_recovers_absolute_g_sq_and_trace(total_factor):
    """Also when the loss is divided by more than the sizes add up to (the Trainer's count for
    GPT-2 includes a label per sequence that the loss does not use), given as loss_total."""
    wl = LinearRegression(dim=8, noise_std=0.5, init_distance=1.5)
    model = wl.make_model(1)
    d_sq = wl.delta_sq(model)
    monitor = GradientNoiseMonitor(model, loss_normalisation="step")
    est = _unequal_run(wl, model, monitor, 3, 600, k=3, mean=16, total_factor=total_factor).estimate()
    assert est.g_sq == pytest.approx(d_sq, rel=0.1)
    assert est.trace_sigma == pytest.approx(8 * (d_sq + 0.25) + d_sq, rel=0.05)


def test_equal_sizes_reduce_exactly_to_the_equal_estimator():
    """sizes=[b]*K with either normalisation gives the records of batch_size=b (a_i = 1/K)."""
    wl, model, _ = _linreg_setup()
    out = []
    for kw, step_kw in (({}, {"batch_size": 8}), ({}, {"sizes": [8] * 4}),
                        ({"loss_normalisation": "step"}, {"sizes": (8, 8, 8, 8)}),
                        ({"loss_normalisation": "step"}, {"sizes": torch.tensor([8, 8, 8, 8])}),
                        ({}, {"sizes": [torch.tensor(8)] * 4})):
        monitor = GradientNoiseMonitor(model, **kw)
        gen = torch.Generator().manual_seed(0)
        for _ in range(5):
            _one_step(wl, model, gen, k=4)
            monitor.step(**step_kw)
            model.zero_grad(set_to_none=True)
        monitor.remove()
        out.append(monitor.records)
    for recs in out[1:]:
        for a, b in zip(out[0], recs):
            assert (b["b_small"], b["b_big"], b["accumulation"], b["micro_batch_size"], b["global_batch"]) == (
                8.0, 32.0, 4, 8, 32)
            assert b["small_sq"] == pytest.approx(a["small_sq"], rel=1e-12)
            assert b["big_sq"] == pytest.approx(a["big_sq"], rel=1e-12)


def test_token_sizes_are_in_tokens():
    wl, model, truth = _linreg_setup()
    monitor = GradientNoiseMonitor(model, unit="tokens", loss_normalisation="step")
    est = _unequal_run(wl, model, monitor, 1, 300).estimate()
    assert est.unit == "tokens"
    rec = monitor.records[-1]
    assert math.isnan(rec["micro_batch_size"]) and math.isnan(rec["global_batch"])


def test_sizes_are_validated():
    wl, model, _ = _linreg_setup()
    with pytest.raises(ValueError, match="'loss_normalisation' parameter must be one of 'micro_batch', 'step'"):
        GradientNoiseMonitor(model, loss_normalisation="tokens")
    with pytest.raises(ValueError, match="'loss_divided_by_accumulation' parameter applies to"):
        GradientNoiseMonitor(model, loss_normalisation="step", loss_divided_by_accumulation=False)
    with pytest.raises(ValueError, match="'unit' parameter is 'examples' but 'tokens_per_example' is 4"):
        GradientNoiseMonitor(model, unit="examples", tokens_per_example=4)
    monitor = GradientNoiseMonitor(model, loss_normalisation="step")
    gen = torch.Generator().manual_seed(0)
    cases = [({"sizes": [8, 8]}, ValueError, r"one size per micro-batch of the step: 3 backward passes .* got 2"),
             ({"sizes": [8, 0, 8]}, ValueError, r"'sizes' parameter must hold positive finite numbers. Got 0"),
             ({"sizes": [8, 8, 8], "batch_size": 8}, ValueError, "not both"),
             ({"sizes": {8}}, TypeError, "must be a list, a tuple or a 1-D tensor"),
             ({"loss_normalisation": "sum"}, ValueError, "'loss_normalisation' parameter must be one of"),
             ({"sizes": [8, 8, 8], "loss_total": -1}, ValueError, "'loss_total' parameter must be a positive"),
             ({"sizes": [8, 8, 8], "loss_total": 30, "loss_normalisation": "micro_batch"}, ValueError,
              "'loss_total' parameter applies to loss_normalisation='step' or 'global_step' only")]
    for kwargs, err, pattern in cases:
        _one_step(wl, model, gen, k=3)
        with pytest.raises(err, match=pattern):
            monitor.step(**kwargs)
        model.zero_grad(set_to_none=True)
    _one_step(wl, model, gen, k=3)
    monitor.step(sizes=[torch.tensor(8), torch.tensor(0), torch.tensor(8)])  # device values: checked when read
    with pytest.raises(ValueError, match="was not a positive finite number"):
        monitor.records
    tokens = GradientNoiseMonitor(model, unit="tokens")
    model.zero_grad(set_to_none=True)
    _one_step(wl, model, gen, k=2)
    with pytest.raises(ValueError, match=r"without 'tokens_per_example': pass the tokens of each micro-batch"):
        tokens.step(batch_size=8)


# ---------------------------------------------------------------- refused at construction, by name
class _Complex(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(3, dtype=torch.cfloat))


def test_unmeasurable_parameters_are_refused_at_construction_by_name():
    from batchlaw.noise.distributed import UnsupportedSetupError

    sparse = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Embedding(10, 4, sparse=True))
    with pytest.raises(UnsupportedSetupError, match=r"Module '1' is a Embedding with sparse=True"):
        GradientNoiseMonitor(sparse, micro_batch_size=2)
    sparse[1].weight.requires_grad_(False)  # frozen: nothing to measure there, fine
    GradientNoiseMonitor(sparse, micro_batch_size=2).remove()
    with pytest.raises(UnsupportedSetupError, match=r"Parameter 'w' is complex \(torch.complex64\)"):
        GradientNoiseMonitor(_Complex(), micro_batch_size=2)
    with torch.device("meta"):
        meta = torch.nn.Linear(3, 1)
    with pytest.raises(UnsupportedSetupError, match=r"Parameter 'weight' is on the meta device"):
        GradientNoiseMonitor(meta, micro_batch_size=2)


def test_functional_sparse_gradient_is_refused_by_name():
    from batchlaw.noise.distributed import UnsupportedSetupError

    table = torch.nn.Parameter(torch.randn(10, 4))
    model = torch.nn.Module()
    model.table = table
    monitor = GradientNoiseMonitor(model, micro_batch_size=2)
    with pytest.raises(UnsupportedSetupError, match="as a torch.sparse_coo tensor"):
        torch.nn.functional.embedding(torch.tensor([1, 2]), table, sparse=True).sum().backward()
    monitor.remove()


def test_replaced_parameter_is_reported():
    """A parameter replaced after attaching gets no hooks: the monitor used to measure the rest
    silently (20.0 and 23.3 against 20.75 in the issue)."""
    wl = ByteMLP(context=4, embed=8, hidden=16)
    model = wl.make_model(0)
    monitor = GradientNoiseMonitor(model, micro_batch_size=8, sync_every=4)
    name = next(n for n, _ in model.named_parameters())
    module = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    leaf = name.rpartition(".")[2]
    setattr(module, leaf, torch.nn.Parameter(getattr(module, leaf).detach().clone()))
    with pytest.warns(RuntimeWarning, match=r"1 of the \d+ parameters the GradientNoiseMonitor hooked are no longer"):
        _fixed_weight_steps(wl, model, monitor, torch.Generator().manual_seed(0), 6, 8, 2)  # checked every 4 steps
    monitor.remove()


def test_backward_twice_per_micro_batch_is_caught():
    """Two backward() calls per micro-batch used to count as K = 8 and give about twice B_simple
    (42 against 20.75 in the issue) without a word."""
    wl, model, _ = _linreg_setup()
    monitor = GradientNoiseMonitor(model, micro_batch_size=8)
    gen = torch.Generator().manual_seed(0)
    with pytest.warns(RuntimeWarning, match="came in pairs with bit-identical squared norms: backward ran twice"):
        for _ in range(20):
            for _ in range(4):
                loss = wl.loss(model, wl.sample_batch(8, gen)) / 4
                loss.backward(retain_graph=True)
                loss.backward()
            monitor.step()
            model.zero_grad(set_to_none=True)
        assert monitor.records[0]["accumulation"] == 8 and monitor.records[0]["flag"] == "duplicate"
    with pytest.raises(InsufficientDataError, match="backward ran twice on each micro-batch"):
        monitor.estimate()


def test_distinct_micro_batches_are_not_flagged_as_duplicates():
    wl, model, _ = _linreg_setup()
    monitor = GradientNoiseMonitor(model, micro_batch_size=8)
    _fixed_weight_steps(wl, model, monitor, torch.Generator().manual_seed(0), 200, 8, 2)
    assert not any(r.get("flag") for r in monitor.records)
