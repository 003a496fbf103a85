"""The command line, run as a user runs it."""

import json
import subprocess
import sys

import pytest

from batchlaw.cli import main


def test_measure_json_schema(capsys):
    assert main(["measure", "--workload", "linreg", "--steps", "60", "--no-progress", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["schema"] == "batchlaw.measure/1"
    assert set(out) >= {"workload", "config", "estimate", "trace", "eval_losses", "skipped_steps", "wall_time_s"}
    est = out["estimate"]
    assert est["unit"] == "examples" and est["n_steps"] == 30
    assert len(est["ci"]) == 2 and est["b_simple"] > 0
    assert out["config"]["batch_size"] == 4 * out["config"]["micro_batch_size"]
    assert {"step_start", "step_end", "b_simple", "ci", "unit", "note"} <= set(out["trace"][0])


def test_measure_table(capsys):
    assert main(["measure", "--workload", "bytemlp", "--steps", "40", "--no-progress", "--windows", "2"]) == 0
    out = capsys.readouterr().out
    assert "noise-scale trace" in out and "B_simple =" in out and "examples" in out


def test_too_short_run_says_why(capsys):
    assert main(["measure", "--workload", "linreg", "--steps", "12", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "no estimate" in out and "at least 10" in out


@pytest.mark.parametrize(
    "args,msg",
    [
        (["--accumulation", "1"], "'accumulation' parameter must be an integer >= 2. Got 1"),
        (["--steps", "-5"], "'steps' parameter must be a positive integer. Got -5"),
        (["--workload", "mnist"], "'workload' parameter must be one of"),
        (["--lr", "0"], "'lr' parameter must be a finite number > 0. Got 0.0"),
    ],
)
def test_bad_arguments_exit_2_with_message(capsys, args, msg):
    assert main(["measure", "--no-progress", *args]) == 2
    assert msg in capsys.readouterr().err


def test_help_on_every_command():
    for cmd in ([], ["measure"], ["demo"]):
        proc = subprocess.run([sys.executable, "-m", "batchlaw", *cmd, "--help"], capture_output=True, text=True)
        assert proc.returncode == 0 and "usage: batchlaw" in proc.stdout


def test_demo_runs_and_checks_known_answer():
    proc = subprocess.run([sys.executable, "-m", "batchlaw", "demo", "--no-progress", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    check = out["check"]
    assert check["estimate"]["ci"][0] <= check["analytic_b_simple"] <= check["estimate"]["ci"][1]
    assert out["measure"]["estimate"]["b_simple"] > 0
