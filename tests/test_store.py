"""The trial store: trials shared by sweeps, migration of old files, loud failures on bad files and rows."""

import json
import math
import sqlite3

import pytest

from batchlaw.cli import main
from batchlaw.sweep import SweepConfig, TrialStore, analyze_sweep, run_sweep, run_trial
from batchlaw.sweep.store import SCHEMA_VERSION, StoreError

LIN = {"dim": 8, "noise_std": 1.0, "init_distance": 4.0, "condition": 10.0}


def _config(name, batch_sizes, **kw):
    base = dict(workload="linreg", batch_sizes=tuple(batch_sizes), target_loss=0.7, max_steps=400, lr_base=0.05,
                eval_every=1, workload_kwargs=LIN, lr_factor=2.0, lr_points=2, max_extensions=0, name=name,
                micro_batches=1)
    base.update(kw)
    return SweepConfig(**base)


def _batches(results):
    return sorted({r["spec"]["batch_size"] for r in results})


def test_two_sweeps_share_trials_not_ownership(tmp_path):
    """Issue repro: sweep b (4,16,64,256) after sweep a (4,16,64) in one store kept only batch 256."""
    with TrialStore(tmp_path / "s.db") as store:
        a = run_sweep(_config("a", (4, 16, 64)), store, progress=False)
        b = run_sweep(_config("b", (4, 16, 64, 256)), store, progress=False)
        assert _batches(store.trials("a")) == [4, 16, 64]
        assert _batches(store.trials("b")) == [4, 16, 64, 256]
        assert store.count("a") == len(a) == 6 and store.count("b") == len(b) == 8
        assert store.count() == 8  # the 6 shared trials ran once
        keys_a = {r["key"] for r in store.trials("a")}
        assert keys_a <= {r["key"] for r in store.trials("b")}
        cfgs = store.sweeps()
        an_b = analyze_sweep("b", cfgs["b"], store.trials("b"))
        assert [p["batch_size"] for p in an_b.points] == [4, 16, 64, 256]
    out = tmp_path / "t.csv"
    with TrialStore(tmp_path / "s.db") as store:
        assert store.export_csv(out) == 14  # one row per trial and sweep
    assert sum(1 for line in out.read_text().splitlines() if line.startswith("b,")) == 8


def test_concurrent_runs_of_one_trial_keep_the_first_result_and_both_sweeps(tmp_path):
    r = run_trial(_config("x", (4,)).spec(4, 0.05, 0))
    with TrialStore(tmp_path / "s.db") as one, TrialStore(tmp_path / "s.db") as two:
        one.add("a", r)
        two.add("b", {**r, "wall_time_s": 99.0})  # the same trial, finished by another process
        assert one.count() == 1 and one.count("a") == 1 and one.count("b") == 1
        assert two.trials("b")[0]["wall_time_s"] == r["wall_time_s"]


_OLD_SCHEMA = """
CREATE TABLE sweeps (name TEXT PRIMARY KEY, config TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE trials (key TEXT PRIMARY KEY, sweep TEXT NOT NULL, batch_size REAL NOT NULL, lr REAL NOT NULL,
    seed INTEGER NOT NULL, status TEXT NOT NULL, steps_to_target REAL, examples_to_target REAL,
    tokens_to_target REAL, wall_time_s REAL, b_simple REAL, result TEXT NOT NULL, finished_at REAL NOT NULL);
CREATE INDEX trials_sweep ON trials (sweep);
"""


def test_old_store_is_migrated_and_recovers_the_trials_it_lost(tmp_path):
    """A layout-1 file where sweep b's shared trials were stored under a only."""
    db = tmp_path / "old.db"
    ca, cb = _config("a", (4, 16)), _config("b", (4, 16, 64))
    con = sqlite3.connect(db)
    con.executescript(_OLD_SCHEMA)
    for t, (name, cfg) in enumerate((("a", ca), ("b", cb))):
        con.execute("INSERT INTO sweeps VALUES (?, ?, ?)", (name, json.dumps(cfg.to_dict(), sort_keys=True), t))
    rows = [("a", ca.spec(4, 0.05, 0)), ("a", ca.spec(16, 0.05, 0)), ("b", cb.spec(64, 0.05, 0)),
            ("a", _config("a", (4, 16), target_loss=0.9).spec(4, 0.05, 0))]  # another target: not b's
    for i, (name, spec) in enumerate(rows):
        r = {**run_trial(_config("x", (4,), max_steps=3).spec(4, 0.05, 0)), "key": spec.key, "spec": spec.to_dict()}
        con.execute("INSERT INTO trials VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (spec.key, name, spec.batch_size, spec.lr, 0, r["status"], r["steps_to_target"], None, None,
                     1.0, None, json.dumps(r), float(i)))
    con.commit()
    con.close()
    with TrialStore(db) as store:
        assert _batches(store.trials("b")) == [4, 16, 64]
        assert store.count("a") == 3 and store.count("b") == 3 and store.count() == 4
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_constraint_failures_raise(tmp_path):
    """A NaN learning rate was dropped by INSERT OR IGNORE and rerun on every resume."""
    r = run_trial(_config("x", (4,), max_steps=3).spec(4, 0.05, 0))
    bad = {**r, "spec": {**r["spec"], "lr": math.nan}, "key": "nan-lr"}
    with TrialStore(tmp_path / "s.db") as store:
        with pytest.raises(StoreError, match="refused trial nan-lr.*NOT NULL"):
            store.add("a", bad)
        assert store.count() == 0


