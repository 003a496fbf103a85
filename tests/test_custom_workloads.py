"""Custom workloads by reference: resolved the same way in every command, every process, with
one-line errors for every bad reference (sweep, measure, Ray, resume, report)."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from store_polling import finished_trials

from batchlaw.cli import main
from batchlaw.measure import measure_noise
from batchlaw.sweep import LocalExecutor, SweepConfig, TrialSpec, TrialStore, analyze_sweep, run_sweep, run_trial
from batchlaw.workloads import (
    LinearRegression,
    NoisyQuadratic,
    Workload,
    WorkloadImportError,
    resolve_workload,
    workload_ref,
    workload_spec,
)
from custom_wl.quadratic import TinyRegression

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
REF = "custom_wl.quadratic:TinyRegression"


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(TESTS), env.get("PYTHONPATH", "")])
    return env


def test_resolve_by_name_reference_class_and_instance():
    assert isinstance(resolve_workload("nqm", {"dim": 3}), NoisyQuadratic)
    wl = resolve_workload(REF, {"dim": 3})
    assert type(wl) is TinyRegression and wl.dim == 3
    assert resolve_workload(TinyRegression, {"dim": 2}).dim == 2
    inst = TinyRegression(5, noise=0.1)
    assert resolve_workload(inst) is inst
    assert workload_spec(inst) == (REF, {"dim": 5, "noise": 0.1})  # the arguments given
    assert workload_ref(TinyRegression) == REF and workload_ref(LinearRegression) == "linreg"
    rebuilt = resolve_workload(*workload_spec(inst))
    assert (rebuilt.dim, rebuilt.noise) == (5, 0.1)


def test_specs_and_configs_store_the_reference():
    spec = TrialSpec(workload=TinyRegression(dim=3), batch_size=8, lr=0.05, seed=0, target_loss=0.2, max_steps=5)
    assert spec.workload == REF and spec.workload_kwargs == {"dim": 3}
    assert spec.key == TrialSpec(**spec.to_dict()).key
    cfg = SweepConfig(workload=TinyRegression, workload_kwargs={"dim": 3}, batch_sizes=(4, 8), target_loss=0.2,
                      max_steps=5, lr_base=0.05)
    assert cfg.to_dict()["workload"] == REF and cfg.spec(4, 0.05, 0).key == TrialSpec(
        workload=REF, batch_size=4, lr=0.05, seed=0, target_loss=0.2, max_steps=5, eval_every=cfg.eval_every,
        workload_kwargs={"dim": 3}).key


class _Local(Workload):  # defined at module level of a test module: importable, fine
    def make_model(self, seed):
        raise NotImplementedError

    sample_batch = loss = make_model


BAD = [
    ("no_such_module_xyz:Thing", {}, "The workload module 'no_such_module_xyz' cannot be imported"),
    ("custom_wl.quadratic:Nope", {}, "has no attribute 'Nope'"),
    ("custom_wl.quadratic:not_a_class", {}, "names a function, not a subclass of batchlaw.workloads.Workload"),
    ("custom_wl.quadratic:NotAWorkload", {}, "names the class 'NotAWorkload', not a subclass"),
    (REF, {"dimension": 3}, "rejected the arguments {'dimension': 3}: TinyRegression.__init__() got an unexpected"),
    (REF, {"dim": 0}, "rejected the arguments {'dim': 0}: The 'dim' parameter must be >= 1. Got 0 instead."),
    ("custom_wl.broken:X", {}, "Importing workload module 'custom_wl.broken' failed: No module named "
                               "'batchlaw_no_such_dependency'"),
    ("mnist", {}, "must be one of 'linreg', 'bytemlp', 'bytegpt', 'nqm', or 'package.module:ClassName'"),
    ("a.b:C:D", {}, "'package.module:ClassName'. Got 'a.b:C:D'"),
]


@pytest.mark.parametrize("ref,kwargs,message", BAD)
def test_every_bad_reference_gives_one_line(ref, kwargs, message):
    with pytest.raises(ValueError) as info:
        resolve_workload(ref, kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)
    if "cannot be imported" in message:
        assert isinstance(info.value, WorkloadImportError) and info.value.module == "no_such_module_xyz"


def test_unstorable_workloads_are_refused_by_name():
    def local():
        class Inner(TinyRegression):
            pass
        return Inner

    with pytest.raises(ValueError, match="defined inside a function"):
        workload_ref(local())
    with pytest.raises(ValueError, match="must be JSON values .*'dim'"):
        workload_spec(TinyRegression, {"dim": object()})
    with pytest.raises(ValueError, match="must be empty when 'workload' is an instance"):
        workload_spec(TinyRegression(), {"dim": 2})
    with pytest.raises(TypeError, match="Got a int instead"):
        workload_spec(3)
    main_cls = type("FromMain", (TinyRegression,), {"__module__": "__main__"})
    with pytest.raises(ValueError, match="defined in __main__"):
        workload_ref(main_cls)


@pytest.mark.parametrize("command", ["sweep", "measure"])
def test_cli_bad_reference_is_one_line(command, capsys):
    extra = ["--batch-sizes", "4,8", "--target-loss", "1", "--store", "unused.db"] if command == "sweep" else []
    rc = main([command, "--workload", "custom_wl.quadratic:NotAWorkload", *extra])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "not a subclass of batchlaw.workloads.Workload" in err
    rc = main([command, "--workload", REF, "--workload-arg", "dim=0", *extra])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "rejected the arguments {'dim': 0}" in err


class OneExampleTooMany(TinyRegression):
    """A workload whose sample_batch returns b + 1 examples."""

    def sample_batch(self, batch_size, generator):
        return super().sample_batch(batch_size + 1, generator)


def test_measure_refuses_a_batch_of_the_wrong_size(capsys):
    with pytest.raises(ValueError, match=r"returned a batch with 9 examples .* from sample_batch\(8, generator\)"):
        measure_noise(OneExampleTooMany(), steps=4, progress=False)
    rc = main(["measure", "--workload", "test_custom_workloads:OneExampleTooMany", "--steps", "4", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "it must return exactly batch_size examples" in err and err.count("\n") == 1


def test_hooks_are_used_by_measure_and_trials():
    wl = TinyRegression(warmup=4)
    result = measure_noise(wl, steps=6, accumulation=2, progress=False, eval_every=3)
    assert wl.multipliers == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert result.workload["name"] == "tiny_regression"
    fast, slow = (run_trial(TrialSpec(workload=REF, batch_size=8, lr=0.05, seed=0, target_loss=0.3,
                                      max_steps=400, eval_every=1, workload_kwargs={"warmup": w}))
                  for w in (1, 200))
    assert fast["status"] == "reached" and (slow["status"] != "reached"
                                            or slow["steps_to_target"] > fast["steps_to_target"] + 20)


def _config(name="custom", **kw):
    base = dict(workload=REF, workload_kwargs={"dim": 4}, batch_sizes=(4, 16, 64), target_loss=0.2, max_steps=400,
                lr_base=0.05, eval_every=2, lr_points=2, max_extensions=1, lr_scaling=0.5, name=name)
    base.update(kw)
    return SweepConfig(**base)


def test_sweep_in_worker_processes_matches_in_process(tmp_path):
    with TrialStore(tmp_path / "a.db") as store:
        inproc = run_sweep(_config(), store, LocalExecutor(1), progress=False)
    pool = LocalExecutor(2)
    try:
        with TrialStore(tmp_path / "b.db") as store:
            spawned = run_sweep(_config(), store, pool, progress=False)
    finally:
        pool.close()
    key = lambda rs: sorted((r["key"], r["status"], r["steps_to_target"]) for r in rs)  # noqa: E731
    assert key(inproc) == key(spawned)
    assert all(r["spec"]["workload"] == REF for r in spawned)
    assert any(r["status"] == "reached" for r in spawned)


def test_measure_cli_with_custom_workload(capsys):
    rc = main(["measure", "--workload", REF, "--workload-arg", "dim=3", "--steps", "8", "--accumulation", "2",
               "--no-progress", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["workload"]["name"] == "tiny_regression" and out["config"]["steps"] == 8


@pytest.mark.slow
def test_cli_sweep_resumes_after_sigkill_and_reports(tmp_path):
    db = tmp_path / "custom.db"
    cmd = [sys.executable, "-m", "batchlaw", "sweep", "--workload", REF, "--workload-arg", "dim=4",
           "--batch-sizes", "4,8,16", "--target-loss", "0.15", "--max-steps", "3000", "--eval-every", "5",
           "--lr-base", "0.01", "--lr-points", "2", "--max-extensions", "0", "--store", str(db), "--jobs", "1",
           "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                            env=_env(), cwd=tmp_path)
    finished = finished_trials(proc, db, 1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert 1 <= len(finished) < 6, (len(finished), proc.stderr.read())
    done = subprocess.run(cmd + ["--json"], capture_output=True, text=True, timeout=300, env=_env(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(db) as con:
        after = dict(con.execute("SELECT key, finished_at FROM trials").fetchall())
    assert len(after) == 6 and all(after[k] == t for k, t in finished.items())
    out = json.loads(done.stdout)
    assert out["config"]["workload"] == REF and out["config"]["workload_kwargs"] == {"dim": 4}
    rep = subprocess.run([sys.executable, "-m", "batchlaw", "report", str(db), "--out", str(tmp_path / "rep"),
                          "--json"], capture_output=True, text=True, timeout=300, env=_env(), cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    sweeps = json.loads(rep.stdout)["sweeps"]
    assert sweeps[0]["config"]["workload"] == REF and sweeps[0]["n_trials"] == 6
    assert (tmp_path / "rep" / "report.html").read_text().count(REF) >= 1


@pytest.mark.slow
def test_ray_workers_import_by_reference_or_say_how_to_ship_it(tmp_path):
    ray = pytest.importorskip("ray")
    from batchlaw.sweep import RayExecutor

    config = _config(batch_sizes=(4, 16))
    with TrialStore(tmp_path / "local.db") as store:
        local = run_sweep(config, store, LocalExecutor(1), progress=False)
    # A local Ray instance whose workers do not see the tests directory (like a remote cluster).
    env_path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(ROOT / "src")
    try:
        executor = RayExecutor(jobs=1)
    finally:
        if env_path is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = env_path
    try:
        with TrialStore(tmp_path / "bad.db") as store:
            with pytest.raises(ValueError) as info:
                run_sweep(config, store, executor, progress=False)
        msg = str(info.value)
        assert msg.startswith("module 'custom_wl.quadratic' not importable on the cluster: ship it with runtime_env")
        assert "\n" not in msg
        # Ray is running already: a per-task runtime_env (a job-level one, at ray.init, may upload py_modules)
        path = os.pathsep.join([str(ROOT / "src"), str(TESTS)])
        shipped = RayExecutor(runtime_env={"env_vars": {"PYTHONPATH": path}})
        with TrialStore(tmp_path / "ray.db") as store:
            remote = run_sweep(config, store, shipped, progress=False)
    finally:
        executor.close()
    assert not ray.is_initialized()
    key = lambda rs: sorted((r["key"], r["status"], r["steps_to_target"]) for r in rs)  # noqa: E731
    assert key(local) == key(remote)


# ------------------------------------------------------------------ errors in the user's own code
FAULTY = TESTS / "custom_wl" / "faulty.py"


def _line(path: Path, marker: str) -> str:
    """``custom_wl/file.py:LINE``: the line of ``path`` that carries ``# BUG: marker``."""
    for i, text in enumerate(path.read_text().splitlines(), 1):
        if f"# BUG: {marker}" in text:
            return f"custom_wl{os.sep}{path.name}:{i}"
    raise AssertionError(f"no marker {marker!r} in {path}")


