"""The planner and the learning-rate rules."""

import itertools
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from batchlaw.cli import main
from batchlaw.plan import plan_run, ring_allreduce_time
from batchlaw.schedule import linear_rule, mccandlish_lr, sqrt_rule, surge_lr


def _json(capsys, argv):
    assert main(argv) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_should_we_double_to_32_gpus():
    """B_noise = 1000; 16 GPUs x 128 = 2048 per step; doubling buys 1.2x for 1.67x the GPU-hours."""
    plan = plan_run(gpus=[16, 32], b_crit=1000, tokens=20e9, seq_len=2048, micro_batch=128,
                    tokens_per_sec_per_gpu=3000, price_per_gpu_hour=2.0)
    r16, r32 = plan.rows
    assert (r16.global_batch, r32.global_batch) == (2048, 4096)
    assert r16.steps / plan.s_min == pytest.approx(1 + 1000 / 2048)
    assert r32.steps / plan.s_min == pytest.approx(1 + 1000 / 4096)
    d = plan.doubling[0]
    assert (d["from"], d["to"]) == (16, 32)
    assert d["speedup"] == pytest.approx((1 + 1000 / 2048) / (1 + 1000 / 4096))
    assert d["gpu_hours_ratio"] == pytest.approx(2 / d["speedup"])
    assert r32.gpu_hours / r16.gpu_hours == pytest.approx(d["gpu_hours_ratio"])
    assert r32.over_critical and r16.over_critical and r32.limit == "statistical"
    assert r32.cost == pytest.approx(r32.gpu_hours * 2.0)
    # perfect linear scaling from one GPU at micro-batch 128: eff(g) = (1 + c/128) / (g + c/128), c = 1000
    for r in plan.rows:
        assert r.efficiency == pytest.approx((1 + 1000 / 128) / (r.gpus + 1000 / 128))
    # eff(g) >= 0.7  <=>  g <= 0.7^-1 (1 + 1000/128) - 1000/128 = 4.78
    assert plan.recommended == 4 and plan.recommended_listed is None


def test_far_below_critical_scales_perfectly():
    # 1e12 tokens: E_min ~ 1e9 sequences > B_crit = 1e7, so S_min >= 1 (a budget under one B_crit is refused)
    plan = plan_run(gpus=[1, 2, 4, 8], b_crit=1e7, tokens=1e12, seq_len=1024, micro_batch=8,
                    tokens_per_sec_per_gpu=1e4)
    for r in plan.rows:
        assert r.efficiency == pytest.approx(1.0, abs=1e-4) and not r.over_critical
    assert plan.recommended_listed == 8 and plan.recommended > 1000


def test_ratio_question_without_tokens():
    """Speed-up and GPU-hour factor need no data budget (S_min cancels)."""
    with_tokens = plan_run(gpus=[8, 16], b_crit=3000, tokens=1e10, seq_len=1024, micro_batch=64,
                           tokens_per_sec_per_gpu=5000)
    without = plan_run(gpus=[8, 16], b_crit=3000, seq_len=1024, micro_batch=64, tokens_per_sec_per_gpu=5000)
    assert without.s_min is None and all(r.steps is None and r.wall_clock_h is None for r in without.rows)
    for a, b in zip(with_tokens.doubling, without.doubling):
        assert a["speedup"] == pytest.approx(b["speedup"]) and a["gpu_hours_ratio"] == pytest.approx(b["gpu_hours_ratio"])
    r8, r16 = with_tokens.rows
    assert without.doubling[0]["speedup"] == pytest.approx(r8.wall_clock_h / r16.wall_clock_h)


def test_ratio_question_without_tokens_cli(capsys):
    assert main(["plan", "--b-crit", "1000", "--gpus", "16", "--micro-batch", "128"]) == 0
    out = capsys.readouterr().out
    assert "16 -> 32 GPUs: 1.20x faster" in out and "1.67x the GPU-hours" in out
    d = _json(capsys, ["plan", "--b-crit", "1000", "--gpus", "16", "--micro-batch", "128", "--json"])
    assert d["doubling"][0]["speedup"] == pytest.approx((1 + 1000 / 2048) / (1 + 1000 / 4096))


