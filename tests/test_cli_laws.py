"""The scaling-law and plan commands on the example CSVs (synthetic runs from known laws)."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from batchlaw.cli import main

EX = Path(__file__).resolve().parent.parent / "examples"


def _json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_fit_chinchilla_json(capsys):
    out = _json(capsys, ["fit", "chinchilla", str(EX / "chinchilla_runs.csv"), "--params-col", "params",
                         "--tokens-col", "tokens", "--loss-col", "loss", "--bootstrap", "200", "--compute", "5.88e23",
                         "--json"])
    assert {"E", "A", "B", "alpha", "beta", "n_points", "ci", "allocation"} <= set(out)
    assert set(out["allocation"]) >= {"compute", "params", "tokens", "tokens_per_param"}
    for k in ("E", "alpha", "beta"):
        lo, hi = out["ci"][k]
        assert lo <= out[k] <= hi
    assert out["n_points"] == 56 and out["extrapolation"]["median_abs_rel_error"] < 0.05


def test_fit_chinchilla_compute_column_and_bad_column(tmp_path, capsys):
    rows = (EX / "chinchilla_runs.csv").read_text().splitlines()
    conv = ["params,compute,loss"] + [f"{n},{6 * float(n) * float(d)},{l}" for n, d, l in (r.split(",") for r in rows[1:])]
    (tmp_path / "c.csv").write_text("\n".join(conv))
    out = _json(capsys, ["fit", "chinchilla", str(tmp_path / "c.csv"), "--params-col", "params", "--compute-col",
                         "compute", "--loss-col", "loss", "--bootstrap", "0", "--json"])
    assert out["n_points"] == 56
    assert main(["fit", "chinchilla", str(tmp_path / "c.csv"), "--params-col", "N", "--compute-col", "compute",
                 "--loss-col", "loss"]) == 2
    assert "Columns that exist: 'params', 'compute', 'loss'" in capsys.readouterr().err


def test_fit_isoflop_json(capsys):
    out = _json(capsys, ["fit", "isoflop", str(EX / "isoflop_runs.csv"), "--params-col", "params", "--tokens-col",
                         "tokens", "--budget-col", "budget", "--loss-col", "loss", "--bootstrap", "200", "--json"])
    assert len(out["optima"]) == 5
    assert out["params_law"]["exponent"] == pytest.approx(0.5126, abs=0.02)


def test_fit_hparams_json(capsys):
    out = _json(capsys, ["fit", "hparams", str(EX / "hparam_grid.csv"), "--lr-col", "lr", "--batch-col", "batch_seqs",
                         "--loss-col", "loss", "--params-col", "params", "--tokens-col", "tokens", "--seq-len", "2048",
                         "--bootstrap", "200", "--group-bootstrap", "20", "--json"])
    assert {"coef", "exp_params", "exp_tokens", "ci"} <= set(out["lr_law"])
    assert all(o["lr_ci"][0] <= o["lr"] <= o["lr_ci"][1] for o in out["optima"])
    assert {"coef", "exp_tokens", "ci"} <= set(out["batch_law"])
    assert out["batch_unit"] == "tokens"
    assert {"params", "tokens", "lr", "batch", "loss"} <= set(out["optima"][0])
    assert out["lr_law"]["exp_params"] == pytest.approx(-0.713, abs=0.03)
    assert out["batch_law"]["exp_tokens"] == pytest.approx(0.571, abs=0.03)


def test_fit_curve_json(capsys):
    out = _json(capsys, ["fit", "curve", str(EX / "learning_curve.csv"), "--step-col", "step", "--loss-col", "loss",
                         "--predict-at", "20000", "--bootstrap", "200", "--json"])
    lo, hi = out["prediction"]["interval"]
    assert lo <= 2.0 + 5.0 * 20000**-0.3 <= hi
    assert "rel_error" in out["backtest"]


def test_fit_curve_warmup_steps_leave_out_the_rows_before_twice_the_warmup(capsys):
    base = ["fit", "curve", str(EX / "learning_curve.csv"), "--step-col", "step", "--loss-col", "loss",
            "--bootstrap", "50", "--json"]
    assert _json(capsys, base)["n_points"] == 100
    out = _json(capsys, base + ["--warmup-steps", "200"])  # rows at steps 100, 200, 300 are left out
    assert out["n_points"] == 97 and out["backtest"]["fit_points"] == 47
    assert main(base + ["--warmup-steps", "-5"]) == 2
    assert "--warmup-steps must be a finite number of steps >= 0; got -5" in capsys.readouterr().err


def test_plan_answers_the_doubling_question(capsys):
    argv = ["plan", "--b-crit", "1000", "--gpus", "16,32", "--micro-batch", "128", "--tokens", "2e10",
            "--seq-len", "2048", "--tokens-per-sec", "3000", "--price", "2.5"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "16 -> 32 GPUs" in text and "poor value" in text and "recommendation: 4 GPUs" in text
    out = _json(capsys, argv + ["--json"])
    assert out["schema"] == "batchlaw.plan/1" and out["recommended_gpus"] == 4
    assert [r["global_batch"] for r in out["rows"]] == [2048, 4096]


def test_plan_from_compute_budget(capsys):
    out = _json(capsys, ["plan", "--b-crit-tokens", "4e6", "--gpus", "64,128,256", "--micro-batch", "8",
                         "--compute", "1e22", "--inference-tokens", "1e12", "--peak-flops", "9.9e14", "--json"])
    assert out["compute_optimal"]["tokens_per_param"] > 10
    assert out["inference_aware"]["params"] < out["compute_optimal"]["params"]
    assert all(r["wall_clock_h"] > 0 for r in out["rows"])
    assert main(["plan", "--b-crit-law", "0.5:0.5", "--gpus", "8", "--micro-batch", "4"]) == 2
    assert "--tokens" in capsys.readouterr().err


def test_fit_powerlaw_for_cbs_laws(tmp_path, capsys):
    import numpy as np

    rng = np.random.default_rng(0)
    rows = ["cbs,tokens,params"]
    for d in np.geomspace(1e9, 1e11, 5):
        for n in (8.5e7, 3e8, 1.2e9):
            rows.append(f"{0.02 * d**0.45 * n**0.087 * np.exp(0.05 * rng.standard_normal()):.4g},{d:.4g},{n:.4g}")
    (tmp_path / "cbs.csv").write_text("\n".join(rows))
    out = _json(capsys, ["fit", "powerlaw", str(tmp_path / "cbs.csv"), "--y-col", "cbs", "--x-col", "tokens",
                         "--x-col", "params", "--bootstrap", "300", "--json"])
    assert out["exponents"]["tokens"] == pytest.approx(0.45, abs=0.05)
    lo, hi = out["ci"]["exp_params"]
    assert lo <= 0.087 <= hi
    assert main(["fit", "powerlaw", str(tmp_path / "cbs.csv"), "--y-col", "cbs", "--x-col", "cbs"]) == 2


def test_fit_cbs_reads_a_sweeps_own_trials_csv(capsys):
    """A sweep's trials.csv has empty steps_to_target for trials that did not reach the target:
    they are counted; the best LR per (batch, seed) and the median over seeds are fitted."""
    out = _json(capsys, ["fit", "cbs", str(EX / "sweep_trials.csv"), "--bootstrap", "300", "--json"])
    assert out["schema"] == "batchlaw.fit.cbs/2"
    (g,) = out["groups"]
    assert g["group"] == "lm" and g["n_points"] == 8  # one point per batch size, not one per trial
    text = (EX / "sweep_trials.csv").read_text().splitlines()
    assert g["rows_not_reached"] == sum(",reached," not in r for r in text[1:]) > 0
    assert g["b_crit_ci"][0] <= 256 <= g["b_crit_ci"][1]
    assert all(p["seeds"] == 3 for p in g["points"])
    assert main(["fit", "cbs", str(EX / "sweep_trials.csv"), "--bootstrap", "200"]) == 0
    assert f"{g['rows_not_reached']} row(s) did not reach the target" in capsys.readouterr().out


def test_fit_cbs_rejects_text_in_the_steps_column(tmp_path, capsys):
    (tmp_path / "t.csv").write_text("batch,steps\n16,100\n32,abc\n64,40\n")
    assert main(["fit", "cbs", str(tmp_path / "t.csv"), "--batch-col", "batch", "--steps-col", "steps"]) == 2
    err = capsys.readouterr().err
    assert "line 3" in err and "'abc' is not a number" in err and len(err.strip().splitlines()) == 1


def test_fit_chinchilla_constant_loss_is_a_clear_error(tmp_path, capsys):
    rows = ["params,compute,loss"] + [f"{n},{6 * n * d},2.5" for n in (1e7, 1e8, 1e9) for d in (1e9, 1e10, 1e11, 1e12)]
    (tmp_path / "c.csv").write_text("\n".join(rows))
    assert main(["fit", "chinchilla", str(tmp_path / "c.csv"), "--params-col", "params", "--compute-col", "compute",
                 "--loss-col", "loss", "--compute", "1e21", "--bootstrap", "100"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "same in every run" in err


def test_fit_hparams_counts_diverged_runs_and_flags_edges(tmp_path, capsys):
    """Diverged runs (empty, 'nan', 'diverged' loss) are counted, not an error; a group whose best
    LR is the largest tried is flagged and left out of the LR law."""
    rows = (EX / "hparam_grid.csv").read_text().splitlines()
    head, body = rows[0], rows[1:]
    big = {}
    for r in body:  # the largest LR of each group
        n, d, lr = r.split(",")[:3]
        big[(n, d)] = max(big.get((n, d), 0.0), float(lr))
    out_rows = []
    for i, r in enumerate(body):
        n, d, lr, b, loss = r.split(",")
        if float(lr) == big[(n, d)]:
            loss = ("", "nan", "diverged")[i % 3]
        out_rows.append(",".join((n, d, lr, b, loss)))
    # one group whose higher LRs are all gone: its best is at the top of what is left
    (tmp_path / "g.csv").write_text("\n".join([head, *out_rows]))
    out = _json(capsys, ["fit", "hparams", str(tmp_path / "g.csv"), "--lr-col", "lr", "--batch-col", "batch_seqs",
                         "--loss-col", "loss", "--params-col", "params", "--tokens-col", "tokens", "--seq-len", "2048",
                         "--bootstrap", "100", "--group-bootstrap", "0", "--json"])
    assert out["schema"] == "batchlaw.fit.hparams/1"
    assert out["n_diverged"] == 9 * 9 and all(o["n_diverged"] == 9 for o in out["optima"])
    assert out["lr_law"]["exp_params"] == pytest.approx(-0.713, abs=0.05)
    (tmp_path / "bad.csv").write_text(head + "\n1e8,2e9,0.001,16,oops\n")
    assert main(["fit", "hparams", str(tmp_path / "bad.csv"), "--lr-col", "lr", "--batch-col", "batch_seqs",
                 "--loss-col", "loss", "--params-col", "params", "--tokens-col", "tokens"]) == 2
    assert "'oops' is not a number" in capsys.readouterr().err


def test_fit_isoflop_skips_a_budget_with_a_warning_and_compares_approaches(tmp_path, capsys):
    """A profile whose lowest loss is its largest model used to refuse the whole fit."""
    from batchlaw.fit import EPOCH_2024, chinchilla_loss, compute_optimal

    rows = (EX / "isoflop_runs.csv").read_text().splitlines()
    c = 1e21
    n_opt = compute_optimal(c, EPOCH_2024)["params"]
    for n in n_opt * np.geomspace(0.05, 0.5, 4):
        rows.append(f"{n:.4g},{c / (6 * n):.4g},{c:.3g},{float(chinchilla_loss(n, c / (6 * n), EPOCH_2024)):.5f}")
    (tmp_path / "iso.csv").write_text("\n".join(rows))
    argv = ["fit", "isoflop", str(tmp_path / "iso.csv"), "--params-col", "params", "--tokens-col", "tokens",
            "--budget-col", "budget", "--loss-col", "loss", "--bootstrap", "100"]
    out = _json(capsys, argv + ["--json"])
    assert out["schema"] == "batchlaw.fit.isoflop/1"
    assert [s["compute"] for s in out["skipped"]] == [1e21] and len(out["optima"]) == 5
    a2, a3 = out["comparison"]["params_exponent"]["approach2"], out["comparison"]["params_exponent"]["approach3"]
    assert a2 == pytest.approx(0.5126, abs=0.02) and a3 == pytest.approx(0.5126, abs=0.02)
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "warning: isoFLOP budget 1e+21 FLOPs skipped: the lowest loss is at the largest model" in captured.err
    assert "Approach 3 on the same runs" in captured.out


def test_fit_curve_schedule_aware_with_the_planned_schedule(capsys):
    """cosine_curve.csv is logged to step 5,000 of a planned 8,000 (later rows: LR only)."""
    argv = ["fit", "curve", str(EX / "cosine_curve.csv"), "--step-col", "step", "--loss-col", "loss",
            "--predict-at", "8000", "--bootstrap", "150"]
    out = _json(capsys, argv + ["--lr-col", "lr", "--json"])
    assert out["schema"] == "batchlaw.fit.curve/2" and out["law"] == "tissue"
    assert {"L0", "A", "alpha", "C", "ci", "bootstrap_block"} <= set(out)
    lo, hi = out["prediction"]["interval"]
    # the multi-power law that generated the file ends near 2.83 at step 8,000
    assert lo <= 2.83 <= hi and hi / lo < 1.1
    assert main(argv) == 2  # without --lr-col, rows without a loss are an error
    assert "line 102" in capsys.readouterr().err


def test_fit_cbs_plain_table_keeps_every_row_and_names_an_unreached_group(tmp_path, capsys):
    (tmp_path / "t.csv").write_text("batch,steps,seed,model\n" + "\n".join(
        f"{b},{2000 * (1 + 256 / b) * f:.1f},{k},a" for b in (16, 32, 64, 128, 256, 512) for k, f in ((0, 1.0), (1, 1.05)))
        + "\n16,,0,b\n32,,0,b\n")
    out = _json(capsys, ["fit", "cbs", str(tmp_path / "t.csv"), "--batch-col", "batch", "--steps-col", "steps",
                         "--group-col", "model", "--bootstrap", "200", "--json"])
    a, b = out["groups"]
    assert a["n_points"] == 12 and a["rows_not_reached"] == 0  # no LR column: every row is a point
    assert "no run reached the target (2 rows did not)" in b["error"] and b["not_reached_batches"] == [16, 32]


def test_fit_powerlaw_refuses_inputs_the_data_cannot_identify(tmp_path, capsys):
    """A constant column once gave an exponent of 0.653 (95% CI 0.253 to 0.920); now it is named."""
    rows = ["cbs,tokens,params,tokens_x20"] + [f"{0.02 * d**0.45:.5g},{d:.5g},1e8,{20 * d:.5g}"
                                               for d in np.geomspace(1e9, 1e11, 6)]
    (tmp_path / "cbs.csv").write_text("\n".join(rows) + "\n")
    base = ["fit", "powerlaw", str(tmp_path / "cbs.csv"), "--y-col", "cbs", "--x-col", "tokens", "--bootstrap", "50"]
    assert main([*base, "--x-col", "params"]) == 2
    assert "Column 'params' is constant (1e+08 in every row)" in capsys.readouterr().err
    assert main([*base, "--x-col", "tokens_x20"]) == 2
    assert "Columns 'tokens' and 'tokens_x20' move together" in capsys.readouterr().err
    assert _json(capsys, [*base, "--json"])["exponents"]["tokens"] == pytest.approx(0.45, abs=1e-3)


@pytest.mark.parametrize("text, message", [
    ("step,loss,loss\n" + "".join(f"{s},{2 + 5 * s**-0.3:.5f},9\n" for s in range(100, 1100, 100)),
     "names column 'loss' twice in its header \\(fields 2 and 3\\)"),
    ("step,loss\n" + "".join(f"{s},{2 + 5 * s**-0.3:.5f}\n" for s in range(100, 1100, 100)) + "1100,2,31\n",
     "Line 12 of .* has 3 fields but the header has 2 \\(extra: '31'\\)"),
])
def test_csv_with_a_duplicate_header_or_extra_fields_is_refused_by_name(tmp_path, capsys, text, message):
    """Before: the last of two 'loss' columns was read silently, and '2,31' (a decimal comma) was read as 2."""
    (tmp_path / "c.csv").write_text(text)
    assert main(["fit", "curve", str(tmp_path / "c.csv"), "--step-col", "step", "--loss-col", "loss",
                 "--bootstrap", "20"]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_csv_with_empty_trailing_fields_is_read(tmp_path, capsys):
    """A spreadsheet's trailing commas (empty header cells, empty extra fields) are not an error."""
    (tmp_path / "c.csv").write_text("step,loss,,\n" + "".join(f"{s},{2 + 5 * s**-0.3:.6f},,\n"
                                                            for s in range(100, 2100, 100)) + "2100,2.5,,,\n")
    out = _json(capsys, ["fit", "curve", str(tmp_path / "c.csv"), "--step-col", "step", "--loss-col", "loss",
                         "--bootstrap", "20", "--json"])
    assert out["n_points"] == 21


