"""The online batch controller: its decision rule on scripted monitors, the sequential test's error
rates by simulation, branches that leave the trunk untouched, logging, limits and exact resume."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch

from batchlaw.errors import InsufficientDataError
from batchlaw.noise import GradientNoiseMonitor, NoiseScaleEstimate
from batchlaw.schedule import BatchController, PairedSPRT, apply_choice
from batchlaw.schedule.branching import slice_rows
from batchlaw.schedule.sequential import noise_cost, noise_growth_factor
from batchlaw.workloads import LinearRegression


# ----------------------------------------------------------------------------- the pricing of a growth
def test_noise_cost_matches_the_mccandlish_examples_per_progress():
    """E(B) ~ B + B_noise per unit of progress (McCandlish et al. 2018, eq. 2.11): doubling at B = B_noise / 9
    costs 10% more examples; at B = B_noise, 50%."""
    assert noise_cost(100, 2, 900) == pytest.approx(0.1)
    assert noise_cost(100, 2, 100) == pytest.approx(0.5)
    assert noise_cost(100, 4, 900) == pytest.approx(0.3)
    assert noise_cost(100, 2, math.inf) == 0.0
    assert noise_cost(100, 2, 200) == pytest.approx(1 / 3)  # growing to B_noise itself


def test_noise_growth_factor_keeps_the_next_batch_at_or_below_the_lower_end():
    assert noise_growth_factor(8, 100) == 8  # 64 <= 100 < 128
    assert noise_growth_factor(8, 64) == 8  # at the lower end itself
    assert noise_growth_factor(128, 255) == 1
    assert noise_growth_factor(8, 1000, max_k=4) == 4
    assert noise_growth_factor(40, 100, max_k=1.6) == 1.6  # a partial growth to a limit of 64
    assert noise_growth_factor(40, 60, max_k=1.6) == 1
    assert noise_growth_factor(8, 0.0) == 1
    assert noise_growth_factor(8, 100, factor=4) == 4
    with pytest.raises(ValueError, match="'factor'"):
        noise_growth_factor(8, 100, factor=1)


# ----------------------------------------------------------------------------- the sequential test
def _simulate(f, snr, reps, rng, margin=0.1, progress=1.0, spread_p=0.3, **kw):
    """Pairs with a true extra-examples fraction f: delta = f P + noise, z's spread = margin P / snr."""
    sd = margin * progress / snr
    grows, pairs = 0, 0
    for _ in range(reps):
        test = PairedSPRT(margin=margin, **kw)
        while True:
            p = progress * (1 + spread_p * rng.standard_normal())
            r = test.update(f * p + sd * rng.standard_normal(), p)
            if r.decision != "continue":
                break
        grows += r.decision == "grow"
        pairs += r.pairs
    return grows / reps, pairs / reps


@pytest.mark.parametrize("snr", [0.5, 1.0, 2.0, 4.0])
def test_sprt_grows_wrongly_in_at_most_5_percent_when_the_larger_batch_costs_the_margin(snr):
    """H0 at its boundary (f = margin) and beyond (f = 2 margin): P(grow) <= alpha = 5%, over the whole range of
    signal-to-noise ratios (3,000 simulated tests each; the binomial SE at 5% is 0.4%)."""
    rng = np.random.default_rng(int(snr * 10))
    wrong, _ = _simulate(0.1, snr, 3000, rng)
    assert wrong <= 0.05
    wrong_far, _ = _simulate(0.2, snr, 1000, rng)
    assert wrong_far <= wrong + 0.01


@pytest.mark.parametrize("snr, power", [(2.0, 0.85), (4.0, 0.99)])
def test_sprt_detects_a_true_saving_with_the_stated_power(snr, power):
    """A larger batch that costs nothing (f = 0) is grown to with power >= 85% when the margin's worth of progress
    is twice the spread of the pair differences, >= 99% at four times (stated in docs/concepts-controller.md)."""
    rng = np.random.default_rng(7)
    grows, mean_pairs = _simulate(0.0, snr, 2000, rng)
    assert grows >= power
    assert mean_pairs <= 6