@pytest.mark.parametrize("kw", [dict(), dict(tokens_per_sec_per_gpu=2000.0, grad_bytes=4e8, bandwidth_bytes_per_s=12.5e9),
                                dict(tokens_per_sec_per_gpu=2000.0, comm_overhead=0.2)])
def test_recommendation_does_not_depend_on_the_list(kw):
    """Order and set of the counts listed change neither efficiencies nor the recommendation."""
    base = dict(b_crit=1000, seq_len=2048, micro_batch=32, **kw)
    full = plan_run(gpus=[1, 2, 4, 8, 16, 32, 64], **base)
    eff = {r.gpus: r.efficiency for r in full.rows}
    for gpus in ([64, 16, 4], [32, 16], [16, 32], [2, 64, 8], [8], [4, 8, 16, 32], [16, 32, 64, 128]):
        p = plan_run(gpus=gpus, **base)
        assert p.recommended == full.recommended
        for r in p.rows:
            if r.gpus in eff:
                assert r.efficiency == pytest.approx(eff[r.gpus])
    for perm in itertools.permutations([4, 16, 64]):
        assert plan_run(gpus=list(perm), **base).recommended == full.recommended
    # it is the largest count keeping 70%: one more GPU falls below
    g = full.recommended
    assert plan_run(gpus=[g], **base).rows[0].efficiency >= 0.7 > plan_run(gpus=[g + 1], **base).rows[0].efficiency