@pytest.mark.parametrize("value", ["-5", "0", "inf", "nan"])
def test_fit_curve_predict_at_must_be_a_positive_step(capsys, value):
    """-5 and nan were an IndexError (an internal error), inf printed a prediction at step inf, 0 was ignored."""
    assert main(["fit", "curve", str(EX / "learning_curve.csv"), "--step-col", "step", "--loss-col", "loss",
                 "--bootstrap", "20", "--predict-at", value]) == 2
    err = capsys.readouterr().err
    assert f"--predict-at must be a step: a finite number > 0; got {value}" in err and "internal" not in err


def test_fit_curve_without_bootstrap_gives_point_estimates(capsys):
    """--bootstrap 0 was a TypeError shown as bad input."""
    argv = ["fit", "curve", str(EX / "cosine_curve.csv"), "--step-col", "step", "--loss-col", "loss", "--lr-col", "lr",
            "--predict-at", "8000", "--bootstrap", "0"]
    out = _json(capsys, [*argv, "--json"])
    assert out["ci"] == {} and out["prediction"]["interval"] == [None, None] and out["backtest"]["inside"] is None
    assert out["prediction"]["loss"] == pytest.approx(2.83, rel=0.02)
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "no interval: --bootstrap 0" in text and "L0 = 2." in text and "(- to -)" not in text
    assert main([*argv[:-1], "-3"]) == 2
    assert "--bootstrap must be a number of resamples >= 0" in capsys.readouterr().err