def test_sprt_needs_min_pairs_stays_without_progress_and_at_max_pairs():
    t = PairedSPRT(margin=0.1, min_pairs=3, max_pairs=4)
    assert t.update(0.0, 1.0).decision == "continue"
    assert t.update(0.0, 1.0).decision == "continue"
    r = t.update(0.0, 1.0)
    assert r.decision == "grow" and r.cost == 0.0  # identical pairs: no spread, the means decide
    t = PairedSPRT(margin=0.1)
    for _ in range(3):
        r = t.update(0.01, -0.02)
    assert r.decision == "stay" and "no progress" in r.reason
    t = PairedSPRT(margin=0.1, max_pairs=4)
    rng = np.random.default_rng(0)
    for _ in range(4):
        r = t.update(0.05 + 0.3 * rng.standard_normal(), 1.0)  # f = 5% in heavy noise: undecided
    assert r.decision == "stay" and "no decision within 4 pairs" in r.reason
    with pytest.raises(ValueError, match="'delta'"):
        t.update(math.nan, 1.0)
    with pytest.raises(ValueError, match="'max_pairs'"):
        PairedSPRT(min_pairs=4, max_pairs=3)


# ----------------------------------------------------------------------------- scripted monitors
class ScriptedMonitor:
    """A stand-in for GradientNoiseMonitor's windowed estimate (the input of the rule, not the thing tested):
    ``script(step) -> (lo, hi)`` gives the interval over the window ending at the current step, or None for
    unresolved."""

    unit = "examples"

    def __init__(self, script):
        self.script = script
        self.steps = 0
        self.calls = []

    def estimate(self, *, start=None, stop=None, confidence=0.95, min_steps=10):
        self.calls.append((start, self.steps))
        ci = self.script(self.steps)
        if ci is None:
            raise InsufficientDataError("The mean |G|^2 estimate over 20 steps is -0.1 <= 0: not resolved.")
        lo, hi = ci
        point = math.sqrt(lo * hi) if math.isfinite(hi) else 2 * lo
        return NoiseScaleEstimate(point, (lo, hi), 1.0, point, self.steps - (start or 0), "examples", confidence, "scripted")


def _drive(controller, monitor, steps):
    seen, batches = 0, []
    for _ in range(steps):
        c = controller.step(seen, monitor)
        batches.append(c.global_batch)
        seen += c.global_batch
        monitor.steps += 1
    return batches


def test_no_growth_while_the_interval_is_unresolved_then_growth_when_its_lower_end_clears():
    # unresolved for 50 steps, then an interval whose lower end clears the next batch, 16 (but not 32)
    mon = ScriptedMonitor(lambda s: None if s < 50 else (20.0, math.inf))
    ctl = BatchController(8, 0.1, max_batch=64, lr_rule="linear", max_micro_batch=8)
    batches = _drive(ctl, mon, 60)
    assert batches[:50] == [8] * 50 and batches[50:] == [16] * 10  # checks at steps 0, 10, ..., 50
    unresolved = [d for d in ctl.decisions if d["decision"] == "unresolved"]
    assert len(unresolved) == 5 and all("unresolved" in d["reason"] for d in unresolved)
    grow = ctl.growths
    assert len(grow) == 1 and grow[0]["step"] == 50 and grow[0]["batch"] == 8 and grow[0]["new_batch"] == 16
    assert grow[0]["noise"]["ci"] == [20.0, None] and grow[0]["noise"]["threshold"] == 16


def test_an_interval_just_below_the_next_batch_does_not_grow_and_its_upper_end_is_irrelevant():
    mon = ScriptedMonitor(lambda s: (15.9, 1e9))
    ctl = BatchController(8, 0.1, max_batch=64, lr_rule="linear", max_micro_batch=8)
    assert set(_drive(ctl, mon, 100)) == {8}
    assert all(d["decision"] == "stay" and "below the next batch 16 examples" in d["reason"] for d in ctl.decisions)


def test_a_wide_lower_end_grows_several_factors_at_once_and_the_window_restarts_at_the_new_batch():
    mon = ScriptedMonitor(lambda s: (100.0, 5000.0) if s < 10 else (200.0, 5000.0))
    ctl = BatchController(8, 0.1, max_batch=1024, lr_rule="linear", max_micro_batch=64)
    batches = _drive(ctl, mon, 22)
    assert batches[0] == 64  # x8: 64 <= 100 < 128
    assert batches[10] == 128  # 128 <= 200
    assert batches[20] == 128  # 256 > 200
    assert mon.calls[2] == (10, 20)  # the window starts where the batch changed


def test_growth_past_max_batch_or_the_micro_batch_limit_is_refused_with_the_reason():
    mon = ScriptedMonitor(lambda s: (1e6, math.inf))
    ctl = BatchController(8, 0.1, max_batch=1024, lr_rule="linear", max_micro_batch=8, max_accumulation=4)
    batches = _drive(ctl, mon, 40)
    assert max(batches) == 32
    refused = [d for d in ctl.decisions if d["decision"] == "refused"]
    assert len(refused) == 1
    assert "max_micro_batch=8 x max_accumulation=4 x world_size=1 = 32 examples" in refused[0]["reason"]
    ctl = BatchController(8, 0.1, max_batch=48, lr_rule="linear", max_micro_batch=8)
    assert max(_drive(ctl, ScriptedMonitor(lambda s: (1e6, math.inf)), 40)) == 48  # a partial growth to the cap
    assert "max_batch=48" in ctl.decisions[-1]["reason"]


