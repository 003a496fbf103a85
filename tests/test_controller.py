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
from batchlaw.schedule import BatchController, LRSchedule, PairedSPRT, apply_choice
from batchlaw.schedule.branching import slice_rows
from batchlaw.schedule.sequential import noise_cost, noise_growth_factor, noise_threshold
from batchlaw.workloads import ByteMLP, LinearRegression, NoisyQuadratic


# ----------------------------------------------------------------------------- the pricing of a growth
def test_noise_cost_matches_the_mccandlish_examples_per_progress():
    """E(B) ~ B + B_noise per unit of progress (McCandlish et al. 2018, eq. 2.11): doubling at B = B_noise / 9
    costs 10% more examples; at B = B_noise, 50%."""
    assert noise_cost(100, 2, 900) == pytest.approx(0.1)
    assert noise_cost(100, 2, 100) == pytest.approx(0.5)
    assert noise_cost(100, 4, 900) == pytest.approx(0.3)
    assert noise_cost(100, 2, math.inf) == 0.0
    assert noise_threshold(100, 2, 0.1) == pytest.approx(900.0)
    for b, k, m in [(8, 2, 0.1), (64, 4, 0.05), (3, 8, 0.3)]:
        assert noise_cost(b, k, noise_threshold(b, k, m)) == pytest.approx(m)


def test_noise_growth_factor_is_the_largest_power_within_the_margin():
    assert noise_growth_factor(8, 1000, 0.1) == 8  # 7 * 8 / 1008 = 5.6%; 15 * 8 / 1008 = 11.9%
    assert noise_growth_factor(128, 1000, 0.1) == 1
    assert noise_growth_factor(8, 1000, 0.1, max_k=4) == 4
    assert noise_growth_factor(8, 0.0, 0.1) == 1
    with pytest.raises(ValueError, match="'factor'"):
        noise_growth_factor(8, 100, 0.1, factor=1)


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
    # unresolved for 50 steps, then an interval whose lower end clears 9 x 8 = 72 (the 10% margin for x2)
    mon = ScriptedMonitor(lambda s: None if s < 50 else (80.0, math.inf))
    ctl = BatchController(8, 0.1, max_batch=64, lr_rule="linear", max_micro_batch=8)
    batches = _drive(ctl, mon, 60)
    assert batches[:50] == [8] * 50 and batches[50:] == [16] * 10  # checks at steps 0, 10, ..., 50
    unresolved = [d for d in ctl.decisions if d["decision"] == "unresolved"]
    assert len(unresolved) == 5 and all("unresolved" in d["reason"] for d in unresolved)
    grow = ctl.growths
    assert len(grow) == 1 and grow[0]["step"] == 50 and grow[0]["batch"] == 8 and grow[0]["new_batch"] == 16
    assert grow[0]["noise"]["ci"] == [80.0, None] and grow[0]["noise"]["threshold"] == pytest.approx(72.0)


def test_an_interval_just_below_the_threshold_does_not_grow_and_its_upper_end_is_irrelevant():
    mon = ScriptedMonitor(lambda s: (71.9, 1e9))
    ctl = BatchController(8, 0.1, max_batch=64, lr_rule="linear", max_micro_batch=8)
    assert set(_drive(ctl, mon, 100)) == {8}
    assert all(d["decision"] == "stay" and "above the 10% margin" in d["reason"] for d in ctl.decisions)


def test_a_wide_lower_end_grows_several_factors_at_once_and_the_window_restarts_at_the_new_batch():
    mon = ScriptedMonitor(lambda s: (1000.0, 5000.0))
    ctl = BatchController(8, 0.1, max_batch=1024, lr_rule="linear", max_micro_batch=64)
    batches = _drive(ctl, mon, 22)
    assert batches[0] == 64  # x8: 7 * 8 / 1008 = 5.6% <= 10%; x16 would cost 11.9%
    assert batches[10] == 128  # at step 10 from 64: 64 / 1064 = 6.0%
    assert batches[20] == 128  # 128 / 1128 = 11.3%
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
    mon = ScriptedMonitor(lambda s: None if s < 20 else (100.0, 400.0))
    ctl = BatchController(8, 0.1, max_batch=64, lr_rule="linear", max_micro_batch=8)
    _drive(ctl, mon, 40)
    path = tmp_path / "decisions.json"
    ctl.save_report(path)
    doc = json.loads(path.read_text())
    assert doc["schema"] == "batchlaw.controller/1" and doc["unit"] == "examples"
    assert [d["decision"] for d in doc["decisions"]] == ["unresolved", "unresolved", "grow", "stay"]
    for d in doc["decisions"]:
        assert {"step", "examples_seen", "batch", "new_batch", "decision", "path", "reason", "noise"} <= set(d)
    assert "B_simple interval 100 to 400 examples" in doc["decisions"][2]["reason"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(margin=0), "'margin'"), (dict(margin=1.5), "'margin'"), (dict(factor=1), "'factor'"),
    (dict(window=5), "'window'"), (dict(max_lr=-1.0), "'max_lr'"), (dict(branch_budget=2.0), "'branch_budget'"),
    (dict(branch_steps=0), "'branch_steps'"), (dict(max_accumulation=1), "'max_accumulation'"),
    (dict(alpha=0.0), "'alpha'"), (dict(seed=1.5), "'seed'"), (dict(planned_examples=0), "'planned_examples'"),
    (dict(max_batch=4), "'max_batch'"),
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