def test_fit_curve_refuses_a_warmup_that_leaves_too_few_rows(capsys):
    """--warmup-steps beyond the curve was ignored silently (all 100 rows fitted)."""
    assert main(["fit", "curve", str(EX / "learning_curve.csv"), "--step-col", "step", "--loss-col", "loss",
                 "--bootstrap", "20", "--warmup-steps", "1e6"]) == 2
    assert "--warmup-steps" in (err := capsys.readouterr().err) and "0 of the 100 points remain" in err


def test_fit_curve_warns_when_the_loss_rises(tmp_path, capsys):
    """A rising curve got a flat prediction (b = 0) and no word about it."""
    (tmp_path / "c.csv").write_text("step,loss\n" + "".join(f"{s},{2 + 2e-4 * s:.5f}\n" for s in range(100, 5100, 100)))
    argv = ["fit", "curve", str(tmp_path / "c.csv"), "--step-col", "step", "--loss-col", "loss", "--bootstrap", "20"]
    out = _json(capsys, [*argv, "--json"])
    assert len(out["warnings"]) == 1 and "The loss rises over the fitted steps" in out["warnings"][0]
    assert main(argv) == 0
    assert "warning: The loss rises" in capsys.readouterr().out
    assert _json(capsys, ["fit", "curve", str(EX / "learning_curve.csv"), "--step-col", "step", "--loss-col", "loss",
                          "--bootstrap", "20", "--json"])["warnings"] == []


