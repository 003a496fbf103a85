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