def test_table_and_text_agree(capsys):
    """Every doubling verdict matches the table's mark for the target row; no 'worth it' beside
    'diminishing returns' (the old table flagged B > B_crit while the text used another threshold)."""
    argv = ["plan", "--b-crit", "1000", "--gpus", "1,2,4,8,16", "--micro-batch", "64", "--min-efficiency", "0.6"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    d = _json(capsys, argv + ["--json"])
    rows = {r["gpus"]: r for r in d["rows"]}
    table = {int(line.split()[0]): line for line in out.splitlines() if line.strip() and line.split()[0].isdigit() and "->" not in line}
    assert set(table) == set(rows)
    for g, line in table.items():
        assert (" ok;" in line) == rows[g]["within_target"]
        assert rows[g]["within_target"] == (rows[g]["efficiency"] >= 0.6)
    verdicts = [line for line in out.splitlines() if " GPUs: " in line and "->" in line]
    assert verdicts
    for line in verdicts:
        to = int(line.split("->")[1].split()[0])
        dd = next(x for x in d["doubling"] if x["to"] == to)
        assert ("worth it" in line) == dd["worth_it"] == (dd["speedup"] >= 2 * 0.6)
        assert f"{dd['doubling_efficiency']:.0%} of a perfect doubling" in line
        if to in rows:  # the table's "from g/2" column shows the same number
            assert rows[to]["doubling_efficiency"] == pytest.approx(dd["doubling_efficiency"])
            assert f" {dd['doubling_efficiency']:.0%}  " in table[to]
    assert "diminishing returns" not in out


def test_units_by_flag(capsys):
    base = ["plan", "--b-crit", "1000", "--gpus", "16", "--micro-batch", "128", "--seq-len", "2048"]
    assert main(base + ["--unit", "tokens"]) == 0
    out = capsys.readouterr().out
    assert "batch (tokens)" in out and "4,194,304" in out
    assert main(["plan", "--b-crit", "500", "--gpus", "4", "--micro-batch", "32", "--unit", "examples"]) == 0
    out = capsys.readouterr().out
    assert "batch (examples)" in out and "B_crit = 500 examples" in out and "tokens)" not in out.splitlines()[0]
    d = _json(capsys, base + ["--unit", "tokens", "--json"])
    assert d["unit"] == "tokens" and d["rows"][0]["global_batch_tokens"] == 2048 * 2048


def test_b_crit_interval_gives_a_range_of_speedups():
    kw = dict(gpus=[8, 16], seq_len=1024, micro_batch=64, tokens_per_sec_per_gpu=5000)
    p = plan_run(b_crit=1000, b_crit_ci=(600, 1800), **kw)
    lo, hi = plan_run(b_crit=600, **kw), plan_run(b_crit=1800, **kw)
    for d, dl, dh in zip(p.doubling, lo.doubling, hi.doubling):
        assert d["speedup_range"] == pytest.approx(sorted([dl["speedup"], dh["speedup"]]))
        assert d["speedup_range"][0] <= d["speedup"] <= d["speedup_range"][1]
    assert p.recommended_range == (lo.recommended, hi.recommended)
    with pytest.raises(ValueError, match="must contain b_crit"):
        plan_run(b_crit=1000, b_crit_ci=(1200, 1800), **kw)


def _synthetic_sweep(path, name, b_crit, seed=0):
    """A sweep of steps S(B) = 200 (1 + b_crit / B) with 5% noise, stored under ``name``."""
    from batchlaw.sweep import SweepConfig
    from batchlaw.sweep.store import TrialStore

    rng = np.random.default_rng(seed)
    with TrialStore(path) as store:
        config = SweepConfig(workload="linreg", batch_sizes=(4, 8, 16, 32, 64, 128, 256, 512), target_loss=0.5,
                             max_steps=1000, lr_base=0.1, name=name)
        store.save_sweep(name, config.to_dict())
        for b in (4, 8, 16, 32, 64, 128, 256, 512):
            steps = float(np.round(200 * (1 + b_crit / b) * np.exp(rng.normal(0, 0.05))))
            spec = {"batch_size": b, "lr": 0.1, "seed": seed}
            store.add(name, {"key": f"{name}{b}", "spec": spec, "status": "reached", "steps_to_target": steps,
                             "examples_to_target": steps * b, "tokens_to_target": None, "wall_time_s": 1.0,
                             "noise": None, "unit": "examples", "tokens_per_example": None, "final_loss": 1.0,
                             "curve": [[0, 2.0, None], [steps, 1.0, None]]})


def test_b_crit_interval_from_a_store(tmp_path, capsys):
    """--b-crit-store carries the sweep fit's bootstrap interval into the plan."""
    from batchlaw.sweep.analysis import analyze_sweep
    from batchlaw.sweep.store import TrialStore

    path = tmp_path / "s.db"
    _synthetic_sweep(path, "syn", 64)
    with TrialStore(path) as store:
        fit = analyze_sweep("syn", {}, store.trials("syn")).fit
    d = _json(capsys, ["plan", "--b-crit-store", str(path), "--gpus", "2,4", "--micro-batch", "16", "--json"])
    assert d["b_crit"] == pytest.approx(fit.b_crit)
    assert d["b_crit_ci"] == pytest.approx(list(fit.b_crit_ci))
    assert d["b_crit_ci"][0] < d["b_crit"] < d["b_crit_ci"][1]
    assert all("speedup_range" in x for x in d["doubling"])
    assert d["b_crit_source"] == {"option": "--b-crit-store", "store": str(path), "sweep": "syn"}


def _file_state(path):
    """The bytes of a store and the names beside it (a read must change neither)."""
    return path.read_bytes(), sorted(p.name for p in path.parent.iterdir())


def test_b_crit_store_with_two_sweeps_needs_sweep(tmp_path, capsys):
    """Two sweeps: refused until --sweep names one; each named sweep gives its own fit; the file is not written."""
    path = tmp_path / "two.db"
    _synthetic_sweep(path, "small", 16, seed=1)
    _synthetic_sweep(path, "large", 256, seed=2)
    before = _file_state(path)
    base = ["plan", "--b-crit-store", str(path), "--gpus", "2,4", "--micro-batch", "16"]
    assert main(base) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds 2 sweeps ('small', 'large')" in err and "--sweep" in err
    small = _json(capsys, base + ["--sweep", "small", "--json"])
    large = _json(capsys, base + ["--sweep", "large", "--json"])
    assert small["b_crit_source"]["sweep"] == "small" and large["b_crit_source"]["sweep"] == "large"
    assert 8 < small["b_crit"] < 32 and 128 < large["b_crit"] < 512
    assert main(base + ["--sweep", "nope"]) == 2
    assert "'--sweep' option names no sweep" in capsys.readouterr().err
    assert main(["plan", "--b-crit", "100", "--sweep", "small", "--gpus", "2", "--micro-batch", "16"]) == 2
    assert "goes with --b-crit-store" in capsys.readouterr().err
    assert main(base + ["--sweep", "small"]) == 0
    assert "from the fit of sweep 'small'" in capsys.readouterr().out
    assert _file_state(path) == before


def test_b_crit_store_never_writes(tmp_path, capsys):
    """A read command leaves a branch-only store (and any SQLite file) as it was: no tables added."""
    import sqlite3

    from batchlaw.sweep.branched import BranchStore

    path = tmp_path / "branch.db"
    with BranchStore(path) as st:
        st.save_measurement("m", {"k": 1})
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    for p, msg in [(path, "holds only branched measurements"), (other, "not a batchlaw store")]:
        before = _file_state(p)
        assert main(["plan", "--b-crit-store", str(p), "--gpus", "2", "--micro-batch", "16"]) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1
        assert _file_state(p) == before
        with sqlite3.connect(f"file:{p}?mode=ro", uri=True) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        conn.close()
        assert "sweeps" not in tables and "trials" not in tables
    # a store of the first layout: reading it may not migrate it
    old = tmp_path / "old.db"
    _synthetic_sweep(old, "syn", 64)
    with sqlite3.connect(old) as conn:
        conn.execute("DROP TABLE sweep_trials")
        conn.execute("PRAGMA user_version = 1")
    conn.close()
    before = _file_state(old)
    assert main(["plan", "--b-crit-store", str(old), "--gpus", "2", "--micro-batch", "16"]) == 2
    assert "older layout (1) that a read-only open cannot upgrade" in capsys.readouterr().err
    assert _file_state(old) == before


def test_learning_rate_at_the_new_batch(capsys):
    p = plan_run(gpus=[8, 32], b_crit=1e5, seq_len=1024, micro_batch=16, lr=3e-4, lr_rule="sqrt")
    assert [r.lr for r in p.rows] == pytest.approx([3e-4, 3e-4 * 2])  # 4x the batch -> 2x the LR
    p = plan_run(gpus=[8, 32], b_crit=1e5, seq_len=1024, micro_batch=16, lr=0.1, lr_rule="linear")
    assert [r.lr for r in p.rows] == pytest.approx([0.1, 0.4])
    p = plan_run(gpus=[8, 32], b_crit=1e5, seq_len=1024, micro_batch=16, lr=0.1, lr_rule="linear", reference_batch=64)
    assert [r.lr for r in p.rows] == pytest.approx([0.2, 0.8])
    d = _json(capsys, ["plan", "--b-crit", "1e5", "--gpus", "8,32", "--micro-batch", "16", "--lr", "1e-3", "--json"])
    assert [r["lr"] for r in d["rows"]] == pytest.approx([1e-3, 2e-3])


def test_all_reduce_cost_lowers_efficiency_and_names_communication():
    kw = dict(gpus=[8, 64], b_crit=1e7, tokens=1e12, seq_len=1024, micro_batch=8, tokens_per_sec_per_gpu=1e4)
    fast = plan_run(**kw)
    slow = plan_run(**kw, grad_bytes=4e9, bandwidth_bytes_per_s=1e9, overlap=False)
    assert slow.rows[1].efficiency < fast.rows[1].efficiency
    assert slow.rows[1].limit == "communication" and fast.rows[1].limit == "statistical"
    compute = 8 * 1024 / 1e4
    assert slow.rows[1].step_time_s == pytest.approx(compute + ring_allreduce_time(4e9, 64, 1e9))
    hidden = plan_run(**kw, grad_bytes=4e9, bandwidth_bytes_per_s=1e9, overlap=True)
    comm = ring_allreduce_time(4e9, 64, 1e9)
    assert hidden.rows[1].comm_time_s == pytest.approx(comm - 2 / 3 * compute)


def test_ring_model_by_hand():
    # 2 (W - 1) / W * n / bw + 2 (W - 1) * latency
    assert ring_allreduce_time(1e9, 4, 1e9, 1e-5) == pytest.approx(1.5 + 6e-5)
    assert ring_allreduce_time(1e9, 1, 1e9) == 0.0
    with pytest.raises(ValueError, match="'world'"):
        ring_allreduce_time(1e9, 0, 1e9)


def test_link_presets_in_the_cli(capsys):
    base = ["plan", "--b-crit", "1e6", "--gpus", "8,64", "--micro-batch", "4", "--tokens-per-sec", "2000",
            "--params", "1e9", "--json"]
    nv = _json(capsys, base + ["--link", "nvlink"])
    eth = _json(capsys, base + ["--link", "eth100", "--no-overlap"])
    assert nv["all_reduce"]["bus_bandwidth_bytes_per_s"] == 450e9 and eth["all_reduce"]["overlap"] is False
    assert eth["rows"][1]["comm_time_s"] == pytest.approx(ring_allreduce_time(4e9, 64, 12.5e9, 2e-5))
    assert eth["rows"][1]["limit"] == "communication"
    assert eth["recommended_gpus"] < nv["recommended_gpus"]


def test_plan_errors():
    with pytest.raises(ValueError, match="'gpus'"):
        plan_run(gpus=[0], b_crit=1, tokens=1, seq_len=1, micro_batch=1)
    with pytest.raises(ValueError, match="'b_crit' parameter must be a finite number > 0"):
        plan_run(gpus=[1], b_crit=-5, tokens=1, seq_len=1, micro_batch=1)
    with pytest.raises(ValueError, match="both 'grad_bytes'"):
        plan_run(gpus=[1], b_crit=1, tokens=1, seq_len=1, micro_batch=1, tokens_per_sec_per_gpu=1, grad_bytes=1)
    for bad in (-4, 0, math.nan):
        with pytest.raises(ValueError, match="'reference_batch'"):
            plan_run(gpus=[1], b_crit=1, tokens=1, seq_len=1, micro_batch=1, reference_batch=bad)


_BASE = ["plan", "--b-crit", "1000", "--gpus", "8,16", "--micro-batch", "16"]


@pytest.mark.parametrize("opt,value", [
    ("--reference-batch", "-4"), ("--reference-batch", "0"), ("--mfu", "5"), ("--mfu", "0"), ("--mfu", "-0.1"),
    ("--min-efficiency", "0"), ("--min-efficiency", "1.5"), ("--tokens", "0"), ("--tokens", "-1e9"),
    ("--tokens", "nan"), ("--tokens-per-sec", "0"), ("--peak-flops", "-1"), ("--params", "0"),
    ("--comm-overhead", "-0.1"), ("--bandwidth", "0"), ("--latency", "-1"), ("--grad-bytes-per-param", "0"),
    ("--price", "-1"), ("--lr", "0"), ("--accumulation", "0"), ("--seq-len", "0"), ("--compute", "0"),
    ("--b-crit-ci", "-1,5"), ("--tokens", "inf"),
])
def test_every_plan_option_is_range_checked(capsys, opt, value):
    extra = ["--params", "1e9"] if opt in ("--peak-flops", "--bandwidth") else []
    assert main(_BASE + extra + [f"{opt}={value}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"'{opt}'" in err and "Got" in err


@pytest.mark.parametrize("argv", [
    ["plan", "--b-crit-law=-1:0.5", "--tokens", "1e9", "--gpus", "8", "--micro-batch", "16"],
    ["plan", "--b-crit-law", "0.5:nan", "--tokens", "1e9", "--gpus", "8", "--micro-batch", "16"],
    ["plan", "--b-crit", "1000", "--gpus", "0,8", "--micro-batch", "16"],
    ["plan", "--b-crit", "1000", "--gpus", "8", "--micro-batch", "0"],
    ["plan", "--b-crit", "-3", "--gpus", "8", "--micro-batch", "16"],
    ["plan", "--b-crit-tokens", "0", "--gpus", "8", "--micro-batch", "16"],
])
def test_core_plan_options_are_range_checked(capsys, argv):
    assert main(argv) == 2
    assert "must be" in capsys.readouterr().err


@pytest.mark.parametrize("opt,value", [("--mfu", "1"), ("--min-efficiency", "1"), ("--comm-overhead", "0"),
                                       ("--price", "0"), ("--reference-batch", "0.5"), ("--latency", "0")])
def test_plan_options_at_the_allowed_boundary(capsys, opt, value):
    assert main(_BASE + ["--tokens", "1e9", "--params", "1e8", "--peak-flops", "1e15", opt, value]) == 0


def test_reference_batch_zero_is_not_the_default(capsys):
    """Today 0 silently falls back to the default; it must be refused."""
    assert main(_BASE + ["--tokens", "1e9", "--reference-batch", "0"]) == 2
    assert "--reference-batch" in capsys.readouterr().err


def test_lr_rules():
    assert linear_rule(0.1, 8) == pytest.approx(0.8)
    r = sqrt_rule(1e-3, 4, betas=(0.9, 0.999), eps=1e-8)
    assert r["lr"] == pytest.approx(2e-3) and r["betas"] == pytest.approx((0.6, 0.996)) and r["eps"] == pytest.approx(5e-9)
    with pytest.raises(ValueError, match="which needs k < 1 / \\(1 - beta\\) = 10 for beta = 0.9"):
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
            "import batchlaw, batchlaw.fit, batchlaw.plan, batchlaw.schedule, batchlaw.plan.serve\n"
            "from batchlaw.fit import fit_chinchilla, fit_steps_law\n"
            "print('ok' if 'torch' not in sys.modules else 'torch was imported')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def _profile_json(path, tokens_per_example=128, parameters=10_000_000):
    """A profile whose step time is 0.01 + 0.001 b seconds for micro-batches 1 to 16."""
    rows = [{"micro_batch": b, "status": "ok", "step_time_s": 0.01 + 0.001 * b, "peak_memory_bytes": 1e8 * b}
            for b in (1, 2, 4, 8, 16)]
    path.write_text(json.dumps({"schema": "batchlaw.profile/1", "parameters": parameters, "device": "cuda:0",
                                "tokens_per_example": tokens_per_example, "train": rows, "forward": []}))
    return str(path)


def test_plan_takes_the_sequence_length_from_the_profile(tmp_path, capsys):
    """A profile measured at 128 tokens per example: the steps are the budget over 128-token sequences.

    At the reference batch (8 GPUs x 8 = 64 sequences) S(B_ref) = tokens / (seq_len B_ref) steps, by
    definition of the budget: 1e9 / (128 x 64) = 122,070.3 steps of 0.018 s (the profile at micro-batch 8).
    """
    prof = _profile_json(tmp_path / "p.json")
    base = ["plan", "--profile", prof, "--b-crit", "1000", "--gpus", "8", "--micro-batch", "8", "--tokens", "1e9"]
    d = _json(capsys, base + ["--json"])
    assert d["seq_len"] == 128 and d["seq_len_source"] == "the profile"
    steps = 1e9 / (128 * 64)
    assert d["rows"][0]["steps"] == pytest.approx(steps)
    assert d["rows"][0]["wall_clock_h"] == pytest.approx(steps * 0.018 / 3600)
    assert _json(capsys, base + ["--seq-len", "128", "--json"])["rows"][0]["steps"] == pytest.approx(steps)
    assert main(base) == 0
    assert "128 tokens per sequence, the profile's" in capsys.readouterr().out
    assert main(base + ["--seq-len", "2048"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'--seq-len' option (2048) disagrees with the profile" in err and "128" in err
    # a profile without a sequence length (a non-sequence model): the default, and said so
    d = _json(capsys, ["plan", "--profile", _profile_json(tmp_path / "q.json", None), "--b-crit", "1000", "--gpus", "8",
                       "--micro-batch", "8", "--json"])
    assert d["seq_len"] == 2048 and d["seq_len_source"] == "the default"


def test_unit_examples_counts_the_budget_in_examples(capsys):
    """--unit examples: --tokens counts examples, so at the reference batch of 64 examples the run takes
    1e6 / 64 = 15,625 steps and S_min = E_min / B_crit = 1e6 / (1 + 64 / 2000) / 2000 = 484.5 steps.
    --seq-len with --unit examples would count the budget in two units: refused by name."""
    base = ["plan", "--unit", "examples", "--tokens", "1e6", "--b-crit", "2000", "--gpus", "8", "--micro-batch", "8"]
    d = _json(capsys, base + ["--json"])
    assert d["seq_len"] == 1 and d["rows"][0]["global_batch"] == 64
    assert d["rows"][0]["steps"] == pytest.approx(1e6 / 64)
    assert d["s_min"] == pytest.approx(1e6 / (1 + 64 / 2000) / 2000)
    assert main(base) == 0
    assert "S_min = 484 steps; 1e+06 examples at the reference batch" in capsys.readouterr().out
    assert _json(capsys, base + ["--seq-len", "1", "--json"])["rows"][0]["steps"] == pytest.approx(1e6 / 64)
    assert main(base + ["--seq-len", "2048"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'--seq-len' option cannot go with --unit examples" in err and "2048" in err


@pytest.mark.parametrize("extra,msg", [
    (["--tokens", "1e9", "--reference-batch", "1e12"], "less than one step at the reference batch"),
    (["--tokens", "1e9", "--b-crit", "1e300"], "S_min = 4.88e-295 steps, fewer than one"),
    (["--b-crit", "1e308"], "which is inf tokens"),
    (["--b-crit-law", "1e300:2", "--tokens", "1e9"], "not a finite number > 0"),
])
def test_absurd_inputs_are_refused(capsys, extra, msg):
    """A budget under one step, B_crit above the whole run's examples, or a B_crit that overflows in tokens:
    one-line errors, never a plan with 1e-7 steps or an 'inf tokens' head."""
    argv = ["plan", "--gpus", "8", "--micro-batch", "8"] + extra
    if not any(a.startswith("--b-crit") for a in extra):
        argv += ["--b-crit", "1000"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and msg in err


def test_budget_checks_in_the_api():
    with pytest.raises(ValueError, match="less than one step at the reference batch"):
        plan_run(gpus=[8], b_crit=1000, seq_len=2048, micro_batch=8, tokens=1e9, reference_batch=1e12)
    with pytest.raises(ValueError, match="fewer than one"):
        plan_run(gpus=[8], b_crit=2000, seq_len=2048, micro_batch=8, tokens=1e6)
    # S_min = 1 is allowed: 256 tokens of 2-token sequences at B_ref = B_crit = 64 give E_min = 64, S(64) = 2
    p = plan_run(gpus=[8], b_crit=64, seq_len=2, micro_batch=8, tokens=256, reference_batch=64)
    assert p.s_min == pytest.approx(1.0) and p.rows[0].steps == pytest.approx(1 + 64 / 64)


def test_a_reference_batch_above_b_crit_is_flagged_for_the_learning_rate(capsys):
    """The rule scaled down from a batch past B_crit (lr 3e-4 at 1e12 gives 2.4e-9 at 64): said, not hidden."""
    p = plan_run(gpus=[8], b_crit=1000, seq_len=2048, micro_batch=8, lr=3e-4, reference_batch=1e12)
    assert p.rows[0].lr == pytest.approx(3e-4 * (64 / 1e12) ** 0.5)
    assert any("reference batch (1e+12) is above B_crit" in n for n in p.notes)
    assert not any("reference batch" in n for n in plan_run(gpus=[8], b_crit=1000, seq_len=2048, micro_batch=8,
                                                            lr=3e-4, reference_batch=512).notes)


def test_the_gpu_search_cap_is_said(capsys):
    """Far below B_crit the efficiency never falls below the target within 2^24 GPUs: 'or more'."""
    assert main(["plan", "--b-crit", "1e300", "--gpus", "8", "--micro-batch", "8"]) == 0
    out = capsys.readouterr().out
    assert "recommendation: 16,777,216 GPUs or more" in out and "1.56e+298" in out


@pytest.mark.parametrize("extra,msg", [
    (["--tokens-per-sec", "5000"], "--tokens-per-sec and --profile each set the throughput"),
    (["--peak-flops", "1e15"], "--peak-flops and --profile each set the throughput"),
    (["--params", "2e8"], "'--params' option (2e+08) disagrees with the profile"),
])
def test_profile_is_not_silently_overridden(tmp_path, capsys, extra, msg):
    prof = _profile_json(tmp_path / "p.json")
    assert main(["plan", "--profile", prof, "--b-crit", "1000", "--gpus", "8", "--micro-batch", "8"] + extra) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and msg in err
    # within 1% of the profile's count (a rounded --params) is the same model
    assert main(["plan", "--profile", prof, "--b-crit", "1000", "--gpus", "8", "--micro-batch", "8",
                 "--params", "1e7"]) == 0


def test_throughput_given_twice_is_refused(capsys):
    assert main(_BASE + ["--tokens-per-sec", "5000", "--peak-flops", "1e15", "--params", "1e8"]) == 2
    assert "--tokens-per-sec and --peak-flops each set the throughput" in capsys.readouterr().err


def test_compute_with_a_profile_plans_the_profiled_model_or_refuses(tmp_path, capsys):
    """--compute allocates N and D; a profile measured another model: refused by name (the plan would time one
    model and train another), with the tokens the budget buys for the profiled model. A profile of the
    allocation's model plans with the profile's parameter count (issue 22 item 4)."""
    from batchlaw.fit import EPOCH_2024, compute_optimal

    alloc = compute_optimal(1e21, EPOCH_2024)
    base = ["plan", "--b-crit", "1000", "--gpus", "8,16", "--micro-batch", "8", "--compute", "1e21",
            "--link", "eth100", "--json"]
    other = _profile_json(tmp_path / "other.json", parameters=10_000_000)
    assert main(base + ["--profile", other]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "measured a model of 10,000,000 parameters" in err, err
    assert f"{1e21 / 6e7:.3g}" in err  # C / (6 N) tokens for the profiled model
    assert main(base + ["--params", "1e7"]) == 2 and "--params is 1e+07" in capsys.readouterr().err
    assert main(["plan", "--b-crit", "1000", "--gpus", "8", "--micro-batch", "8", "--inference-tokens", "1e12"]) == 2
    assert "'--inference-tokens' option goes with --compute" in capsys.readouterr().err

    n = round(alloc["params"] * 1.005)  # the allocation's model, as profiled: its exact count is used
    same = _profile_json(tmp_path / "same.json", parameters=n)
    out = _json(capsys, base + ["--profile", same])
    assert out["all_reduce"]["grad_bytes"] == 4 * n
    assert out["compute_optimal"]["params"] == pytest.approx(alloc["params"])
    assert out["rows"][0]["tokens"] == pytest.approx(alloc["tokens"])  # the reference batch spends the budget