def _user_error(capsys, argv: list[str]) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 4, (rc, err)
    assert err.count("\n") == 1 and err.startswith("batchlaw: error in your workload or model (")
    assert "internal error" not in err and "This is not a bug in batchlaw" in err
    return err


@pytest.mark.parametrize("cls,marker,message", [
    ("CtorRaises", "ctor", "The constructor of workload 'custom_wl.faulty:CtorRaises' raised RuntimeError: no GPU found"),
    ("NoModel", "make_model", "make_model() returned None, not a torch.nn.Module"),
    ("VectorLoss", "loss", "loss() returned a tensor of shape (2,) (torch.float32), not a scalar"),
    ("Frozen", "frozen", "make_model() returned a model with no trainable parameter"),
    ("Sparse", "sparse", "parameters ['emb.weight'] get sparse gradients"),
    ("FailsLater", "later", "KeyError: 'missing'"),
])
def test_errors_in_the_users_workload_exit_4_with_its_file_and_line(capsys, cls, marker, message):
    err = _user_error(capsys, ["measure", "--workload", f"custom_wl.faulty:{cls}", "--steps", "12", "--no-progress"])
    assert message in err and f"{_line(FAULTY, marker)})" in err, err


@pytest.mark.parametrize("module,marker,said", [
    ("exits_on_import", "exit", "sys.exit('run me as a script')"),
    ("parses_argv", "argv", "the following arguments are required: --data"),
])
def test_a_workload_module_that_exits_on_import_is_the_users_error(capsys, module, marker, said):
    argv = list(sys.argv)
    for command in (["measure", "--steps", "12"], ["branch", "--base-batch", "4", "--checkpoints", "0",
                                                  "--budget", "8", "--multipliers", "1,2", "--store", "unused.db"]):
        err = _user_error(capsys, [command[0], "--workload", f"custom_wl.{module}:W", *command[1:]])
        assert f"The workload module 'custom_wl.{module}' exited while being imported" in err and said in err
        assert f"{_line(TESTS / 'custom_wl' / f'{module}.py', marker)})" in err
    assert sys.argv == argv  # the module saw no arguments; batchlaw's are back


