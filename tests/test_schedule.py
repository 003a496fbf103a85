"""Batch-size schedules: valid layouts, monotone growth, LR in data seen, exact resume."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from batchlaw.noise import GradientNoiseMonitor
from batchlaw.schedule import (
    BatchChoice,
    CBSRamp,
    ConstantBatch,
    FixedRamp,
    LRSchedule,
    NoiseScaleRamp,
    Seesaw,
    apply_choice,
    layout,
    sqrt_rule,
)
from batchlaw.workloads import LinearRegression


class _Records:
    """A stand-in for the monitor's records API (the input of the ramp, not the thing tested)."""

    unit = "examples"

    def __init__(self):
        self.records = []

    def push(self, b):
        self.records.append({"b_simple_ema": b})


def _check_valid(c: BatchChoice, world: int, max_micro: int, min_acc: int):
    assert isinstance(c.micro_batch_size, int) and isinstance(c.accumulation, int)
    assert c.micro_batch_size >= 1 and c.accumulation >= min_acc
    assert c.micro_batch_size <= max_micro
    assert c.world_size == world
    assert c.global_batch == c.micro_batch_size * c.accumulation * world
    assert c.global_batch <= max(c.target_batch, world * min_acc) + 1e-9
    assert math.isfinite(c.lr) and c.lr >= 0


@settings(max_examples=200, deadline=None)
@given(batch=st.floats(1, 1e5), world=st.integers(1, 64), max_micro=st.integers(1, 512), min_acc=st.integers(1, 4))
def test_layout_is_valid_and_monotone(batch, world, max_micro, min_acc):
    if int(batch) // world < min_acc:
        with pytest.raises(ValueError, match="min_accumulation"):
            layout(batch, world_size=world, max_micro_batch=max_micro, min_accumulation=min_acc)
        return
    m, k = layout(batch, world_size=world, max_micro_batch=max_micro, min_accumulation=min_acc)
    assert 1 <= m <= max_micro and k >= min_acc and m * k * world <= batch
    m2, k2 = layout(batch * 1.37 + 5, world_size=world, max_micro_batch=max_micro, min_accumulation=min_acc)
    assert m2 * k2 >= m * k  # never smaller for a larger request


def _schedules(world, max_micro, min_acc):
    kw = dict(world_size=world, max_micro_batch=max_micro, min_accumulation=min_acc)
    base = 16 * world
    yield ConstantBatch(base, lr=1e-3, **kw)
    yield FixedRamp([(0, base), (1000, 3 * base + 1), (5000, 20 * base)], lr=1e-3, **kw)
    yield NoiseScaleRamp(base, 1e-3, max_batch=50 * base, cooldown=2, min_records=2, **kw)
    yield CBSRamp([(500, 2.5 * base), (3000, 9 * base)], base, 1e-3, max_batch=40 * base, **kw)
    yield Seesaw(base, 1e-3, milestones=[800, 1600, 2400, 3200], max_batch=8 * base, **kw)


@pytest.mark.parametrize("world", [1, 2, 3, 8])
@pytest.mark.parametrize("max_micro,min_acc", [(4, 1), (16, 2), (7, 1)])
def test_every_schedule_returns_valid_choices(world, max_micro, min_acc):
    for sched in _schedules(world, max_micro, min_acc):
        rec = _Records()
        seen = 0
        for i in range(300):
            rec.push(5.0 * (1 + i))  # a noise scale that keeps rising
            c = sched.step(seen, rec)
            _check_valid(c, world, max_micro, min_acc)
            assert c.step == i and c.examples_seen == seen
            seen += c.global_batch


@settings(max_examples=60, deadline=None)
@given(readings=st.lists(st.one_of(st.floats(0, 1e4), st.just(math.nan), st.just(math.inf)), min_size=1, max_size=120),
       world=st.integers(1, 4), hysteresis=st.floats(0, 1))
def test_noise_ramp_only_grows_and_respects_the_cap(readings, world, hysteresis):
    sched = NoiseScaleRamp(8 * world, 1e-3, max_batch=256 * world, world_size=world, max_micro_batch=8,
                           hysteresis=hysteresis, cooldown=0, min_records=1)
    rec, seen, last = _Records(), 0, 0
    for b in readings:
        rec.push(b)
        c = sched.step(seen, rec)
        assert c.global_batch >= last and c.global_batch <= 256 * world
        assert c.changed == (last != 0 and c.global_batch != last)
        last = c.global_batch
        seen += c.global_batch


