"""The planner and the learning-rate rules."""

import subprocess
import sys

import pytest

from batchlaw.plan import plan_run
from batchlaw.schedule import linear_rule, mccandlish_lr, sqrt_rule, surge_lr


def test_should_we_double_to_32_gpus():
    """B_noise = 1000; 16 GPUs x 128 = 2048 per step; doubling buys 1.2x for 1.67x the GPU-hours."""
    plan = plan_run(gpus=[16, 32], b_crit=1000, tokens=20e9, seq_len=2048, micro_batch=128,
                    tokens_per_sec_per_gpu=3000, price_per_gpu_hour=2.0)
    r16, r32 = plan.rows
    assert (r16.global_batch, r32.global_batch) == (2048, 4096)
    assert r16.steps / plan.s_min == pytest.approx(1 + 1000 / 2048)
    assert r32.steps / plan.s_min == pytest.approx(1 + 1000 / 4096)
    (d,) = plan.doubling
    assert d["speedup"] == pytest.approx((1 + 1000 / 2048) / (1 + 1000 / 4096))
    assert d["gpu_hours_ratio"] == pytest.approx(2 / d["speedup"])
    assert r32.over_critical and r16.over_critical
    assert plan.recommended == 16
    assert r32.cost == pytest.approx(r32.gpu_hours * 2.0)


def test_far_below_critical_scales_perfectly():
    plan = plan_run(gpus=[1, 2, 4, 8], b_crit=1e6, tokens=1e9, seq_len=1024, micro_batch=8,
                    tokens_per_sec_per_gpu=1e4)
    for r in plan.rows:
        assert r.efficiency == pytest.approx(1.0, abs=1e-3) and not r.over_critical
    assert plan.recommended == 8
    tokens = [r.tokens for r in plan.rows]
    assert tokens[-1] / tokens[0] == pytest.approx((1 + 64 / 1e6) / (1 + 8 / 1e6))


def test_all_reduce_cost_lowers_efficiency():
    kw = dict(gpus=[8, 64], b_crit=1e6, tokens=1e9, seq_len=1024, micro_batch=8, tokens_per_sec_per_gpu=1e4)
    fast = plan_run(**kw)
    slow = plan_run(**kw, grad_bytes=4e9, bandwidth_bytes_per_s=1e9)
    assert slow.rows[1].efficiency < fast.rows[1].efficiency


def test_plan_errors():
    with pytest.raises(ValueError, match="'gpus'"):
        plan_run(gpus=[0], b_crit=1, tokens=1, seq_len=1, micro_batch=1)
    with pytest.raises(ValueError, match="'b_crit' parameter must be a finite number > 0"):
        plan_run(gpus=[1], b_crit=-5, tokens=1, seq_len=1, micro_batch=1)
    with pytest.raises(ValueError, match="both 'grad_bytes'"):
        plan_run(gpus=[1], b_crit=1, tokens=1, seq_len=1, micro_batch=1, tokens_per_sec_per_gpu=1, grad_bytes=1)


def test_lr_rules():
    assert linear_rule(0.1, 8) == pytest.approx(0.8)
    r = sqrt_rule(1e-3, 4, betas=(0.9, 0.999), eps=1e-8)
    assert r["lr"] == pytest.approx(2e-3) and r["betas"] == pytest.approx((0.6, 0.996)) and r["eps"] == pytest.approx(5e-9)
    with pytest.raises(ValueError, match="k \\(1 - beta\\) < 1"):
        sqrt_rule(1e-3, 20, betas=(0.9, 0.999))
    # surge: peaks at B = B_noise, symmetric in log B
    grid = [2**i for i in range(4, 16)]
    best = max(grid, key=lambda b: surge_lr(b, 1024, 1.0))
    assert best == 1024 and surge_lr(256, 1024, 1.0) == pytest.approx(surge_lr(4096, 1024, 1.0))
    # McCandlish: half of eps_max at B = B_noise, saturating above
    assert mccandlish_lr(1000, 1000, 0.2) == pytest.approx(0.1)
    assert mccandlish_lr(1e9, 1000, 0.2) == pytest.approx(0.2, rel=1e-5)


def test_fit_and_plan_import_without_torch():
    code = ("import sys\n"
            "import batchlaw, batchlaw.fit, batchlaw.plan, batchlaw.schedule\n"
            "from batchlaw.fit import fit_chinchilla, fit_steps_law\n"
            "print('ok' if 'torch' not in sys.modules else 'torch was imported')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
