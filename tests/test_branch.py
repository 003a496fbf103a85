"""Branched CBS: recovers the CBS of a noisy quadratic model, and resumes after SIGKILL."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from batchlaw.sweep.branched import BranchStore, cbs_from_losses, measure_branched_cbs, run_trunk

# ------------------------------------------------------------------ an exact noisy quadratic model
# Loss 0.5 * sum_i h_i theta_i^2; a minibatch gradient of B examples is h_i theta_i + sqrt(c_i / B) xi_i.
# Under SGD with learning rate a, per coordinate (exactly):
#     E[theta_i^2] <- (1 - a h_i)^2 E[theta_i^2] + a^2 c_i / B
# so the expected loss after any schedule is analytic (Zhang et al. 2019, "Which algorithmic choices
# matter at which batch sizes?", section 3).
D = 20
H = 1.0 / np.arange(1, D + 1)
C = H.copy()
B0, LR0, BUDGET, THETA0 = 4, 0.15, 256, 2.0
REPLICAS = 20_000


def exact_loss_after(m: np.ndarray, lr: float, batch: int, steps: int) -> tuple[float, np.ndarray]:
    m = m.copy()
    for _ in range(steps):
        m = (1 - lr * H) ** 2 * m + lr**2 * C / batch
    return 0.5 * float(H @ m), m


def sgd(theta: np.ndarray, *, batch_size, lr, steps, seed) -> float:
    """Stochastic SGD on REPLICAS independent copies (in place); returns the mean loss."""
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        theta -= lr * (H * theta + np.sqrt(C / batch_size) * rng.standard_normal(theta.shape))
    return float(0.5 * (H * theta * theta).sum(axis=1).mean())


def test_exact_nqm_cbs_by_definition():
    """The known answers the measurement must recover (tolerance 1%, k = 1, 2, 4, 8)."""
    expected = {}
    for t in (0, 40, 200):
        _, m_t = exact_loss_after(np.full(D, THETA0**2), LR0, B0, t)
        losses = {k: [exact_loss_after(m_t, LR0 * k, B0 * k, BUDGET // (B0 * k))[0]] for k in (1, 2, 4, 8)}
        r = cbs_from_losses(losses, B0, tolerance=0.01)
        expected[t] = (r["cbs"], r["censored"])
    assert expected == {0: (32, "lower"), 40: (16, None), 200: (4, "upper")}


def test_branched_measurement_recovers_the_nqm_cbs(tmp_path):
    def save(theta, t):
        path = tmp_path / f"theta_{t}.npy"
        np.save(path, theta)
        return str(path)

    trunk = np.full((REPLICAS, D), THETA0)
    checkpoints = run_trunk(trunk, sgd, save, batch_size=B0, lr=LR0, points=[0, 40 * B0, 200 * B0], seed=1)
    store = tmp_path / "branches.db"
    res = measure_branched_cbs(checkpoints, np.load, sgd, base_batch=B0, lr=LR0, budget=BUDGET,
                               multipliers=(1, 2, 4, 8), tolerance=0.01, lr_rule="linear", store=store, name="nqm")
    got = [(p["t_examples"], p["cbs"], p["censored"]) for p in res.points]
    assert got == [(0, 32, "lower"), (160, 16, None), (800, 4, "upper")]
    # the loss ratios agree with the analytic ones within the simulation's noise
    _, m_t = exact_loss_after(np.full(D, THETA0**2), LR0, B0, 40)
    ref = exact_loss_after(m_t, LR0, B0, BUDGET // B0)[0]
    k8 = exact_loss_after(m_t, 8 * LR0, 8 * B0, BUDGET // (8 * B0))[0]
    rows = {b["k"]: b["loss"] for b in res.points[1]["branches"]}
    assert rows[8] / rows[1] == pytest.approx(k8 / ref, abs=0.006)
    # a larger tolerance can only give a larger (or equal) CBS
    for p in res.points:
        losses = {b["k"]: [b["loss"]] for b in p["branches"]}
        assert cbs_from_losses(losses, B0, tolerance=0.05)["cbs"] >= p["cbs"]
    with BranchStore(store) as st:
        assert st.count("nqm") == 12
    # a rerun finds every branch stored and trains nothing
    def boom(*a, **k):
        raise AssertionError("a finished branch was run again")
    again = measure_branched_cbs(checkpoints, np.load, boom, base_batch=B0, lr=LR0, budget=BUDGET,
                                 multipliers=(1, 2, 4, 8), tolerance=0.01, lr_rule="linear", store=store, name="nqm")
    assert again.points == res.points


_KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    from batchlaw.sweep.branched import measure_branched_cbs
    store, log = sys.argv[1], sys.argv[2]

    def load(ref):
        return {"ref": ref}

    def train(state, *, batch_size, lr, steps, seed):
        with open(log, "a") as fh:
            fh.write(f"{state['ref']} {batch_size}\\n")
        time.sleep(0.3)
        return 1.0 + 0.001 * batch_size

    measure_branched_cbs([(0, "a"), (64, "b")], load, train, base_batch=4, lr=0.1, budget=32,
                         multipliers=(1, 2, 4, 8), store=store, name="kill")
""")