def test_noise_ramp_follows_c_times_b_simple_with_hysteresis():
    sched = NoiseScaleRamp(8, 0.1, max_batch=64, c=2.0, hysteresis=0.5, max_growth=100.0, cooldown=0,
                           min_records=3, max_micro_batch=4, lr_rule="linear")
    rec = _Records()
    out = []
    for b in [100, 100, 5.0, 5.5, 7.0, 40.0]:
        rec.push(b)
        out.append(sched.step(0, rec).global_batch)
    # readings 1-2: too few; reading 3 (5.0): 2*5 = 10 < 1.5*8; reading 4: 11 < 12; 14 >= 12 -> 12; then the cap
    assert out == [8, 8, 8, 8, 12, 64]
    assert sched.step(0, rec).lr == pytest.approx(0.1 * 64 / 8)


def test_noise_ramp_converts_tokens_and_refuses_without_tokens_per_example():
    rec = _Records()
    rec.unit = "tokens"
    for _ in range(3):
        rec.push(64 * 40.0)  # 40 examples of 64 tokens
    sched = NoiseScaleRamp(8, 1e-3, max_batch=512, min_records=1, cooldown=0, max_micro_batch=8,
                           max_growth=10.0, tokens_per_example=64)
    assert sched.step(0, rec).global_batch == 40
    with pytest.raises(ValueError, match="tokens_per_example"):
        NoiseScaleRamp(8, 1e-3, max_batch=512, min_records=1, max_micro_batch=8).step(0, rec)


def test_lr_schedule_in_tokens_continues_exactly_across_a_batch_change():
    tpe = 32
    lr = LRSchedule(1e-3, total=204_800 * tpe, warmup=20_000 * tpe, shape="cosine", tokens_per_example=tpe)
    ramp = FixedRamp([(0, 64), (51_200 * tpe, 256)], lr=lr, tokens_per_example=tpe, max_micro_batch=64)
    const = ConstantBatch(64, lr=lr, tokens_per_example=tpe, max_micro_batch=64)
    seen, changes = 0, 0
    while seen < 204_800:
        c = ramp.step(seen)
        changes += c.changed
        k = c.global_batch / 64
        # the schedule part of the LR is the constant-batch run's LR at the same data, exactly
        assert c.lr / math.sqrt(k) == pytest.approx(const.step(seen).lr, rel=1e-12, abs=0)
        assert c.lr == (sqrt_rule(lr(seen), k, betas=())["lr"] if lr(seen) > 0 else 0.0)
        seen += c.global_batch
    assert changes == 1
    assert seen == 204_800  # 800 steps of 64, then 600 of 256: the cosine ends with the data
    assert lr(seen) == 0.0
    # the LR right after the change is the schedule at the same data times sqrt(4)
    c = FixedRamp([(0, 64), (51_200 * tpe, 256)], lr=lr, tokens_per_example=tpe, max_micro_batch=64).step(51_200)
    assert c.lr == sqrt_rule(lr(51_200), 4, betas=())["lr"]


def test_wsd_and_step_shapes():
    s = LRSchedule(1.0, total=100, shape="wsd", decay_fraction=0.2, final_fraction=0.1)
    assert s(0) == 1.0 and s(80) == 1.0 and s(90) == pytest.approx(0.55) and s(100) == pytest.approx(0.1)
    s = LRSchedule(1.0, shape="step", milestones=(10, 20), step_factor=4)
    assert [s(9), s(10), s(25)] == [1.0, 0.25, 0.0625]


def test_seesaw_trades_each_cut_for_batch_growth_until_the_cap():
    s = Seesaw(16, 1e-3, milestones=[100, 200, 300], a=2, max_batch=64, max_micro_batch=16)
    got = [(s.step(x).global_batch, s.step(x).lr) for x in (0, 100, 200, 300)]
    assert [b for b, _ in got] == [16, 32, 64, 64]
    lrs = [lr for _, lr in got]
    assert lrs[1] == pytest.approx(1e-3 / math.sqrt(2)) and lrs[2] == pytest.approx(1e-3 / 2)
    assert lrs[3] == pytest.approx(1e-3 / 2 / 2)  # capped: the third cut falls on the LR in full
    sgd = Seesaw(16, 0.1, milestones=[100], a=2, optimizer="sgd", max_batch=64, max_micro_batch=16)
    assert sgd.step(100).lr == 0.1 and sgd.step(100).global_batch == 32
    with pytest.raises(ValueError, match="lr_rule"):
        Seesaw(16, 0.1, milestones=[100], max_batch=64, lr_rule="sqrt")