def test_the_learning_rate_follows_the_rule_and_is_capped_at_max_lr():
    mon = ScriptedMonitor(lambda s: (1e6, math.inf))
    ctl = BatchController(8, 0.1, max_batch=64, lr_rule="linear", max_lr=0.5, max_micro_batch=64)
    seen = 0
    lrs = {}
    for _ in range(30):
        c = ctl.step(seen, mon)
        lrs[c.global_batch] = c.lr
        seen += c.global_batch
        mon.steps += 1
    assert lrs == {64: 0.5}  # 0.1 x 8 = 0.8 at batch 64: capped
    ctl = BatchController(8, 1e-3, max_batch=32, lr_rule="sqrt", adam_betas=(0.9, 0.99), max_micro_batch=32)
    s = ctl.lr_settings(0, 32)
    assert s["lr"] == pytest.approx(2e-3) and s["betas"] == pytest.approx((0.6, 0.96))


def test_the_decision_log_is_json_and_says_why(tmp_path):
    mon = ScriptedMonitor(lambda s: None if s < 20 else (16.0, 40.0))
    ctl = BatchController(8, 0.1, max_batch=64, lr_rule="linear", max_micro_batch=8)
    _drive(ctl, mon, 40)
    path = tmp_path / "decisions.json"
    ctl.save_report(path)
    doc = json.loads(path.read_text())
    assert doc["schema"] == "batchlaw.controller/1" and doc["unit"] == "examples"
    assert [d["decision"] for d in doc["decisions"]] == ["unresolved", "unresolved", "grow", "stay"]
    for d in doc["decisions"]:
        assert {"step", "examples_seen", "batch", "new_batch", "decision", "path", "reason", "noise"} <= set(d)
    assert "B_simple interval 16 to 40 examples" in doc["decisions"][2]["reason"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(margin=0), "'margin'"), (dict(margin=1.5), "'margin'"), (dict(factor=1), "'factor'"),
    (dict(window=5), "'window'"), (dict(max_lr=-1.0), "'max_lr'"), (dict(branch_budget=2.0), "'branch_budget'"),
    (dict(branch_steps=0), "'branch_steps'"), (dict(max_accumulation=1), "'max_accumulation'"),
    (dict(alpha=0.0), "'alpha'"), (dict(seed=1.5), "'seed'"), (dict(planned_examples=0), "'planned_examples'"),
    (dict(max_batch=4), "'max_batch'"), (dict(branch_steps="long"), "'branch_steps'.*'auto'"),
])
def test_bad_arguments_are_named(kwargs, match):
    args = dict(max_batch=64, lr_rule="linear", max_micro_batch=8)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        BatchController(8, 0.1, **args)


def test_tokens_monitor_needs_tokens_per_example():
    mon = ScriptedMonitor(lambda s: (1e4, math.inf))
    mon.unit = "tokens"
    ctl = BatchController(8, 0.1, max_batch=64, lr_rule="linear", max_micro_batch=8)
    with pytest.raises(ValueError, match="tokens_per_example"):
        _drive(ctl, mon, 1)
    ctl = BatchController(8, 0.1, max_batch=64, lr_rule="linear", max_micro_batch=8, tokens_per_example=32)
    _drive(ctl, mon, 1)
    assert ctl.decisions[0]["noise"]["ci"][0] == pytest.approx(1e4 / 32)


def test_slice_rows_keeps_the_structure():
    x = torch.arange(12).reshape(6, 2)
    assert slice_rows({"a": x, "n": 3}, 2, 4)["a"].tolist() == [[4, 5], [6, 7]]
    assert slice_rows([x, x[:, 0]], 0, 1)[1].tolist() == [0]


