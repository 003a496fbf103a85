"""Trials, sweeps, the store: resumable, nothing lost, same answers on every executor."""

import json
import os
import signal
import sqlite3
import subprocess
import sys

import pytest
from store_polling import finished_trials

from batchlaw.sweep import (
    LocalExecutor,
    LRSearch,
    SweepConfig,
    TrialSpec,
    TrialStore,
    analyze_sweep,
    run_sweep,
    run_trial,
)

LIN = {"dim": 16, "noise_std": 1.0, "init_distance": 4.0, "condition": 100.0}


def _spec(**kw):
    base = dict(workload="linreg", batch_size=16, lr=0.3, seed=0, target_loss=0.55, max_steps=2000,
                eval_every=1, workload_kwargs=LIN)
    base.update(kw)
    return TrialSpec(**base)


def test_trial_reaches_target_and_records_everything():
    r = run_trial(_spec())
    assert r["status"] == "reached"
    assert 0 < r["steps_to_target"] <= r["steps_run"]
    assert r["examples_to_target"] == pytest.approx(16 * r["steps_to_target"])
    assert r["tokens_to_target"] is None and r["unit"] == "examples"
    assert r["curve"][0][0] == 0 and r["curve"][-1][1] <= 0.55 < r["curve"][-2][1]
    assert r["noise"] is not None and r["noise"]["g_sq_mean"] > 0
    assert json.loads(json.dumps(r)) == r
    assert run_trial(_spec()) ["steps_to_target"] == r["steps_to_target"]  # deterministic


def test_trial_divergence_and_budget():
    assert run_trial(_spec(lr=50.0))["status"] == "diverged"
    budget = run_trial(_spec(lr=1e-4, max_steps=30))
    assert budget["status"] == "budget" and budget["steps_to_target"] is None and budget["steps_run"] == 30


def test_spec_key_is_stable_and_distinguishes():
    assert _spec().key == _spec().key
    assert _spec().key != _spec(lr=0.31).key


def test_lr_search_widens_towards_the_edge():
    s = LRSearch(center=1.0, factor=2.0, points=3, max_extensions=2)
    assert s.grid == [0.5, 1.0, 2.0]
    for lr, steps in zip(s.grid, (30, 20, 10)):
        s.record(lr, {"status": "reached", "steps_to_target": steps})
    assert s.at_edge() == "high" and s.extend() and s.pending() == [4.0]
    s.record(4.0, {"status": "diverged", "steps_to_target": None})
    assert not s.extend()  # best is now interior
    d = LRSearch(center=1.0, factor=2.0, points=2, max_extensions=1)
    for lr in d.grid:
        d.record(lr, {"status": "diverged", "steps_to_target": None})
    assert d.extend() and d.pending() == [min(d.grid)] and not d.extend()


def _config(name="t", **kw):
    base = dict(workload="linreg", batch_sizes=(4, 16, 64), target_loss=0.55, max_steps=1500, lr_base=0.05,
                eval_every=1, workload_kwargs=LIN, lr_factor=2.0, lr_points=2, max_extensions=2, name=name)
    base.update(kw)
    return SweepConfig(**base)


def test_same_command_twice_runs_no_trial_twice(tmp_path):
    ran = []
    with TrialStore(tmp_path / "s.db") as store:
        first = run_sweep(_config(), store, progress=False, on_result=ran.append)
        n = len(ran)
        second = run_sweep(_config(), store, progress=False, on_result=ran.append)
        assert len(ran) == n and store.count() == n
        with pytest.raises(ValueError, match="another configuration"):
            run_sweep(_config(max_steps=99), store, progress=False)
    key = lambda rs: sorted((r["key"], r["steps_to_target"]) for r in rs)  # noqa: E731
    assert key(first) == key(second)


def test_csv_export(tmp_path):
    with TrialStore(tmp_path / "s.db") as store:
        results = run_sweep(_config(batch_sizes=(8, 32)), store, progress=False)
        assert store.export_csv(tmp_path / "t.csv") == len(results)
    lines = (tmp_path / "t.csv").read_text().splitlines()
    assert lines[0].startswith("sweep,key,batch_size,lr,seed,status,steps_to_target")
    assert len(lines) == len(results) + 1