@pytest.mark.slow  # two Python processes that import batchlaw
def test_resumes_after_sigkill_without_repeating_finished_branches(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(_KILL_SCRIPT)
    store, log1, log2 = tmp_path / "b.db", tmp_path / "log1", tmp_path / "log2"
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, str(script), str(store), str(log1)], env=env)
    deadline = time.time() + 60
    finished_before = set()
    try:
        while time.time() < deadline and proc.poll() is None:
            if store.exists():
                try:
                    with sqlite3.connect(store) as conn:
                        rows = conn.execute("SELECT result FROM branches").fetchall()
                except sqlite3.OperationalError:
                    rows = []
                if len(rows) >= 3:
                    break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    with BranchStore(store) as st:
        for r in st.branches("kill"):
            finished_before.add((r["spec"]["checkpoint"], r["spec"]["batch_size"]))
    assert 3 <= len(finished_before) < 8
    subprocess.run([sys.executable, str(script), str(store), str(log2)], env=env, check=True, timeout=120)
    rerun = {tuple(line.split()) for line in log2.read_text().splitlines()}
    rerun = {(ref, int(b)) for ref, b in rerun}
    assert not rerun & finished_before, "a branch that had finished before the kill was run again"
    assert rerun | finished_before == {(ref, 4 * k) for ref in "ab" for k in (1, 2, 4, 8)}
    with BranchStore(store) as st:
        assert st.count("kill") == 8


def test_bad_grids_are_refused(tmp_path):
    kw = dict(base_batch=4, lr=0.1, budget=32)
    with pytest.raises(ValueError, match="multiple"):
        measure_branched_cbs([(0, "a")], str, sgd, **{**kw, "budget": 30})
    with pytest.raises(ValueError, match="include 1"):
        measure_branched_cbs([(0, "a")], str, sgd, multipliers=(2, 4), **kw)
    with pytest.raises(ValueError, match="lr_rule"):
        measure_branched_cbs([(0, "a")], str, sgd, lr_rule="cube", **kw)
    with pytest.raises(ValueError, match="k = 1"):
        cbs_from_losses({2: [1.0]}, 4)
    st = BranchStore(tmp_path / "s.db")
    st.save_measurement("m", {"a": 1})
    with pytest.raises(ValueError, match="another configuration"):
        st.save_measurement("m", {"a": 2})
    st.close()


def test_cbs_rule_edges():
    r = cbs_from_losses({1: [1.0, 1.02], 2: [1.0], 4: [1.3], 8: [1.0]}, 8, tolerance=0.01)
    assert r["cbs"] == 16 and r["cbs_upper"] == 32 and r["non_monotone"]  # k=8 passing after k=4 failed: noise
    r = cbs_from_losses({1: [2.0], 2: [2.5]}, 8, tolerance=0.3, tolerance_kind="absolute")
    assert r["cbs"] == 8 and r["censored"] == "upper"
    r = cbs_from_losses({1: [2.0], 2: [float("nan")]}, 8)
    assert r["cbs"] == 8 and r["branches"][1]["loss"] == float("inf")
