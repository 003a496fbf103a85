"""The schedule comparison and the branch command, end to end on tiny settings."""

from __future__ import annotations

import json

import pytest

from batchlaw.cli import main
from batchlaw.schedule import ConstantBatch, FixedRamp
from batchlaw.schedule.compare import CompareConfig, train_to_target
from batchlaw.workloads import LinearRegression


def test_train_to_target_counts_steps_and_examples_of_a_ramp():
    wl = LinearRegression(dim=8, noise_std=0.5, init_distance=3.0)
    const = train_to_target(wl, ConstantBatch(8, lr=0.05, lr_rule="linear"), seed=0, target_loss=0.2,
                            max_examples=20_000, eval_every=64)
    ramp = train_to_target(wl, FixedRamp([(0, 8), (64, 32)], lr=0.05, lr_rule="linear", max_micro_batch=8), seed=0,
                           target_loss=0.2, max_examples=20_000, eval_every=64)
    assert const["status"] == ramp["status"] == "reached"
    assert const["examples"] == pytest.approx(8 * const["steps"])
    assert ramp["batches"][0] == [0, 0, 8] and ramp["batches"][1] == [8, 64, 32]
    # examples = 8 per step for 8 steps, then 32 per step
    assert ramp["examples"] == pytest.approx(64 + 32 * (ramp["steps"] - 8), rel=1e-9)
    assert ramp["steps"] < const["steps"]


def test_compare_cli_json_schema(capsys, tmp_path):
    rc = main(["schedule", "compare", "--workload", "linreg", "--workload-arg", "dim=8", "--target-loss", "0.7",
               "--seeds", "0,1", "--small-batch", "4", "--large-batch", "16", "--lr", "0.02", "--eval-every", "32",
               "--max-examples", "8000", "--json", "--store", str(tmp_path / "b.db")])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "batchlaw.schedule_compare/1"
    assert set(doc["schedules"]) == {"constant_small", "constant_large", "noise_ramp", "cbs_ramp", "seesaw"}
    small = doc["schedules"]["constant_small"]
    assert small["reached"] == 2 and small["steps_ratio"]["mean"] == pytest.approx(1.0)
    for name, s in doc["schedules"].items():
        assert {"steps", "examples", "tokens", "wall_s", "steps_ratio", "examples_ratio"} <= set(s)
        if s["reached"] == 2:
            lo, hi = s["steps"]["ci"]
            assert lo <= s["steps"]["mean"] <= hi
    assert doc["cbs_measurement"]["schema"] == "batchlaw.branch/1"
    assert isinstance(doc["goal"]["met"], bool)


def test_compare_config_is_validated():
    with pytest.raises(ValueError, match="large_batch"):
        CompareConfig(small_batch=8, large_batch=8)
    with pytest.raises(ValueError, match="schedules"):
        CompareConfig(schedules=("constant_small", "warp"))


def test_branch_cli_writes_html_and_json(capsys, tmp_path):
    html = tmp_path / "cbs.html"
    args = ["branch", "--workload", "linreg", "--workload-arg", "dim=8", "--base-batch", "4", "--lr", "0.02",
            "--checkpoints", "0,400", "--multipliers", "1,2,4", "--budget", "128", "--store", str(tmp_path / "b.db"),
            "--html", str(html), "--json"]
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "batchlaw.branch/1" and [p["t_examples"] for p in doc["points"]] == [0, 400]
    assert doc["points"][1]["b_simple"] is not None
    page = html.read_text()
    assert "CBS / B_simple" in page and "data:image/png;base64" in page
    assert main(args[:-1]) == 0  # resumed: nothing re-run, a table this time
    assert "examples seen" in capsys.readouterr().out
    assert main(["branch", "--workload", "linreg", "--base-batch", "4", "--checkpoints", "0", "--budget", "30",
                 "--store", str(tmp_path / "c.db")]) == 2