@pytest.mark.parametrize("sig,jobs", [(signal.SIGKILL, 1), (signal.SIGINT, 2)])
def test_resume_after_kill_or_ctrl_c_loses_no_finished_trial(tmp_path, sig, jobs):
    db = tmp_path / "kill.db"
    cmd = [sys.executable, "-m", "batchlaw", "sweep", "--workload", "linreg", "--workload-arg", "condition=100",
           "--batch-sizes", "4,8,16,32,64,128", "--target-loss", "0.01", "--max-steps", "4000", "--eval-every", "50",
           "--lr-points", "2", "--max-extensions", "0", "--store", str(db), "--jobs", str(jobs), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    finished = finished_trials(proc, db, 2)
    os.killpg(proc.pid, sig)  # SIGINT to the process group is what Ctrl-C in a terminal sends
    rc = proc.wait(timeout=60)
    if sig == signal.SIGINT:
        assert rc == 130 and b"run the same command again to resume" in proc.stderr.read()
    # Twelve trials of about 2 s each: after the first two finish, ten remain, so the signal lands
    # mid-sweep even when a loaded machine delays this loop by several seconds.
    assert 2 <= len(finished) < 12, "the sweep should be stopped mid-way"
    done = subprocess.run(cmd + ["--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(db) as con:
        after = dict(con.execute("SELECT key, finished_at FROM trials").fetchall())
    assert len(after) == 12
    for key, t in finished.items():
        assert after[key] == t  # not rerun
    assert json.loads(done.stdout)["n_trials"] == 12


def test_linreg_b_crit_and_b_simple_agree_within_factor_2(tmp_path):
    """The direct measurement and the noise-scale prediction (McCandlish et al. 2018, sec. 2.2).

    Observed: B_crit = 19.3 (11.2 to 31.3), run-averaged B_simple = 17.2 (12.1 to 25.8), ratio 1.13.
    (With the target at 0.53, near the noise floor 0.5 where B_simple grows without bound, the
    ratio was 3.6: see docs/noise_vs_cbs.md.)"""
    config = _config(name="agree", batch_sizes=(2, 4, 8, 16, 32, 64, 128, 256), seeds=(0, 1, 2), lr_base=0.1,
                     lr_scaling=0.7, lr_factor=1.6, lr_points=3, max_extensions=3, target_loss=0.6, max_steps=3000)
    with TrialStore(tmp_path / "a.db") as store:
        results = run_sweep(config, store, LocalExecutor(1), progress=False)
    a = analyze_sweep(config.name, config.to_dict(), results)
    ratio = a.fit.b_crit / a.b_simple["b_simple"]
    print(f"B_crit = {a.fit.b_crit:.1f}, B_simple = {a.b_simple['b_simple']:.1f}, ratio {ratio:.2f}")
    assert 0.5 <= ratio <= 2.0


@pytest.mark.slow
def test_ray_executor_gives_the_same_results_as_local(tmp_path):
    ray = pytest.importorskip("ray")
    from batchlaw.sweep import RayExecutor

    config = _config(batch_sizes=(4, 16, 64))
    with TrialStore(tmp_path / "local.db") as store:
        local = run_sweep(config, store, LocalExecutor(1), progress=False)
    executor = RayExecutor(jobs=2)
    try:
        with TrialStore(tmp_path / "ray.db") as store:
            remote = run_sweep(config, store, executor, progress=False)
    finally:
        executor.close()
    assert not ray.is_initialized()
    key = lambda rs: sorted((r["key"], r["status"], r["steps_to_target"]) for r in rs)  # noqa: E731
    assert key(local) == key(remote)


# ------------------------------------------------------------------ reading steps to target
# The noisy quadratic model with (almost) no gradient noise: gradient descent on a quadratic, a
# deterministic sum of exponentials, so the every-step held-out reading is the exact crossing.
QUIET_NQM = {"dim": 256, "h_exponent": 1.0, "c_exponent": 1.0, "c_max": 1e-12}


def _nqm(**kw):
    from batchlaw.workloads import NoisyQuadratic

    initial = NoisyQuadratic(**QUIET_NQM).eval_loss(NoisyQuadratic(**QUIET_NQM).make_model(0))
    base = dict(workload="nqm", workload_kwargs=QUIET_NQM, batch_size=8, seed=0, max_steps=3000, micro_batches=1,
                eval_every=1)
    base.update(kw)
    base["target_loss"] = base["target_loss"] * initial
    return run_trial(TrialSpec(**base))["steps_to_target"]


@pytest.mark.parametrize("lr,frac", [(0.5, 0.2), (1.5, 0.2), (0.5, 0.1), (1.5, 0.1)])
def test_train_target_reads_the_same_steps_as_the_heldout_target(lr, frac):
    """The EMA (beta 0.9) of a one-step-stale training loss read crossings 10-12 steps late (25% of
    S_min = 30 steps); the centred window reads them within its curvature bias, (c + 1) w^2 / 6 of
    the steps (about 1.3% here)."""
    exact = _nqm(lr=lr, target_loss=frac)
    for eval_every in (1, None):
        train = _nqm(lr=lr, target_loss=frac, target_on="train", eval_every=eval_every)
        print(f"lr {lr}, target {frac}: held-out {exact:.2f} steps, train ({eval_every}) {train:.2f}")
        assert exact <= train <= exact * 1.02 + 0.1


def test_coarse_evaluations_read_the_crossing_of_every_step_evaluation():
    """Every 50 steps on a crossing near step 117: linear in log-steps read 0.9% late, the 3-point rule 0.2%."""
    fine = _nqm(lr=0.5, target_loss=0.1)
    assert _nqm(lr=0.5, target_loss=0.1, eval_every=50) == pytest.approx(fine, rel=0.003)


def test_train_window_belongs_to_train_targets_only():
    held = _spec()
    assert "train_window" not in held.to_dict() and held.train_window is None  # held-out keys as before
    train = _spec(target_on="train")
    assert train.to_dict()["train_window"] == 0.2 and TrialSpec(**train.to_dict()).key == train.key
    assert train.key != _spec(target_on="train", train_window=0.1).key
    with pytest.raises(ValueError, match="'train_window' parameter must be a number in \\(0, 0.5\\]. Got 0.9"):
        _spec(target_on="train", train_window=0.9)


@pytest.mark.parametrize("batch,lr", [(16, 0.3), (64, 0.6)])
def test_default_eval_schedule_reads_steps_as_finely_as_every_step(batch, lr):
    """eval_every=50 read 48 steps where every-step evaluation reads 14; the default is relative."""
    assert SweepConfig(workload="linreg", batch_sizes=(4,), target_loss=1.0, max_steps=10, lr_base=0.1).eval_every is None
    fine = run_trial(_spec(batch_size=batch, lr=lr, target_loss=0.6, eval_every=1, micro_batches=1))
    auto = run_trial(_spec(batch_size=batch, lr=lr, target_loss=0.6, eval_every=None, micro_batches=1))
    assert auto["steps_to_target"] == pytest.approx(fine["steps_to_target"], rel=0.03)
    steps = [c[0] for c in run_trial(_spec(lr=1e-4, max_steps=400, eval_every=None, micro_batches=1))["curve"]]
    gaps = [b - a for a, b in zip(steps, steps[1:])]
    assert steps[:3] == [0, 1, 2] and max(gaps) <= 400 // 10 and len(steps) < 60


def test_coarse_readings_are_flagged():
    config = _config(name="coarse", batch_sizes=(16, 64, 256), eval_every=50, lr_points=1, max_extensions=0,
                     target_loss=0.6, lr_base=0.3, lr_scaling=0.5)
    results = run_sweep(config, TrialStore(":memory:"), progress=False)
    a = analyze_sweep(config.name, config.to_dict(), results)
    assert a.warnings and all("under 3 evaluation intervals (50 steps)" in w for w in a.warnings)
    assert "warnings" in a.to_dict()


def test_progress_knows_its_total_ends_at_100_and_writes_lines_off_a_terminal(capsys):
    run_sweep(_config(name="p", batch_sizes=(4, 16)), TrialStore(":memory:"), progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.strip().splitlines()
    assert lines[0].startswith("sweep p: 0/4 trials") or lines[0].startswith("sweep p: 1/4 trials")
    done, total = lines[-1].split(": ")[1].split(" ")[0].split("/")
    assert done == total and "(100%" in lines[-1]
    assert len(lines) <= 12