def test_fit_curve_from_a_later_step(tmp_path, capsys):
    """A log that starts at step 3,001 (resumed logging): the power law fits it (steps are counted from the
    run's start) and recovers the law; a schedule-aware law, which sums the learning rate from step 1, refuses
    it by name. Before, both were accepted, and the Tissue law took the LR of step 3,001 for steps 1 to 3,000."""
    rows = "".join(f"{s},1e-3,{2 + 5 * s**-0.3:.6f}\n" for s in range(3001, 20001, 100))
    (tmp_path / "c.csv").write_text("step,lr,loss\n" + rows)
    base = ["fit", "curve", str(tmp_path / "c.csv"), "--step-col", "step", "--loss-col", "loss", "--bootstrap", "50",
            "--json"]
    out = _json(capsys, base)
    assert out["L_inf"] == pytest.approx(2.0, rel=0.01) and out["b"] == pytest.approx(0.3, rel=0.03)
    assert main([*base, "--lr-col", "lr"]) == 2
    assert "The learning rate is known from step 3001 on (its first rows are 100 steps apart)" in \
        capsys.readouterr().err


# ------------------------------------------------------------------ fit cbs reads a sweep as the sweep does
_B = [8, 16, 32, 64, 128, 256, 512]


def _sweep_trial(batch, seed, lr, steps, budget, diverged=False):
    """A trial of a sweep whose steps to target are ``steps`` (censored at ``budget``: the last step read)."""
    reached = steps <= budget and not diverged
    status = "reached" if reached else "diverged" if diverged else "budget"
    last = steps if reached else budget // 2 if diverged else budget
    return {"key": f"{batch}-{lr}-{seed}", "spec": {"batch_size": batch, "seed": seed, "lr": lr, "max_steps": budget,
                                                    "eval_every": None, "target_on": "heldout"},
            "status": status, "steps_to_target": float(steps) if reached else None,
            "examples_to_target": float(steps * batch) if reached else None, "tokens_to_target": None,
            "eval_interval": max(1, int(steps) // 10), "wall_time_s": 1.0,
            "curve": [[0, 2.0, None], [last, 1.0 if reached else 1.5, None]],
            "final_loss": 1.0 if reached else 1.5, "noise": None, "unit": "examples", "tokens_per_example": None}


def _censored_store(path, budget, spread):
    """S(B) = 30 (1 + 64/B) at the best learning rate 0.1 (x1.3 at 0.05, x1.2 at 0.2), seeds x(1 -+ spread);
    learning rate 0.4 diverges. The budget cuts the slow seeds of the small batch sizes."""
    from batchlaw.fit import steps_law
    from batchlaw.sweep import SweepConfig, TrialStore

    config = SweepConfig(workload="nqm", batch_sizes=tuple(_B), target_loss=1.0, max_steps=budget, lr_base=0.1,
                         name="cens", seeds=(0, 1, 2)).to_dict()
    with TrialStore(path) as store:
        store.save_sweep("cens", config)
        for b in _B:
            s = float(steps_law(b, 30.0, 64.0))
            for seed, f in enumerate((1 - spread, 1.0, 1 + spread)):
                for lr, g in ((0.05, 1.3), (0.1, 1.0), (0.2, 1.2)):
                    store.add("cens", _sweep_trial(b, seed, lr, round(s * f * g, 2), budget))
                store.add("cens", _sweep_trial(b, seed, 0.4, 1e9, budget, diverged=True))
        results, config = store.trials("cens"), store.sweeps()["cens"]
    return results, config


@pytest.mark.parametrize("budget,spread", [(400, 0.1), (290, 0.1), (250, 0.3), (160, 0.1)])
def test_fit_cbs_on_a_trials_csv_agrees_with_the_sweeps_analysis(tmp_path, capsys, budget, spread):
    """A store exported with TrialStore.export_csv: `fit cbs` gives the analysis' points (censored seeds as +inf in
    the median, a censored median a lower bound at the same value, the same best learning rate) and its fit.
    Before, `fit cbs` dropped the censored seeds: the median of the others, biased low, and no lower bound."""
    from batchlaw.sweep import TrialStore, analyze_sweep

    results, config = _censored_store(tmp_path / "s.db", budget, spread)
    a = analyze_sweep("cens", config, results, n_boot=200)
    with TrialStore(tmp_path / "s.db") as store:
        store.export_csv(tmp_path / "trials.csv")
    out = _json(capsys, ["fit", "cbs", str(tmp_path / "trials.csv"), "--bootstrap", "200", "--json"])
    (g,) = out["groups"]
    want = [(p["batch_size"], p["steps_to_target"], p["censored"], p["steps_lower_bound"], p["n_seeds"],
             p["n_censored"], p["best_lr"]) for p in a.points]
    got = [(p["batch"], p["steps"], p["censored"], p["steps_lower_bound"], p["seeds"], p["n_censored"], p["best_lr"])
           for p in g["points"]]
    assert got == want
    assert any(p["n_censored"] for p in a.points) == (budget < 400)
    if budget == 290:  # batch 8: seeds at 243, 270 and 297 > 290 steps; dropping the third gave 256.5
        assert g["points"][0]["steps"] == pytest.approx(270.0)
    if a.fit is None:
        assert "error" in g and g["error"] == a.fit_error
    else:
        assert (g["b_crit"], g["s_min"], g["b_crit_ci"]) == (a.fit.b_crit, a.fit.s_min, list(a.fit.b_crit_ci))
        assert g["lower_bounds"] == [list(x) for x in a.fit.lower_bounds]
        assert g["notes"][:len(a.warnings)] == a.warnings


def test_fit_cbs_bounds_a_censored_median_from_an_older_trials_csv_or_says_it_cannot(tmp_path, capsys):
    """Budget 250, spread 30%: batch 8's median is censored (two seeds of three over the budget).
    - an older trials.csv (no steps_lower_bound column): the bound is the slowest trial of the sweep that reached
      the target (<= the budget every trial shared): a lower bound, looser than the budget, said so;
    - a table of the user's with a learning-rate column and no budget: 'censored, bound unknown', left out of the
      fit and named; with --budget-col it is a lower bound again."""
    from batchlaw.sweep import TrialStore

    results, _ = _censored_store(tmp_path / "s.db", 250, 0.3)
    with TrialStore(tmp_path / "s.db") as store:
        store.export_csv(tmp_path / "trials.csv")
    lines = (tmp_path / "trials.csv").read_text().splitlines()
    old = tmp_path / "old.csv"
    old.write_text("\n".join(line.rsplit(",", 1)[0] for line in lines) + "\n")
    assert lines[0].endswith(",steps_lower_bound") and "steps_lower_bound" not in old.read_text()
    slowest = max(r["steps_to_target"] for r in results if r["status"] == "reached")
    (g,) = _json(capsys, ["fit", "cbs", str(old), "--bootstrap", "200", "--json"])["groups"]
    p8 = g["points"][0]
    assert p8["censored"] and p8["steps_lower_bound"] == pytest.approx(slowest) and slowest < 250
    assert g["lower_bounds"] == [[8.0, pytest.approx(slowest)]]
    assert g["notes"][-1] == "lower bounds from the most steps any trial of the sweep took to reach the target."

    mine = tmp_path / "mine.csv"  # batch, lr, seed, steps (empty: not reached), budget
    mine.write_text("batch,lr,seed,steps,budget\n" + "".join(
        f"{r['spec']['batch_size']},{r['spec']['lr']},{r['spec']['seed']},{r['steps_to_target'] or ''},250\n"
        for r in results))
    argv = ["fit", "cbs", str(mine), "--batch-col", "batch", "--steps-col", "steps", "--bootstrap", "200"]
    (g,) = _json(capsys, argv + ["--json"])["groups"]
    assert g["points"][0]["censored"] and g["points"][0]["steps_lower_bound"] is None and g["left_out"] == [8]
    assert g["lower_bounds"] == [] and g["n_points"] == len(_B) - 1
    assert any("batch size(s) 8 censored, bound unknown" in n for n in g["notes"])
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "note: batch 8: 2 of 3 seeds reached the target at no learning rate" in text and "left out of the fit" in text
    (g,) = _json(capsys, argv + ["--budget-col", "budget", "--json"])["groups"]
    assert g["lower_bounds"] == [[8.0, 250.0]] and g["left_out"] == []
    (tmp_path / "bad.csv").write_text(mine.read_text().replace(",,250", ",,-5", 1))
    assert main(["fit", "cbs", str(tmp_path / "bad.csv"), "--batch-col", "batch", "--steps-col", "steps",
                 "--budget-col", "budget"]) == 2
    err = capsys.readouterr().err
    assert "Column 'budget', line" in err and "'-5' is not a positive, finite number" in err


def test_fit_cbs_plain_table_fits_an_unreached_run_as_a_lower_bound_with_a_budget(tmp_path, capsys):
    """Without a learning-rate column each row is a point; a run that did not reach the target is a lower
    bound at its budget, or, without one, left out of the fit and named."""
    rows = "".join(f"{b},{30 * (1 + 64 / b):.2f},400\n" for b in _B[1:])
    (tmp_path / "t.csv").write_text("batch,steps,budget\n8,,250\n" + rows)
    argv = ["fit", "cbs", str(tmp_path / "t.csv"), "--batch-col", "batch", "--steps-col", "steps", "--bootstrap",
            "200", "--json"]
    (g,) = _json(capsys, argv)["groups"]
    assert g["left_out"] == [8] and g["rows_not_reached"] == 1 and g["not_reached_batches"] == [8]
    assert "batch 8: a run did not reach the target and no bound on its steps is known" in g["notes"][0]
    (g,) = _json(capsys, argv + ["--budget-col", "budget"])["groups"]
    assert g["lower_bounds"] == [[8.0, 250.0]] and g["left_out"] == [] and "best_lr" not in g["points"][0]
    assert g["b_crit"] == pytest.approx(64.0, rel=1e-3)


def test_one_column_for_two_options_is_read_once(tmp_path, capsys):
    """Found by the fuzz test: a column asked for twice was read twice (each value appended twice), and `fit curve
    --run-col step` failed with "'steps' has 4 values but 'lr' has 2". The reader reads it once; a run column that
    is the step, lr or loss column is refused by name."""
    from batchlaw._csv import read_columns

    path = tmp_path / "r.csv"
    path.write_text("run,step,lr,loss\na,1,1e-3,\na,2,1e-3,5\na,3,1e-3,4\nb,1,1e-3,\nb,2,1e-3,5.1\nb,3,1e-3,4.1\n")
    cols = read_columns(path, ["step", "lr", "step"], numeric=["step", "lr"])
    assert cols["step"] == [1.0, 2.0, 3.0, 1.0, 2.0, 3.0] and len(cols["lr"]) == 6
    for col in ("step", "lr", "loss"):
        assert main(["fit", "curve", str(path), "--step-col", "step", "--loss-col", "loss", "--lr-col", "lr",
                     "--run-col", col, "--bootstrap", "0"]) == 2
        err = capsys.readouterr().err
        assert f"The '--run-col' option names the column '{col}'" in err and len(err.strip().splitlines()) == 1
