"""The one crossing rule (batchlaw._crossing): exact on offset power laws, least biased on exact
curves at every evaluation spacing, always inside its bracket; used by sweep trials and schedule races."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from batchlaw._crossing import crossing_step
from batchlaw.schedule.compare import _interp


def _log_step(t, y, target):  # the sweep's rule before 2026-12
    (t0, t1), (l0, l1) = t[-2:], y[-2:]
    return math.exp(math.log(t0) + (l0 - target) / (l0 - l1) * math.log(t1 / t0))


def _linear(t, y, target):  # schedule compare's rule before 2026-12
    (t0, t1), (l0, l1) = t[-2:], y[-2:]
    return t0 + (l0 - target) / (l0 - l1) * (t1 - t0)


def test_issue_example_power_law_between_steps_10_and_20():
    """L = t^-0.4, target halfway in loss between steps 10 and 20: the crossing is at 13.81."""
    t, y = [5, 10, 20], [x**-0.4 for x in (5, 10, 20)]
    target = (y[1] + y[2]) / 2
    truth = target ** (-1 / 0.4)
    assert truth == pytest.approx(13.81, abs=0.005)
    assert _linear(t, y, target) == pytest.approx(15.0)
    assert _log_step(t, y, target) == pytest.approx(14.14, abs=0.005)
    assert crossing_step(t, y, target) == pytest.approx(truth, rel=1e-9)


@settings(max_examples=200, deadline=None)
@given(e=st.floats(0.0, 5.0), a=st.floats(0.1, 10.0), c=st.floats(0.05, 3.0), t0=st.floats(1.0, 1e4),
       r1=st.floats(1.02, 4.0), r2=st.floats(1.02, 4.0), frac=st.floats(0.001, 1.0))
def test_exact_on_any_offset_power_law(e, a, c, t0, r1, r2, frac):
    """L = E + A t^-c through three evaluations at any spacing: the crossing is exact."""
    t = [t0, t0 * r1, t0 * r1 * r2]
    y = [e + a * x**-c for x in t]
    assume(y[1] - y[2] > 1e-6 * y[1])  # a drop lost to rounding leaves no crossing to compute
    # at frac = 1, y1 - (y1 - y2) can round one ulp below y2, outside the bracket (a CI find): the target is y2 there
    target = max(y[1] - frac * (y[1] - y[2]), y[2])
    truth = ((target - e) / a) ** (-1 / c)
    assert crossing_step(t, y, target) == pytest.approx(truth, rel=1e-6)


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(st.floats(0.0, 1e5), min_size=3, max_size=3, unique=True),
       losses=st.lists(st.floats(-10.0, 10.0), min_size=3, max_size=3), frac=st.floats(0.0, 1.0))
def test_always_inside_its_bracket(steps, losses, frac):
    """Whatever the evaluation before (rising, falling, step 0), the crossing lies between the last two."""
    t = sorted(steps)
    hi, lo = max(losses[1:]), min(losses[1:])
    if hi == lo or t[1] == t[2]:
        return
    y = [losses[0], hi, lo]
    target = max(lo, hi - frac * (hi - lo))
    if target >= hi:
        return
    x = crossing_step(t, y, target)
    assert t[1] <= x <= t[2]


CURVES = {
    "t^-1": lambda t: 1.0 / t,
    "1 + 2 t^-0.5": lambda t: 1 + 2 * t**-0.5,
    "1 + 3 / (1 + t/20)": lambda t: 1 + 3 / (1 + t / 20),
    "0.5 + exp(-t/100)": lambda t: 0.5 + math.exp(-t / 100),
    "sum of exponentials": lambda t: sum(math.exp(-t / 25 / i) / i for i in range(1, 65)) / 5,
}


def _schedule(kind):
    if kind == "relative":  # the sweep's default: every max(1, step // 10) steps
        s = [0]
        while s[-1] < 20_000:
            s.append(s[-1] + max(1, s[-1] // 10))
        return s
    return list(range(0, 20_050, int(kind)))


@pytest.mark.parametrize("curve", CURVES)
@pytest.mark.parametrize("spacing", ["relative", "10", "50"])
def test_less_biased_than_straight_lines_on_exact_curves(curve, spacing):
    """Crossings at 60 log-uniform steps from 20 to 2,000: the mean absolute error is below that of a
    straight line in steps or in log-steps (bench/crossing_bias.py has the full table)."""
    f, steps = CURVES[curve], _schedule(spacing)
    loss = [f(s) if s > 0 else math.inf for s in steps]
    err = {"rule": [], "log-step": [], "linear": []}
    for truth in np.geomspace(20, 2000, 60):
        target = f(truth)
        i = next(k for k, v in enumerate(loss) if v <= target)
        if steps[i - 1] == 0:
            continue
        t, y = steps[max(0, i - 2):i + 1], loss[max(0, i - 2):i + 1]
        err["rule"].append(crossing_step(t, y, target) / truth - 1)
        err["log-step"].append(_log_step(t, y, target) / truth - 1)
        err["linear"].append(_linear(t, y, target) / truth - 1)
    mean = {k: np.abs(v).mean() for k, v in err.items()}
    worst = {k: np.abs(v).max() for k, v in err.items()}
    print(curve, spacing, {k: f"{mean[k]:.3%} ({worst[k]:.2%})" for k in err})
    assert mean["rule"] <= min(mean["log-step"], mean["linear"])
    assert mean["rule"] < (0.0005 if spacing in ("relative", "10") else 0.008)
    assert worst["rule"] <= min(worst["log-step"], worst["linear"]) + 0.001


def test_two_points_and_step_zero_fall_back_to_log_steps_and_steps():
    assert crossing_step([10, 100], [2.0, 1.0], 1.5) == pytest.approx(10**1.5)
    assert crossing_step([0, 10], [2.0, 1.0], 1.5) == pytest.approx(5.0)
    assert crossing_step([0, 10, 100], [3.0, 2.0, 1.0], 1.5) == pytest.approx(10**1.5)  # step 0 is no third point
    assert crossing_step([5, 10, 100], [1.0, 2.0, 1.0], 1.5) == pytest.approx(10**1.5)  # the loss rose before: no fit


def test_refusals_name_the_problem():
    with pytest.raises(ValueError, match="bracket the target 1.5"):
        crossing_step([1, 2], [1.4, 1.0], 1.5)
    with pytest.raises(ValueError, match="increase"):
        crossing_step([2, 2], [2.0, 1.0], 1.5)
    with pytest.raises(ValueError, match="at least 2"):
        crossing_step([2], [1.0], 1.5)


def test_schedule_compare_reads_the_same_crossing():
    """Evaluations every 64 examples at batch 8 of L = 1 + 4 (1 + steps)^-0.7: steps exact, examples and
    seconds on the same fraction of the interval (linear in steps, the rule before, reads 1.5% late)."""
    steps = np.arange(0, 200, 8)
    curve = [[int(s), int(s) * 8, 0.01 * s, 1 + 4 * (1 + s) ** -0.7] for s in steps]
    target = 1 + 4 * 30.0**-0.7  # crossed at step 29
    i = next(k for k, c in enumerate(curve) if c[3] <= target)
    s, e, w = _interp(curve[:i + 1], target)
    assert s == pytest.approx(29.0, rel=2e-3)
    assert e == pytest.approx(8 * s) and w == pytest.approx(0.01 * s)
    assert _linear([c[0] for c in curve[:i + 1]], [c[3] for c in curve[:i + 1]], target) > 29.0 * 1.01