def test_sqrt_rule_rescales_adam_betas_and_refuses_a_cap_that_breaks_them():
    s = FixedRamp([(0, 8), (10, 32)], lr=1e-3, adam_betas=(0.9, 0.99), adam_eps=1e-8, max_micro_batch=8, max_batch=32)
    c = s.step(10)
    assert c.betas == pytest.approx((0.6, 0.96)) and c.eps == pytest.approx(5e-9)
    opt = torch.optim.Adam(torch.nn.Linear(2, 1).parameters(), lr=1.0)
    apply_choice(opt, c)
    assert opt.param_groups[0]["lr"] == pytest.approx(2e-3) and opt.param_groups[0]["betas"] == pytest.approx((0.6, 0.96))
    with pytest.raises(ValueError, match="k \\(1 - beta\\)"):
        FixedRamp([(0, 8)], lr=1e-3, adam_betas=(0.9, 0.99), max_micro_batch=8, max_batch=128)


@pytest.mark.parametrize("bad, match", [
    (lambda: ConstantBatch(0, lr=0.1), "batch"),
    (lambda: FixedRamp([(5, 8)], lr=0.1), "stage at 0"),
    (lambda: FixedRamp([(0, 8), (0, 16)], lr=0.1), "must increase"),
    (lambda: NoiseScaleRamp(8, 0.1, max_batch=4), "max_batch"),
    (lambda: ConstantBatch(8, lr=0.1, lr_rule="cubic"), "lr_rule"),
    (lambda: ConstantBatch(8, lr=-1.0), "lr"),
    (lambda: ConstantBatch(2, lr=0.1, world_size=4), "per rank"),
    (lambda: ConstantBatch(8, lr=0.1).step(-1), "examples_seen"),
    (lambda: LRSchedule(0.1, shape="cosine"), "total"),
])
def test_bad_arguments_are_named(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()


# ---------------------------------------------------------------- a real loop with a real monitor
def _train(n_steps, *, resume_at=None, seed=0):
    """A plain loop: monitor + noise-scale ramp + SGD on linear regression; optional mid-run resume."""
    wl = LinearRegression(dim=8, noise_std=1.0, init_distance=3.0)

    def fresh():
        model = wl.make_model(seed)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        mon = GradientNoiseMonitor(model, micro_batch_size=4, ema_beta=0.9)
        sched = NoiseScaleRamp(8, LRSchedule(0.05, total=40_000, warmup=200, shape="cosine"), max_batch=128,
                               max_micro_batch=8, lr_rule="linear", cooldown=5, min_records=5, hysteresis=0.2)
        return model, opt, mon, sched, torch.Generator().manual_seed(seed + 1)

    model, opt, mon, sched, gen = fresh()
    seen, trajectory = 0, []
    for i in range(n_steps):
        if i == resume_at:
            state = copy.deepcopy({"model": model.state_dict(), "opt": opt.state_dict(), "mon": mon.state_dict(),
                                   "sched": sched.state_dict(), "gen": gen.get_state(), "seen": seen})
            mon.remove()
            model, opt, mon, sched, gen = fresh()
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            mon.load_state_dict(state["mon"])
            sched.load_state_dict(state["sched"])
            gen.set_state(state["gen"])
            seen = state["seen"]
        c = sched.step(seen, mon)
        for _ in range(c.accumulation):
            (wl.loss(model, wl.sample_batch(c.micro_batch_size, gen)) / c.accumulation).backward()
        mon.step(c.micro_batch_size)
        apply_choice(opt, c)
        opt.step()
        opt.zero_grad()
        seen += c.global_batch
        trajectory.append((c.global_batch, c.accumulation, c.micro_batch_size, c.lr, c.changed))
    mon.remove()
    return trajectory, model.weight.detach().clone(), wl.eval_loss(model)


def test_noise_ramp_grows_in_a_real_loop_and_resumes_bit_for_bit():
    straight, w_straight, loss = _train(240)
    batches = [t[0] for t in straight]
    assert batches[0] == 8 and batches[-1] > 8, "the batch should grow as the noise scale rises"
    assert all(b2 >= b1 for b1, b2 in zip(batches, batches[1:]))
    change_steps = [i for i, t in enumerate(straight) if t[4]]
    resume = change_steps[0] + 3  # in the middle of the ramp: after one change, before the others
    assert any(i > resume for i in change_steps)
    resumed, w_resumed, _ = _train(240, resume_at=resume)
    assert resumed == straight  # the same choices, compared exactly
    assert torch.equal(w_resumed, w_straight)
    assert loss < LinearRegression(dim=8, noise_std=1.0, init_distance=3.0).eval_loss(
        LinearRegression(dim=8, noise_std=1.0, init_distance=3.0).make_model(0))


def test_examples_seen_may_be_any_integer_type():
    import numpy as np

    s = FixedRamp([(0, 8), (16, 16)], lr=0.1, max_micro_batch=8)
    assert s.step(np.int64(16)).global_batch == 16 and s.step(torch.tensor(16).item()).examples_seen == 16
    with pytest.raises(ValueError, match="examples_seen"):
        s.step(16.5)


def test_state_from_another_schedule_is_refused():
    with pytest.raises(ValueError, match="FixedRamp"):
        ConstantBatch(8, lr=0.1).load_state_dict(FixedRamp([(0, 8)], lr=0.1).state_dict())


@pytest.mark.parametrize("bad, match", [
    (lambda: ConstantBatch(8, lr=0.1, adam_betas=(math.nan, 0.999)), "'adam_betas' parameter must be in \\[0, 1\\)"),
    (lambda: ConstantBatch(8, lr=0.1, adam_betas=(1.5, 0.999)), "'adam_betas' parameter must be in \\[0, 1\\)"),
    (lambda: ConstantBatch(8, lr=0.1, adam_betas=(0.9, 1.0)), "'adam_betas' parameter must be in \\[0, 1\\)"),
    (lambda: ConstantBatch(8, lr=0.1, adam_betas=(0.9,)), "Adam's \\(beta1, beta2\\)"),
    (lambda: sqrt_rule(1e-3, 2, eps=-1), "'eps' parameter must be a finite number > 0"),
    (lambda: sqrt_rule(1e-3, 2, betas=(1.0, 2.0)), "'betas' parameter must be in \\[0, 1\\)"),
    (lambda: CBSRamp([(0, 1e300)], 8, 1e-3), "at most 2\\^53 examples.*1e\\+300"),
    (lambda: CBSRamp([(0, math.inf)], 8, 1e-3), "points cbs"),
    (lambda: LRSchedule(1e-3)(math.nan), "'examples_seen' parameter must be a finite number >= 0"),
    (lambda: LRSchedule(1e-3)(math.inf), "'examples_seen' parameter must be a finite number >= 0"),
])
def test_schedule_api_refuses_what_it_used_to_accept(bad, match):
    """Each was accepted: beta1 = 1.5 became 2.0 after a doubling, eps = -1 a negative epsilon, a
    CBS of 1e300 a batch of 1e300 examples, and LRSchedule(nan) the peak learning rate."""
    with pytest.raises(ValueError, match=match):
        bad()


@pytest.mark.parametrize("make, reach", [
    (lambda: FixedRamp([(0, 8), (100, 128)], lr=0.1, adam_betas=(0.9, 0.999), max_micro_batch=8), "its largest stage"),
    (lambda: CBSRamp([(0, 100), (10, 1000)], 8, 1e-3, adam_betas=(0.9, 0.999), max_micro_batch=8),
     "factor x the largest CBS"),
    (lambda: NoiseScaleRamp(8, 0.1, max_batch=80, adam_betas=(0.9, 0.999), max_micro_batch=8), "max_batch"),
])
def test_sqrt_rule_limit_is_stated_as_the_ratio_to_the_base_batch(make, reach):
    """The limit is on batch / base_batch (the betas were tuned at base_batch), reached in any number of
    changes: the message said 'scale the batch in smaller steps', which cannot help. It now gives the
    largest batch allowed (79 < 10 x 8), checked when the schedule is built (the CBS ramp, without a
    max_batch, failed at the step its CBS arrived)."""
    with pytest.raises(ValueError, match=f"below 1 / \\(1 - 0.9\\) = 10 times base_batch=8: at most 79 examples.*"
                                         f"\\({reach}"):
        make()
    assert NoiseScaleRamp(8, 0.1, max_batch=79, adam_betas=(0.9, 0.999), max_micro_batch=8).step(0).betas == (0.9, 0.999)
    with pytest.raises(ValueError, match="needs k < 1 / \\(1 - beta\\) = 10 for beta = 0.9; got k = 10"):
        sqrt_rule(1e-3, 10, betas=(0.9, 0.999))


@pytest.mark.parametrize("key, value, match", [
    ("want", -5, "'want' must be a number of examples from base_batch=8 to max_batch=64"),
    ("want", 1000.0, "'want' must be a number of examples from base_batch=8"),
    ("step", -3, "'step' must be a whole number >= 0. Got -3"),
    ("step", 2.5, "'step' must be a whole number"),
    ("current", 0, "'current' must be None"),
    ("last_change", 99, "'last_change' must be a whole number from 0 to the state's step \\(4\\)"),
    ("last_b_simple", math.nan, "'last_b_simple' must be None or a finite number > 0"),
    ("finite_readings", None, "'finite_readings' must be a whole number"),
    ("want", KeyError, "has no 'want' entry"),
])
def test_tampered_state_dict_is_refused_by_key_and_leaves_the_schedule_as_it_was(key, value, match):
    """want = -5 shrank the ramp below its base batch, step = -3 was restored as is, a missing key was a KeyError."""
    s = NoiseScaleRamp(8, 0.1, max_batch=64, max_micro_batch=8, cooldown=0, min_records=1)
    for seen in range(0, 32, 8):
        s.step(seen)
    good = s.state_dict()
    state = dict(good)
    if value is KeyError:
        del state[key]
    else:
        state[key] = value
    fresh = NoiseScaleRamp(8, 0.1, max_batch=64, max_micro_batch=8, cooldown=0, min_records=1)
    before = fresh.state_dict()
    with pytest.raises(ValueError, match=match):
        fresh.load_state_dict(state)
    assert fresh.state_dict() == before
    fresh.load_state_dict(good)
    assert fresh.state_dict() == good


# ------------------------------------------------------------------ found by the fuzz test (issue 22 item 17)
@pytest.mark.parametrize("make,message", [
    (lambda: FixedRamp(8, lr=0.1), "The 'stages' parameter must be a sequence of (a, b) pairs"),
    (lambda: FixedRamp([8, 16], lr=0.1), "The 'stages' parameter must be a sequence of (a, b) pairs"),
    (lambda: FixedRamp([(0, 8, 1)], lr=0.1), "Got (0, 8, 1) in [(0, 8, 1)]"),
    (lambda: CBSRamp(3.5, 8, 0.1), "The 'points' parameter must be a sequence of (a, b) pairs"),
    (lambda: CBSRamp([(0, "8")], 8, 0.1), "The 'points cbs' parameter must be a finite number > 0. Got '8'"),
    (lambda: CBSRamp([(0, None)], 8, 0.1), "The 'points cbs' parameter must be a finite number > 0. Got None"),
    (lambda: LRSchedule(1e-3, shape="step", milestones=100), "The 'milestones' parameter must be a sequence"),
    (lambda: Seesaw(8, 1e-3, milestones=100.0, max_batch=64), "The 'milestones' parameter must be a sequence"),
    (lambda: Seesaw(8, 1e-3, milestones=[100], max_batch=None), "The 'max_batch' parameter must be a positive integer"),
    (lambda: NoiseScaleRamp(1, 0.1, max_batch=64), "The 'base_batch' parameter (1) cannot be laid out"),
    (lambda: CBSRamp([(0, 8), (100, 32)], 8, 1e308, max_micro_batch=8), "The learning rate 1e+308 at base_batch=8 "
     "becomes inf under lr_rule='sqrt' at 32 examples"),
    (lambda: FixedRamp([(0, 8), (100, 16)], lr=1e308, lr_rule="linear"), "becomes inf under lr_rule='linear'"),
])
def test_schedule_arguments_are_refused_by_name(make, message):
    """Before: TypeError "'int' object is not iterable", a silent float('8'), a layout error that did not name
    base_batch, and a schedule whose learning rate became inf at the larger batch (lr=inf in the BatchChoice)."""
    with pytest.raises(ValueError) as err:
        make()
    assert message in str(err.value)


def test_noise_scale_ramp_refuses_a_monitor_record_that_is_not_a_number():
    class Monitor:
        unit = "examples"
        records = [{"b_simple_ema": "8"}]

    ramp = NoiseScaleRamp(8, 0.1, max_batch=64, min_records=1, cooldown=0)
    with pytest.raises(ValueError, match="b_simple_ema='8', not a number: pass a GradientNoiseMonitor"):
        ramp.step(0, Monitor())