# ----------------------------------------------------------------------------- branches in a real loop
class DropoutNet(torch.nn.Module):
    """A regression net with dropout: branches must not shift the trunk's random stream."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Dropout(0.2),
                                       torch.nn.Linear(16, 1))

    def forward(self, x):
        return self.net(x).squeeze(-1)


def _loss(model, batch):
    x, y = batch
    return (model(x) - y).square().mean()


def _sample(n, generator):
    x = torch.randn(n, 8, generator=generator)
    return x, x.sum(1) + 0.5 * torch.randn(n, generator=generator)


def _train(ctl, monitor, steps, *, bind, model=None, opt=None, gen=None, seen=0, start=0):
    model = model or DropoutNet()
    opt = opt or torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5)
    gen = gen or torch.Generator().manual_seed(1)
    if bind:
        ctl.bind(model, opt, loss_fn=_loss, sample_fn=_sample)
    batches = []
    for _ in range(start, steps):
        c = ctl.step(seen, monitor)
        batches.append(c.global_batch)
        for _ in range(c.accumulation):
            (_loss(model, _sample(c.micro_batch_size, gen)) / c.accumulation).backward()
        if isinstance(monitor, GradientNoiseMonitor):
            monitor.step(c.micro_batch_size)
        else:
            monitor.steps += 1
        apply_choice(opt, c)
        opt.step()
        opt.zero_grad(set_to_none=True)
        seen += c.global_batch
    return {"model": model, "opt": opt, "gen": gen, "batches": batches, "seen": seen}


def test_branches_that_decide_to_stay_leave_the_trunk_bit_for_bit_unchanged():
    """Branch tests run (the noise scale is unresolved, so growth is plausible) and stay (a margin of 1e-9 can never
    be cleared): the trunk's weights, optimizer state, data stream and torch's random state (dropout) are exactly
    those of the same run without branches."""
    def make():
        return BatchController(8, 0.01, max_batch=64, lr_rule="linear", max_micro_batch=8, margin=1e-9,
                               planned_examples=100_000, branch_budget=0.5, branch_steps=2, max_pairs=3)

    torch.manual_seed(123)
    ctl = make()
    a = _train(ctl, ScriptedMonitor(lambda s: None), 40, bind=True)
    rng_a = torch.get_rng_state()
    torch.manual_seed(123)
    b = _train(make(), ScriptedMonitor(lambda s: None), 40, bind=False)
    tests = [d for d in ctl.decisions if d["path"] == "branch"]
    assert len(tests) >= 2 and all(d["decision"] == "stay" for d in tests)
    assert ctl.branch_examples == sum(d["branch"]["examples"] for d in tests) > 0
    assert a["batches"] == b["batches"] == [8] * 40
    for p, q in zip(a["model"].parameters(), b["model"].parameters()):
        assert torch.equal(p, q)
    sa, sb = a["opt"].state_dict()["state"], b["opt"].state_dict()["state"]
    assert all(torch.equal(sa[i]["momentum_buffer"], sb[i]["momentum_buffer"]) for i in sa)
    assert torch.equal(a["gen"].get_state(), b["gen"].get_state())
    assert torch.equal(rng_a, torch.get_rng_state())


def test_a_free_growth_is_detected_by_branches_and_a_costly_one_is_not():
    """Linear regression with SGD far below its best learning rate: doubling the batch and the learning rate is
    free (k steps of lr = 1 step of k lr), so the test grows. The same at a learning rate near the curvature limit
    is costly (the larger step overshoots) and the test stays."""
    wl = LinearRegression(dim=16, noise_std=0.1, init_distance=3.0)
    results = {}
    for lr in (0.002, 0.45):
        model = wl.make_model(0)
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        ctl = BatchController(32, lr, max_batch=64, lr_rule="linear", max_micro_batch=64, planned_examples=100_000,
                              branch_steps=1)
        ctl.bind(model, opt, loss_fn=wl.loss, sample_fn=wl.sample_batch, eval_fn=wl.eval_loss)
        ctl.step(0, ScriptedMonitor(lambda s: None))
        results[lr] = ctl.decisions[0]
    free, costly = results[0.002], results[0.45]
    assert free["path"] == costly["path"] == "branch"
    assert free["decision"] == "grow" and abs(free["branch"]["cost"]) < 0.02
    assert costly["decision"] == "stay" and costly["branch"]["cost"] > 0.1
    for d in (free, costly):
        assert d["branch"]["examples"] == d["branch"]["pairs"].__len__() * 2 * 1 * 2 * 32


def test_resuming_mid_run_gives_the_same_trajectory():
    """A run with a real monitor, branch tests and growths, checkpointed at step 20 (model, optimizer, monitor,
    controller, data generator) and resumed in fresh objects: the same batches, decisions (a branch test among them)
    and weights."""
    def make():
        return BatchController(8, 0.01, max_batch=128, lr_rule="linear", max_micro_batch=8, margin=0.5,
                               branch_budget=0.4, branch_steps=1, window=20, seed=5)

    def strip(ds):
        return [{k: v for k, v in d.items() if k not in ("branch",)} for d in ds]

    torch.manual_seed(7)
    model = DropoutNet()
    ctl, mon = make(), GradientNoiseMonitor(model)
    first = _train(ctl, mon, 20, bind=True, model=model)
    ckpt = copy.deepcopy({"model": first["model"].state_dict(), "opt": first["opt"].state_dict(),
                          "monitor": mon.state_dict(), "ctl": ctl.state_dict(), "gen": first["gen"].get_state(),
                          "rng": torch.get_rng_state(), "seen": first["seen"]})
    full = _train(ctl, mon, 80, bind=False, model=first["model"], opt=first["opt"], gen=first["gen"],
                  seen=first["seen"], start=20)
    mon.remove()
    model2 = DropoutNet()
    model2.load_state_dict(ckpt["model"])
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.01, momentum=0.5)
    opt2.load_state_dict(ckpt["opt"])
    ctl2, mon2 = make(), GradientNoiseMonitor(model2)
    ctl2.load_state_dict(ckpt["ctl"])
    mon2.load_state_dict(ckpt["monitor"])
    gen2 = torch.Generator()
    gen2.set_state(ckpt["gen"])
    torch.set_rng_state(ckpt["rng"])
    ctl.unbind()
    resumed = _train(ctl2, mon2, 80, bind=True, model=model2, opt=opt2, gen=gen2, seen=ckpt["seen"], start=20)
    mon2.remove()
    assert len(set(first["batches"] + full["batches"])) >= 3  # it grew twice or more
    assert any(d["path"] == "branch" and d["step"] >= 20 for d in ctl.decisions)  # a branch test after the resume
    assert resumed["batches"] == full["batches"]
    assert strip(ctl2.decisions) == strip(ctl.decisions)
    assert [d["branch"]["pairs"] for d in ctl2.decisions if "branch" in d] == \
        [d["branch"]["pairs"] for d in ctl.decisions if "branch" in d]
    for p, q in zip(full["model"].parameters(), resumed["model"].parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("make_opt, steps", [
    (lambda p: torch.optim.Adam(p, lr=1e-3), 20),  # ceil(2 / (1 - 0.9))
    (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.5), 4),
    (lambda p: torch.optim.SGD(p, lr=0.1), 1),
])
def test_auto_branch_window_outlasts_the_optimizer_s_memory(make_opt, steps):
    model = DropoutNet()
    ctl = BatchController(8, 0.01, max_batch=64, lr_rule="linear", max_micro_batch=8)
    ctl.bind(model, make_opt(model.parameters()), loss_fn=_loss, sample_fn=_sample)
    assert ctl._pair_steps(0, 16) == steps
    sqrt = BatchController(8, 1e-3, max_batch=64, lr_rule="sqrt", adam_betas=(0.9, 0.99), max_micro_batch=8)
    sqrt.bind(model, torch.optim.Adam(model.parameters()), loss_fn=_loss, sample_fn=_sample)
    assert sqrt._pair_steps(0, 16) == 10  # the larger batch's beta1 under the square-root rule: 1 - 2 x 0.1


def test_branches_never_spend_more_than_their_budget():
    """At every decision the branch examples so far are within branch_budget of max(examples seen, planned)."""
    wl = LinearRegression(dim=16, noise_std=1.0, init_distance=3.0)
    model = wl.make_model(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.002)
    ctl = BatchController(8, 0.002, max_batch=4096, lr_rule="linear", max_micro_batch=64, planned_examples=3000,
                          branch_budget=0.2, margin=0.5)
    ctl.bind(model, opt, loss_fn=wl.loss, sample_fn=wl.sample_batch, eval_fn=wl.eval_loss)
    mon = GradientNoiseMonitor(model)
    gen, seen = torch.Generator().manual_seed(1), 0
    for _ in range(170):
        c = ctl.step(seen, mon)
        for _ in range(c.accumulation):
            (wl.loss(model, wl.sample_batch(c.micro_batch_size, gen)) / c.accumulation).backward()
        mon.step(c.micro_batch_size)
        apply_choice(opt, c)
        opt.step()
        opt.zero_grad(set_to_none=True)
        seen += c.global_batch
    mon.remove()
    tests = [d for d in ctl.decisions if d["path"] == "branch"]
    assert len(tests) >= 3 and any("budget" in d.get("branch_skipped", "") for d in ctl.decisions)
    for d in ctl.decisions:
        assert d["branch_examples_total"] <= 0.2 * max(d["examples_seen"], 3000)
