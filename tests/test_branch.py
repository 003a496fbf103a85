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


# ------------------------------------------------------------------ what the user reads
def _result(losses_by_t: dict[int, dict[int, list[float]]], *, budget: int, base_batch: int = 4):
    from batchlaw.sweep.branched import BranchedCBS

    points = [{"t_examples": t, "t_tokens": None, **cbs_from_losses(losses, base_batch)}
              for t, losses in losses_by_t.items()]
    config = {"base_batch": base_batch, "multipliers": sorted(next(iter(losses_by_t.values()))), "budget": budget,
              "tolerance": 0.01, "tolerance_kind": "relative"}
    return BranchedCBS(points, config)


def test_counts_print_exactly_in_the_summary_and_the_page():
    from batchlaw.report.branch import branch_section, branch_summary

    res = _result({1028: {1: [2.0], 2: [2.001], 4: [2.5]}}, budget=1024)
    text = branch_summary(res)
    assert "loss after 1,024 examples" in text and "at 1,028" in text, text
    page = branch_section(res)
    assert "<td>1,028</td>" in page and "4 to 8" not in text.replace("8 to 16", "")  # CBS 8, next 16
    assert "8 to 16 at 1,028" in text


def test_non_monotone_checkpoints_are_flagged_in_the_table_the_summary_and_the_page():
    from batchlaw.cli.branch import format_branch
    from batchlaw.report.branch import branch_section, branch_summary

    res = _result({0: {1: [1.0], 2: [1.0], 4: [1.3], 8: [1.0]}, 400: {1: [1.0], 2: [1.0], 4: [1.0], 8: [1.3]}},
                  budget=64)
    assert [p["non_monotone"] for p in res.points] == [True, False]
    table = format_branch(res).splitlines()
    assert table[1].split()[2:4] == ["8-16", "!"] and "!" not in table[2], table
    assert table[3].startswith("! not monotone")
    assert "Not monotone at 0 examples seen" in branch_summary(res)
    page = branch_section(res)
    assert "<td>8 to 16 !</td>" in page and "! : not monotone" in page


def test_diverged_branches_are_null_with_a_status_in_valid_json():
    import json

    from batchlaw.report.branch import branch_section, branch_summary

    res = _result({0: {1: [1.0], 2: [1.005], 4: [float("inf")], 8: [float("nan")]}}, budget=64)
    assert res.points[0]["cbs"] == 8 and res.points[0]["branches"][2]["loss"] == float("inf")  # in memory
    doc = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    rows = doc["points"][0]["branches"]
    assert [(r["loss"], r["status"]) for r in rows[2:]] == [(None, "diverged"), (None, "diverged")]
    assert [r["status"] for r in rows[:2]] == ["ok", "ok"] and rows[0]["loss"] == 1.0
    assert "Diverged (a non-finite loss, counted as outside the tolerance): x4 at 0, x8 at 0" in branch_summary(doc)
    assert "x4: diverged*" in branch_section(doc)


def test_changing_only_the_tolerance_reanalyses_the_stored_branches(tmp_path):
    def train(state, *, batch_size, lr, steps, seed):
        return {4: 1.0, 8: 1.02, 16: 1.04, 32: 1.2}[batch_size]

    def boom(*a, **k):
        raise AssertionError("a stored branch was trained again")

    kw = dict(base_batch=4, lr=0.1, budget=64, multipliers=(1, 2, 4, 8), store=tmp_path / "b.db", name="tol")
    first = measure_branched_cbs([(0, "a")], str, train, tolerance=0.01, **kw)
    wider = measure_branched_cbs([(0, "a")], str, boom, tolerance=0.05, **kw)
    assert (first.points[0]["cbs"], wider.points[0]["cbs"]) == (4, 16)
    assert wider.config["tolerance"] == 0.05
    absolute = measure_branched_cbs([(0, "a")], str, boom, tolerance=0.03, tolerance_kind="absolute", **kw)
    assert absolute.points[0]["cbs"] == 8
    with pytest.raises(ValueError, match=r"another configuration \(budget: 64 stored, 128 now\)"):
        measure_branched_cbs([(0, "a")], str, boom, **{**kw, "budget": 128})


def test_a_file_that_is_not_a_store_is_refused_by_name(tmp_path):
    from batchlaw.sweep.store import StoreError

    bad = tmp_path / "notes.txt"
    bad.write_text("not a database, just text that is long enough to be read as a header" * 20)
    with pytest.raises(StoreError, match="notes.txt' cannot be used as a branch store"):
        BranchStore(bad)
    with pytest.raises(ValueError, match="is a directory"):
        BranchStore(tmp_path)


@pytest.mark.slow  # a CLI process with two workers that import torch
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads process states from /proc")
@pytest.mark.parametrize("command", ["branch", "sweep"])
def test_pool_workers_die_with_their_parent(tmp_path, command):
    from pathlib import Path

    tests = Path(__file__).resolve().parent
    markers = tmp_path / "started"
    markers.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tests.parent / "src"), str(tests),
                                                       os.environ.get("PYTHONPATH", "")]))
    # every branch takes >= 100 steps x 0.05 s: the workers are mid-branch when the parent dies
    workload = ["--workload", "custom_wl.faulty:Slow", "--workload-arg", f"marker_dir={markers}"]
    if command == "branch":
        args = ["--base-batch", "4", "--checkpoints", "0", "--budget", "800", "--multipliers", "1,2"]
    else:  # every trial takes >= 100 steps x 0.05 s
        args = ["--batch-sizes", "4,8", "--target-loss", "1e-9", "--max-steps", "400", "--lr-points", "1",
                "--max-extensions", "0", "--lr-refine", "0"]
    cmd = [sys.executable, "-m", "batchlaw", command, *workload, *args, "--store", str(tmp_path / "b.db"),
           "--jobs", "2", "--no-progress"]
    parent = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 240
        def started() -> list[int]:  # the parent leaves a marker too, checking the workload
            return [int(p.name) for p in markers.iterdir() if int(p.name) != parent.pid]

        while time.time() < deadline and parent.poll() is None and len(started()) < 2:
            time.sleep(0.2)
        workers = started()
        assert len(workers) == 2 and parent.poll() is None, (workers, parent.poll(), parent.stderr.read())
        os.kill(parent.pid, signal.SIGKILL)
    finally:
        parent.kill()
        parent.wait()

    def alive(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return False
        return state not in ("Z", "X")  # a zombie has ended

    deadline = time.time() + 10
    while time.time() < deadline and any(alive(w) for w in workers):
        time.sleep(0.2)
    survivors = [w for w in workers if alive(w)]
    for w in survivors:  # do not leave them behind
        os.kill(w, signal.SIGKILL)
    assert not survivors, "workers outlived their parent by 10 s"