def test_sweep_options_that_make_nan_learning_rates_are_refused():
    for kw, msg in (({"lr_factor": math.inf}, "'lr_factor' parameter must be a finite number > 1"),
                    ({"lr_scaling": math.nan}, "'lr_scaling' parameter must be a finite number"),
                    ({"lr_scaling": 800.0}, "leave the floating-point range"),
                    ({"lr_factor": 1e200, "lr_points": 3, "max_extensions": 2}, "leave the floating-point range")):
        with pytest.raises(ValueError, match=msg):
            _config("x", (4, 4096), **kw)


def _store_with_a_sweep(path):
    with TrialStore(path) as store:
        run_sweep(_config("a", (4, 16), lr_points=1, max_steps=50), store, progress=False)


def _report(path, tmp_path, capsys):
    code = main(["report", str(path), "--out", str(tmp_path / "rep")])
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize("damage", ["directory", "not_sqlite", "truncated", "result_not_json", "result_missing_key",
                                    "config_not_json", "config_bad_value", "other_sqlite"])
def test_damaged_stores_give_one_line_errors(tmp_path, capsys, damage):
    db = tmp_path / "s.db"
    if damage == "directory":
        db.mkdir()
    elif damage == "not_sqlite":
        db.write_text("batch,steps\n1,2\n")
    elif damage == "other_sqlite":
        with sqlite3.connect(db) as con:
            con.execute("CREATE TABLE t (x)")
    else:
        _store_with_a_sweep(db)
        with sqlite3.connect(db) as con:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            if damage == "result_not_json":
                con.execute("UPDATE trials SET result = '{not json' WHERE rowid = 1")
            elif damage == "result_missing_key":
                r = json.loads(con.execute("SELECT result FROM trials WHERE rowid = 1").fetchone()[0])
                del r["spec"]["batch_size"]
                con.execute("UPDATE trials SET result = ? WHERE rowid = 1", (json.dumps(r),))
            elif damage == "config_not_json":
                con.execute("UPDATE sweeps SET config = '[1, 2'")
            elif damage == "config_bad_value":
                cfg = json.loads(con.execute("SELECT config FROM sweeps").fetchone()[0])
                cfg["max_steps"] = "<b>many</b>"
                con.execute("UPDATE sweeps SET config = ?", (json.dumps(cfg),))
        if damage == "truncated":
            data = db.read_bytes()
            db.write_bytes(data[: len(data) // 2])
    code, err = _report(db, tmp_path, capsys)
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert str(db) in err
    expected = {"directory": "is a directory", "other_sqlite": "not a batchlaw store", "config_bad_value": "max_steps",
                "result_missing_key": "damaged trial row", "result_not_json": "damaged trial row",
                "config_not_json": "damaged sweep row"}.get(damage, "not a readable batchlaw store")
    assert expected in err


def test_store_errors_from_the_python_api(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(StoreError, match="is a directory"):
        TrialStore(tmp_path / "d")
    with pytest.raises(StoreError, match="directory of the store .* does not exist"):
        TrialStore(tmp_path / "nope" / "s.db")
    with pytest.raises(StoreError, match="does not exist"):
        TrialStore(tmp_path / "missing.db", create=False)
    (tmp_path / "junk.db").write_bytes(b"\x00\x01junk" * 100)
    with pytest.raises(StoreError, match="not a readable batchlaw store"):
        TrialStore(tmp_path / "junk.db")


def test_plan_from_a_store_that_is_not_sqlite(tmp_path, capsys):
    junk = tmp_path / "junk.db"
    junk.write_text("this is not a database\n" * 50)
    code = main(["plan", "--b-crit-store", str(junk), "--gpus", "8,16", "--micro-batch", "8", "--tokens", "1e9"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert str(junk) in err and "not a readable batchlaw store" in err


def test_a_diverged_trial_with_non_finite_losses_is_stored():
    r = run_trial(_config("x", (4,), max_steps=3).spec(4, 0.05, 0))
    r = {**r, "status": "diverged", "steps_to_target": None, "final_loss": math.inf,
         "curve": r["curve"] + [[4, math.nan, None]]}
    with TrialStore(":memory:") as store:
        store.add("a", r)
        back = store.trials("a")[0]
    assert back["final_loss"] == math.inf and math.isnan(back["curve"][-1][1])
