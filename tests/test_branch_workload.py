"""Branched CBS on a built-in workload: the same answer in this process and in a process pool."""

from __future__ import annotations

import pytest

from batchlaw.sweep.branched import BranchStore, make_branch_executor
from batchlaw.sweep.branched_workload import WorkloadBranchConfig, measure_workload_cbs


@pytest.mark.slow  # starts two worker processes that import torch
def test_pool_and_in_process_give_the_same_branches(tmp_path):
    cfg = WorkloadBranchConfig(workload="linreg", base_batch=4, lr=0.02, checkpoints=(0, 400), budget=64,
                               multipliers=(1, 2, 4), workload_kwargs={"dim": 8})
    here = measure_workload_cbs(cfg, tmp_path / "a.db")
    pool = make_branch_executor("local", jobs=2)
    try:
        there = measure_workload_cbs(cfg, tmp_path / "b.db", executor=pool)
    finally:
        pool.close()
    assert [[b["loss"] for b in p["branches"]] for p in here.points] == \
           [[b["loss"] for b in p["branches"]] for p in there.points]
    assert here.points[1]["b_simple"] is not None and here.points[1]["b_simple"] > 0
    assert here.trace and here.config["lr_rule"] == "linear"  # linreg trains with SGD
    with BranchStore(tmp_path / "a.db") as st:
        n = st.count(cfg.name)
    again = measure_workload_cbs(cfg, tmp_path / "a.db")  # resumed: nothing new is trained
    with BranchStore(tmp_path / "a.db") as st:
        assert st.count(cfg.name) == n == 6
    assert again.points == here.points


def test_workload_config_is_validated():
    with pytest.raises(ValueError, match="multiple of the base batch"):
        WorkloadBranchConfig(workload="linreg", base_batch=4, lr=0.02, checkpoints=(0, 6), budget=64)
    with pytest.raises(ValueError, match="micro_batches"):
        WorkloadBranchConfig(workload="linreg", base_batch=5, lr=0.02, checkpoints=(0,), budget=40,
                             multipliers=(1, 2))


def test_names_seeds_and_the_rule_are_checked_before_any_work():
    kw = dict(workload="linreg", base_batch=4, lr=0.02, checkpoints=(0,), budget=32)
    with pytest.raises(ValueError, match="'name' parameter .* without '/'.* Got 'a/b'"):
        WorkloadBranchConfig(name="a/b", **kw)
    with pytest.raises(ValueError, match="'name' parameter"):
        WorkloadBranchConfig(name=" ", **kw)
    with pytest.raises(ValueError, match="'seeds' parameter must be an integer from -2\\*\\*31"):
        WorkloadBranchConfig(seeds=(2**40,), **kw)
    with pytest.raises(ValueError, match="'trunk_seed' parameter"):
        WorkloadBranchConfig(trunk_seed=1.5, **kw)
    with pytest.raises(ValueError, match="'tolerance' parameter must be a finite number >= 0. Got nan"):
        WorkloadBranchConfig(tolerance=float("nan"), **kw)
    with pytest.raises(ValueError, match="'tolerance_kind' parameter"):
        WorkloadBranchConfig(tolerance_kind="percent", **kw)


_CLI = ["branch", "--workload", "linreg", "--workload-arg", "dim=4", "--base-batch", "4", "--lr", "0.02",
        "--checkpoints", "0,40", "--budget", "16", "--multipliers", "1,2", "--no-progress"]


@pytest.mark.parametrize("extra,message", [
    (["--html", "{tmp}/missing/r.html"], "The directory of the '--html' path"),
    (["--html", "{tmp}"], "The '--html' path '{tmp}' is a directory"),
    (["--name", "a/b"], "The 'name' parameter must be 1 to 200 characters without '/'"),
    (["--tolerance", "-1"], "The 'tolerance' parameter must be a finite number >= 0"),
    (["--seeds=0,99999999999"], "The 'seeds' parameter must be an integer"),
])
def test_cli_refuses_bad_options_and_paths_before_training(tmp_path, capsys, extra, message):
    from batchlaw.cli import main

    store = tmp_path / "b.db"
    rc = main([*_CLI, "--store", str(store), *[e.format(tmp=tmp_path) for e in extra]])
    err = capsys.readouterr().err
    assert rc == 2 and message.format(tmp=tmp_path) in err and err.count("\n") == 1, err
    assert not store.exists() and not (tmp_path / "b.db.ckpt").exists()  # nothing trained, nothing written
    rc = main([*_CLI, "--store", str(tmp_path / "missing" / "b.db")])
    assert rc == 2 and "The directory of the '--store' path" in capsys.readouterr().err


def test_cli_json_is_valid_with_diverged_branches(tmp_path, capsys):
    import json

    from batchlaw.cli import main

    rc = main(["branch", "--workload", "custom_wl.faulty:UnstableAtLargeBatch", "--workload-arg", "max_stable=4",
               "--base-batch", "4", "--lr", "0.05", "--checkpoints", "0", "--budget", "16", "--multipliers", "1,2,4",
               "--store", str(tmp_path / "b.db"), "--no-progress", "--json"])
    out = capsys.readouterr()
    assert rc == 0, out.err

    def refuse(name):
        raise AssertionError(f"{name} is not JSON")

    doc = json.loads(out.out, parse_constant=refuse)
    rows = doc["points"][0]["branches"]
    assert [(r["k"], r["status"], r["loss"] is None) for r in rows] == [(1, "ok", False), (2, "diverged", True),
                                                                         (4, "diverged", True)]
    assert doc["points"][0]["cbs"] == 4 and doc["points"][0]["censored"] == "upper"