def test_check_workload_accepts_a_good_workload_and_keeps_the_random_state():
    import torch

    from batchlaw.workloads import check_workload

    state = torch.random.get_rng_state()
    check_workload(TinyRegression(dim=3))
    assert torch.equal(state, torch.random.get_rng_state())


def test_branch_and_schedule_compare_find_a_workload_in_the_current_directory(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_cwd_workload.py").write_text(
        "from custom_wl.quadratic import TinyRegression\n\nclass Here(TinyRegression):\n    name = 'here'\n")
    monkeypatch.chdir(tmp_path)
    # as the `batchlaw` console script runs: neither '' nor the current directory on sys.path
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", os.getcwd(), str(tmp_path))])
    monkeypatch.delitem(sys.modules, "my_cwd_workload", raising=False)
    rc = main(["branch", "--workload", "my_cwd_workload:Here", "--base-batch", "4", "--checkpoints", "0",
               "--budget", "16", "--multipliers", "1,2", "--store", "b.db", "--no-progress", "--json"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert json.loads(out.out)["config"]["workload"] == "my_cwd_workload:Here"
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", os.getcwd(), str(tmp_path))])
    monkeypatch.delitem(sys.modules, "my_cwd_workload", raising=False)
    rc = main(["schedule", "compare", "--workload", "my_cwd_workload:Here", "--target-loss", "1.0", "--seeds", "0",
               "--small-batch", "4", "--large-batch", "8", "--schedules", "constant_small", "--eval-every", "8",
               "--max-examples", "64", "--json"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert json.loads(out.out)["config"]["workload"] == "my_cwd_workload:Here"  # found and trained
