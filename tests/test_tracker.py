"""NoiseScaleTracker: the torch-free state that any source of squared norms feeds."""

import math

import numpy as np
import pytest

from batchlaw.errors import InsufficientDataError
from batchlaw.noise import NoiseScaleTracker


def _feed(tracker, rng, steps, g_sq=0.5, tr=40.0, b=8, k=4, start=0):
    """Simulated norms of means of Gaussian per-example gradients at fixed weights."""
    d = 10
    G = np.full(d, math.sqrt(g_sq / d))
    s = math.sqrt(tr / d)
    for i in range(steps):
        micro = G + s * rng.standard_normal((k, b, d)).mean(1)  # (k, d)
        tracker.update(start + i, small_sq=(micro**2).sum(1).mean(), big_sq=(micro.mean(0) ** 2).sum(),
                       b_small=b, b_big=k * b)


def test_recovers_known_noise_scale_like_a_data_parallel_source():
    tracker = NoiseScaleTracker()
    _feed(tracker, np.random.default_rng(0), 2000)
    est = tracker.estimate()
    assert est.b_simple == pytest.approx(80.0, rel=0.1)
    assert est.ci[0] <= 80.0 <= est.ci[1]


def test_windows_and_state_round_trip():
    tracker = NoiseScaleTracker(unit="tokens")
    _feed(tracker, np.random.default_rng(1), 50)
    other = NoiseScaleTracker(unit="tokens")
    other.load_state_dict(tracker.state_dict())
    assert other.records == tracker.records and other.estimate() == tracker.estimate()
    assert tracker.estimate(start=25).n_steps == 25
    with pytest.raises(ValueError, match="measured in tokens"):
        NoiseScaleTracker().load_state_dict(tracker.state_dict())


def test_skips_non_finite_and_single_batch_steps():
    tracker = NoiseScaleTracker()
    tracker.update(0, small_sq=math.nan, big_sq=1.0, b_small=8, b_big=32)
    tracker.update(1, small_sq=1.0, big_sq=1.0, b_small=8, b_big=8)
    assert tracker.skipped_steps == 1
    with pytest.raises(InsufficientDataError, match="single micro-batch"):
        tracker.estimate()
    with pytest.raises(ValueError, match="'unit'"):
        NoiseScaleTracker(unit="sequences")
