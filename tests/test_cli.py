"""The command line, run as a user runs it."""

import json
import math
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

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
    assert main(["measure", "--workload", "bytemlp", "--steps", "80", "--no-progress", "--windows", "2"]) == 0
    out = capsys.readouterr().out
    assert "noise-scale trace" in out and "B_simple =" in out and "examples" in out


def test_too_short_run_says_why(capsys):
    assert main(["measure", "--workload", "linreg", "--steps", "12", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "no estimate" in out and "at least 10" in out


def test_diverged_training_exits_1_with_a_named_error(capsys):
    """A NaN training loss used to end in "no estimate" and exit status 0."""
    assert main(["measure", "--workload", "linreg", "--lr", "100", "--steps", "60", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("batchlaw: error: The training loss of workload 'linreg' became") and err.count("\n") == 1
    assert "diverged" in err and "Lower the learning rate (--lr)" in err


def test_diverged_training_raises_training_diverged_error():
    from batchlaw.errors import TrainingDivergedError
    from batchlaw.measure import measure_noise

    with pytest.raises(TrainingDivergedError, match="became (nan|inf) at step") as info:
        measure_noise("linreg", lr=100.0, steps=60, progress=False)
    assert 0 < info.value.step < 60 and not math.isfinite(info.value.loss)


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


@pytest.mark.slow
def test_demo_runs_the_whole_story(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "batchlaw", "demo", "--no-progress", "--json", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    check = out["check"]
    assert check["estimate"]["ci"][0] <= check["analytic_b_simple"] <= check["estimate"]["ci"][1]
    assert out["measure"]["estimate"]["b_simple"] > 0
    fit = out["sweep"]["fit"]
    assert fit["b_crit_ci"][0] <= fit["b_crit"] <= fit["b_crit_ci"][1] and fit["unit"] == "examples"
    assert (tmp_path / "report.html").exists() and (tmp_path / "demo.db").exists()
    # section 4: the controller against the constant batches, its plot in the report
    compare = out["compare"]
    ctl = compare["schedules"]["controller"]
    assert compare["schema"] == "batchlaw.schedule_compare/2" and ctl["reached"] == 2
    assert ctl["branch_examples"]["mean"] > 0 and all(r["controller"]["decisions"] for r in ctl["runs"])
    page = (tmp_path / "report.html").read_text()
    assert "the controller against every constant batch" in page and (tmp_path / "compare.png").exists()
    # the README states what the demo prints: its numbers are these
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    text = " ".join(readme[readme.index("`make demo` writes"):].split("\n\n")[0].split())
    m = re.search(r"`B_crit` = ([\d,]+) examples", text)
    assert m and float(m.group(1).replace(",", "")) == pytest.approx(fit["b_crit"], rel=0.02)
    m = re.search(r"Pareto gain (-?[\d.]+) \(95% CI (-?[\d.]+) to (-?[\d.]+)\), ([\d,]+) examples and ([\d,]+) steps "
                  r"to the target, of which its branch tests took ([\d,]+) examples", text)
    assert m, text
    gain, lo, hi, examples, steps, branch = (float(g.replace(",", "")) for g in m.groups())
    g = ctl["pareto_gain"]
    assert (gain, lo, hi) == pytest.approx((g["mean"], *g["ci"]), abs=0.006)
    assert examples == pytest.approx(ctl["examples"]["mean"], rel=0.01)
    assert steps == pytest.approx(ctl["steps"]["mean"], rel=0.01)
    assert branch == ctl["branch_examples"]["mean"]


def _write_csv(path, rows, header="batch,steps,model"):
    path.write_text(header + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")


def test_fit_cbs_json_schema_and_groups(tmp_path, capsys):
    import numpy as np

    from batchlaw.fit import steps_law

    rows = []
    for model, b_crit in (("small", 100.0), ("big", 400.0)):
        for b in (16, 32, 64, 128, 256, 512, 1024):
            rows.append((b, float(steps_law(b, 2000.0, b_crit)) * np.exp(0.02 * np.sin(b)), model))
    csv = tmp_path / "runs.csv"
    _write_csv(csv, rows)
    assert main(["fit", "cbs", str(csv), "--batch-col", "batch", "--steps-col", "steps", "--group-col", "model",
                 "--reference-batch", "16", "--json", "--bootstrap", "200"]) == 0
    out = json.loads(capsys.readouterr().out)
    groups = {g["group"]: g for g in out["groups"]}
    assert set(groups) == {"small", "big"}
    for name, b_crit in (("small", 100.0), ("big", 400.0)):
        g = groups[name]
        assert {"group", "n_points", "s_min", "e_min", "b_crit", "b_crit_ci", "cbs", "reference_batch"} <= set(g)
        assert g["b_crit"] == pytest.approx(b_crit, rel=0.1) and g["b_crit_ci"][0] <= g["b_crit"] <= g["b_crit_ci"][1]
        assert g["cbs"] == pytest.approx(1.2 * 16 + g["b_crit"] / 5) and g["n_points"] == 7
    assert main(["fit", "cbs", str(csv), "--batch-col", "batch", "--steps-col", "steps"]) == 0
    assert "B_crit =" in capsys.readouterr().out


def test_fit_cbs_bad_columns_and_values(tmp_path, capsys):
    csv = tmp_path / "runs.csv"
    _write_csv(csv, [(16, 100, "a"), (32, 60, "a"), (64, 40, "a")])
    assert main(["fit", "cbs", str(csv), "--batch-col", "bsz", "--steps-col", "steps"]) == 2
    err = capsys.readouterr().err
    assert "'bsz' not found" in err and "'batch', 'steps', 'model'" in err
    _write_csv(csv, [(16, 100, "a"), (32, "n/a", "a")])
    assert main(["fit", "cbs", str(csv), "--batch-col", "batch", "--steps-col", "steps"]) == 2
    assert "line 3" in capsys.readouterr().err
    _write_csv(csv, [(16, 100, "a"), (32, 60, "a")])
    assert main(["fit", "cbs", str(csv), "--batch-col", "batch", "--steps-col", "steps", "--json"]) == 1
    assert "at least 3 distinct batch sizes" in capsys.readouterr().out
    assert main(["fit", "cbs", str(tmp_path / "nope.csv"), "--batch-col", "b", "--steps-col", "s"]) == 2


def test_sweep_then_report(tmp_path, capsys):
    db = tmp_path / "s.db"
    args = ["sweep", "--workload", "linreg", "--workload-arg", "condition=100", "--workload-arg", "init_distance=4",
            "--batch-sizes", "2,8,32,128", "--target-loss", "0.6", "--lr-base", "0.1", "--lr-scaling", "0.7",
            "--eval-every", "1", "--store", str(db), "--jobs", "1", "--no-progress", "--csv", str(tmp_path / "t.csv")]
    assert main(args + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["schema"] == "batchlaw.sweep/1" and len(out["points"]) == 4
    assert (tmp_path / "t.csv").read_text().startswith("sweep,key")
    assert main(["report", str(db), "--out", str(tmp_path / "rep")]) == 0
    text = capsys.readouterr().out
    assert "report:" in text and "steps to target" in text
    html = (tmp_path / "rep" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "critical batch size" in html
    assert (tmp_path / "rep" / "trials.csv").exists()
    assert main(["report", str(tmp_path / "missing.db"), "--out", str(tmp_path / "r2")]) == 2


# ------------------------------------------------------------------ hardening: one-line errors, checked before work
def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("batchlaw: error: "), err
    for n in needles:
        assert n in err, err
    return err


_TINY_SWEEP = ["sweep", "--workload", "linreg", "--batch-sizes", "4,16", "--target-loss", "0.9", "--max-steps", "20",
               "--lr-points", "1", "--max-extensions", "0", "--jobs", "1", "--no-progress"]


def test_sweep_csv_path_checked_before_the_sweep(tmp_path, capsys):
    db = tmp_path / "s.db"
    assert main(_TINY_SWEEP + ["--store", str(db), "--csv", str(tmp_path / "nope" / "t.csv")]) == 2
    _one_line_error(capsys, "'--csv'", "does not exist")
    assert not db.exists()  # nothing ran
    assert main(_TINY_SWEEP + ["--store", str(db), "--csv", str(tmp_path)]) == 2
    _one_line_error(capsys, "is a directory")


@pytest.mark.parametrize("option,value,msg", [
    ("--lr-factor", "inf", "'lr_factor' parameter must be a finite number > 1. Got inf"),
    ("--lr-factor", "nan", "'lr_factor' parameter must be a finite number > 1. Got nan"),
    ("--lr-scaling", "nan", "'lr_scaling' parameter must be a finite number"),
    ("--lr-scaling", "-inf", "'lr_scaling' parameter must be a finite number"),
    ("--lr-base", "inf", "'lr_base' parameter must be a finite number > 0"),
    ("--target-loss", "nan", "'target_loss' parameter must be a finite number > 0"),
    ("--eval-every", "0", "'eval_every' parameter must be a positive integer"),
    ("--seeds", "-1", "'seeds' parameter must be an integer >= 0"),
    ("--lr-points", "100000", "'lr_points' parameter must be at most 100"),
    ("--jobs", "0", "'jobs' parameter must be a positive integer"),
])
def test_sweep_options_validated_at_the_boundary(tmp_path, capsys, option, value, msg):
    db = tmp_path / "s.db"
    args = [a for a in _TINY_SWEEP]
    if option in args:
        i = args.index(option)
        del args[i:i + 2]
    assert main(args + ["--store", str(db), f"{option}={value}"]) == 2
    _one_line_error(capsys, msg)
    assert not (db.exists() and sqlite3.connect(db).execute("SELECT COUNT(*) FROM trials").fetchone()[0])


def test_report_out_that_is_a_file(tmp_path, capsys):
    db = tmp_path / "s.db"
    assert main(_TINY_SWEEP + ["--store", str(db)]) == 0
    capsys.readouterr()
    (tmp_path / "f").write_text("x")
    assert main(["report", str(db), "--out", str(tmp_path / "f")]) == 2
    _one_line_error(capsys, "'--out'", "is not a directory")
    assert main(["report", str(db), "--out", str(tmp_path / "f" / "sub")]) == 2
    _one_line_error(capsys, "is not a directory")
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    _one_line_error(capsys, "is a directory")


def test_target_nobody_reaches_says_what_to_do(tmp_path, capsys):
    args = [a if a != "0.9" else "0.01" for a in _TINY_SWEEP]
    assert main(args + ["--store", str(tmp_path / "s.db"), "--batch-sizes", "4,8,16"]) == 0
    out = capsys.readouterr().out
    assert "target 0.01 not reached by any batch size within the budget; best loss" in out
    assert "raise the target loss" in out and "needs" not in out


def test_csv_with_bom_directory_and_bad_encoding(tmp_path, capsys):
    from batchlaw.fit import steps_law

    rows = "".join(f"{b},{float(steps_law(b, 1000.0, 100.0))}\n" for b in (16, 32, 64, 128, 256))
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbfbatch,steps\n" + rows.encode())
    assert main(["fit", "cbs", str(bom), "--batch-col", "batch", "--steps-col", "steps", "--bootstrap", "100"]) == 0
    assert "B_crit =" in capsys.readouterr().out
    assert main(["fit", "cbs", str(tmp_path), "--batch-col", "batch", "--steps-col", "steps"]) == 2
    _one_line_error(capsys, str(tmp_path), "is a directory")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("batch,steps,note\n16,100,caf\xe9\n".encode("latin-1"))
    assert main(["fit", "cbs", str(latin), "--batch-col", "batch", "--steps-col", "steps"]) == 2
    _one_line_error(capsys, str(latin), "not UTF-8")


def test_unexpected_errors_are_one_line_too(monkeypatch, capsys):
    from batchlaw.cli.fit import curve as fit_cli

    # a bug in batchlaw: the failing function's code lives in batchlaw's own file
    namespace: dict = {}
    exec(compile("def boom(args):\n    raise ZeroDivisionError('float division by zero')\n", fit_cli.__file__, "exec"),
         namespace)
    monkeypatch.setattr(fit_cli, "_cmd_fit_curve", namespace["boom"])
    monkeypatch.delenv("BATCHLAW_DEBUG", raising=False)
    assert main(["fit", "curve", "x.csv", "--step-col", "s", "--loss-col", "l"]) == 3
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "internal error: ZeroDivisionError: float division by zero" in err and "BATCHLAW_DEBUG=1" in err


def test_errors_raised_in_the_users_own_file_are_theirs_not_batchlaws(monkeypatch, capsys):
    from batchlaw.cli.fit import curve as fit_cli

    def boom(args):
        return {}["missing"]  # the user's line

    monkeypatch.setattr(fit_cli, "_cmd_fit_curve", boom)
    monkeypatch.delenv("BATCHLAW_DEBUG", raising=False)
    assert main(["fit", "curve", "x.csv", "--step-col", "s", "--loss-col", "l"]) == 4
    err = capsys.readouterr().err
    line = boom.__code__.co_firstlineno + 1
    assert err.startswith(f"batchlaw: error in your workload or model ({os.path.relpath(__file__)}:{line}): "
                          "KeyError: 'missing'. This is not a bug in batchlaw") and err.count("\n") == 1, err


def _all_parsers():
    import argparse

    from batchlaw.cli import build_parser

    todo, out = [("batchlaw", build_parser())], []
    while todo:
        name, p = todo.pop()
        out.append((name, p))
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                todo.extend((f"{name} {n}", sp) for n, sp in a.choices.items())
    return out


@pytest.mark.parametrize("command", [n for n, _ in sorted(_all_parsers(), key=lambda x: x[0])])
def test_help_on_every_option_and_no_literal_percent(command):
    import argparse

    parser = dict(_all_parsers())[command]
    for a in parser._actions:
        if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
            assert a.help, f"{command}: {a.option_strings or a.dest} has no help"
    assert "%%" not in parser.format_help()


def test_a_closed_pipe_ends_quietly_like_a_unix_tool(tmp_path):
    """``batchlaw ... | head``: the reader goes away before batchlaw writes; no message, exit 141 (128 + SIGPIPE)."""
    rows = [(b, 2000.0 * (1 + 100.0 / b), "m") for b in (16, 32, 64, 128, 256, 512, 1024)]
    csv = tmp_path / "runs.csv"
    _write_csv(csv, rows)
    proc = subprocess.Popen([sys.executable, "-m", "batchlaw", "fit", "cbs", str(csv), "--batch-col", "batch",
                             "--steps-col", "steps", "--bootstrap", "100"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before a byte is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == "", err


@pytest.mark.parametrize("option,path,message", [
    ("--out", "{tmp}/missing/compare.json", "The directory of the '--out' path"),
    ("--out", "{tmp}", "The '--out' path '{tmp}' is a directory"),
    ("--store", "{tmp}/missing/b.db", "The directory of the '--store' path"),
])
def test_schedule_compare_checks_its_output_paths_before_training(tmp_path, capsys, option, path, message):
    argv = ["schedule", "compare", "--workload", "linreg", "--target-loss", "0.01", "--seeds", "0",
            "--schedules", "constant_small", "--max-examples", "2048", option, path.format(tmp=tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message.format(tmp=tmp_path) in err and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []  # nothing written: refused before the runs


@pytest.mark.parametrize("argv, name", [
    (["measure", "--workload", "linreg", "--steps", "4", "--lr", "1e308", "--no-progress"], "lr"),
    (["branch", "--workload", "linreg", "--base-batch", "4", "--lr", "1e308", "--checkpoints", "0", "--multipliers",
      "1,2", "--budget", "16", "--no-progress"], "lr"),
    (["schedule", "compare", "--workload", "linreg", "--target-loss", "1", "--lr", "1e308", "--no-progress"], "lr"),
    (["schedule", "compare", "--workload", "linreg", "--target-loss", "1", "--lr-cap", "1e31", "--no-progress"],
     "lr_cap"),
    (["sweep", "--workload", "linreg", "--lr-base", "1e308", "--batch-sizes", "4,8", "--target-loss", "1",
      "--no-progress"], "lr_base"),
])
def test_a_learning_rate_beyond_float32_is_refused_by_name(argv, name, capsys, tmp_path):
    """A deep fuzz find: --lr 1e308 reached torch, whose float32 update raised 'value cannot be converted to type
    float without overflow', reported as an internal error by branch, measure and schedule compare."""
    if argv[0] in ("branch", "sweep"):
        argv = argv + ["--store", str(tmp_path / "s.db")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"The '{name}' parameter must be at most 1e+30" in err and "internal error" not in err, err


@pytest.mark.parametrize("argv", [["schedule", "compare", "--target-loss", "1", "--schedules=--"],
                                  ["fit", "cbs", "x.csv", "--batch-col=--", "--steps-col", "s"],
                                  ["measure", "--steps=--"]])
def test_an_option_given_as_equals_double_dash_is_refused_as_missing(argv, capsys):
    """A deep fuzz find: argparse turns "--schedules=--" into an empty list, whatever the option's type, and schedule
    compare then failed with an internal error. It is refused like "--schedules --": the value is missing."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    opt = next(a for a in argv if a.endswith("=--")).partition("=")[0]
    assert f"batchlaw: error: argument {opt}: expected one argument" in capsys.readouterr().err
