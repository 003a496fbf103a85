"""`batchlaw profile`: the curve, out of memory for real under RLIMIT_AS, checkpointing, the user's
model, and the plan reading the profile; the ring all-reduce model against gloo."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from batchlaw.cli import main
from batchlaw.plan import fit_link, load_profile, plan_run, ring_allreduce_time
from batchlaw.profile import Target, enable_checkpointing, profile_hardware, user_target

BIG = textwrap.dedent("""
    import torch

    def make():
        # few parameters, wide activations: memory grows ~200 KB per example
        model = torch.nn.Sequential(torch.nn.Linear(64, 16384), torch.nn.ReLU(), torch.nn.Linear(16384, 1))
        return model, lambda b: torch.randn(b, 64)

    def not_a_pair():
        return torch.nn.Linear(2, 2)

    number = 3

    def raises():
        raise RuntimeError("no weights here")

    def mismatch():
        return torch.nn.Linear(3, 1), lambda b: torch.randn(b, 5)

    def frozen():
        model = torch.nn.Linear(4, 1).requires_grad_(False)
        return model, lambda b: torch.randn(b, 4)

    def sparse():
        return torch.nn.Embedding(10, 4, sparse=True), lambda b: torch.randint(0, 10, (b, 3))

    class NoGrad(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 1)

        def forward(self, x):
            with torch.no_grad():
                return self.lin(x)

    def no_grad():
        return NoGrad(), lambda b: torch.randn(b, 4)

    def bad_batch():
        return torch.nn.Linear(4, 1), lambda b: torch.randn(b, 4) / 0 + None
""")


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "bigmodel.py").write_text(BIG)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


@pytest.mark.slow
def test_out_of_memory_under_rlimit_as_returns_the_whole_curve(user_module):
    """A real allocator failure in a subprocess whose address space is capped 300 MiB above its size."""
    script = textwrap.dedent("""
        import resource, sys, torch
        x = torch.randn(256, 256, requires_grad=True); (x @ x).sum().backward()  # start thread pools first
        vm = next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmSize:'))
        resource.setrlimit(resource.RLIMIT_AS, (vm + 300 * 2**20, resource.RLIM_INFINITY))
        from batchlaw.cli import main
        sys.exit(main(['profile', '--model', 'bigmodel:make', '--device', 'cpu', '--max-batch', '1048576',
                       '--repeats', '1', '--warmup', '0', '--out', 'p.json', '--forward-max-batch', '64']))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", script], cwd=user_module, capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    prof = json.loads((user_module / "p.json").read_text())
    statuses = [r["status"] for r in prof["train"]]
    assert statuses[-1] == "oom" and set(statuses[:-1]) == {"ok"} and len(statuses) >= 6
    assert prof["stopped_by"] == "oom"
    assert prof["train"][-1]["micro_batch"] == 2 * prof["max_micro_batch"]
    assert 32 <= prof["max_micro_batch"] <= 4096
    mem = [r["peak_memory_bytes"] for r in prof["train"] if r["status"] == "ok"]
    ok = [r["micro_batch"] for r in prof["train"] if r["status"] == "ok"]
    # memory grew with the micro-batch: at least half the ~200 KB per example of activations the model holds
    # (the cap is hit early where thread pools and malloc arenas reserve address space, so the ok curve may end at 32)
    assert mem[-1] - mem[0] > 100e3 * (ok[-1] - ok[0])
    assert [r["status"] for r in prof["forward"]] == ["ok"] * 7  # work went on after the failure
    assert "out of memory" in proc.stdout
    hp = load_profile(user_module / "p.json")
    assert hp.max_micro_batch == prof["max_micro_batch"] and hp.oom_micro_batch == 2 * hp.max_micro_batch


def _blocks_target():
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList(
                torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.GELU(), torch.nn.Linear(1024, 256))
                for _ in range(8))

        def forward(self, x):
            for b in self.blocks:
                x = b(x)
            return x.square().mean()

    return Net()


@pytest.mark.slow
def test_checkpointing_keeps_gradients_and_saves_memory():
    plain, ckpt = _blocks_target(), _blocks_target()
    assert enable_checkpointing(ckpt) == 8
    x = torch.randn(64, 256)
    plain(x).backward()
    ckpt(x).backward()
    for p, q in zip(plain.parameters(), ckpt.parameters()):
        torch.testing.assert_close(p.grad, q.grad)
    with pytest.raises(ValueError, match="nn.ModuleList"):
        enable_checkpointing(torch.nn.Linear(2, 2))

    def run(checkpointing):
        t = Target(model=_blocks_target(), make_batch=lambda b: torch.randn(b, 256), loss=lambda m, b: m(b),
                   make_optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.01))
        return profile_hardware(t, max_batch=1024, checkpointing=checkpointing, forward=False, repeats=1, warmup=0)

    with_ckpt = run(True)  # first, so memory the allocator keeps from the other run cannot favour it
    without = run(False)
    assert with_ckpt["checkpointing"] and with_ckpt["checkpointed_blocks"] == 8
    peak = {p["checkpointing"]: p["train"][-1]["peak_memory_bytes"] for p in (with_ckpt, without)}
    # without: 8 blocks x (2 x 1024 x 1024 + 1024 x 256) x 4 B = 72 MiB saved; with: 8 x 1 MiB + one block's
    assert peak[True] < peak[False] - 30 * 2**20, peak


def test_profile_json_and_plot_on_a_builtin_workload(tmp_path, capsys):
    out, png = tmp_path / "prof.json", tmp_path / "prof.png"
    assert main(["profile", "--workload", "linreg", "--device", "cpu", "--max-batch", "16", "--repeats", "1",
                 "--out", str(out), "--plot", str(png), "--json"]) == 0
    prof = json.loads(capsys.readouterr().out)
    assert prof["schema"] == "batchlaw.profile/1" and json.loads(out.read_text()) == prof
    assert [r["micro_batch"] for r in prof["train"]] == [1, 2, 4, 8, 16] and prof["stopped_by"] == "max_batch"
    assert all(r["throughput_per_s"] == pytest.approx(r["micro_batch"] / r["step_time_s"]) for r in prof["train"])
    assert [r["batch"] for r in prof["forward"]] == [1, 2, 4, 8, 16]
    assert png.stat().st_size > 5000
    # the serving planner reads the forward curve from the same file
    assert main(["plan", "serve", "--profile", str(out), "--rate", "50", "--requests", "2000",
                 "--slo-p99-ms", "100", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["schema"] == "batchlaw.serve/1"


def test_profile_resumes_from_what_it_stored(tmp_path, capsys):
    out = tmp_path / "prof.json"
    base = ["profile", "--workload", "linreg", "--device", "cpu", "--repeats", "1", "--out", str(out), "--no-forward"]
    assert main(base + ["--max-batch", "4"]) == 0
    first = json.loads(out.read_text())["train"]
    assert main(base + ["--max-batch", "16", "--resume"]) == 0
    second = json.loads(out.read_text())["train"]
    assert second[:3] == first and [r["micro_batch"] for r in second] == [1, 2, 4, 8, 16]
    assert main(["profile", "--workload", "linreg", "--device", "cpu", "--checkpointing", "--out", str(out),
                 "--resume"]) == 2  # linreg has no blocks: refused before anything
    capsys.readouterr()
    assert main(base + ["--workload-arg", "dim=8", "--resume"]) == 2  # another model: 8 parameters, not 16
    assert "Cannot resume: the stored profile differs in parameters" in capsys.readouterr().err


@pytest.mark.parametrize("spec,msg", [
    ("nosuchmodule_xyz:make", "cannot import module 'nosuchmodule_xyz'"),
    ("bigmodel:missing", "has no attribute 'missing'"),
    ("bigmodel:number", "not a function"),
    ("bigmodel:not_a_pair", "must return (model, make_batch)"),
    ("bigmodel", "must be MODULE:FACTORY"),
])
def test_user_model_errors_are_one_line(user_module, capsys, spec, msg):
    assert main(["profile", "--model", spec, "--device", "cpu", "--max-batch", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("spec,msg,line", [
    ("bigmodel:raises", "the factory raised RuntimeError: no weights here", "raise RuntimeError"),
    ("bigmodel:mismatch", "the model on make_batch(1) raised RuntimeError", "def mismatch"),
    ("bigmodel:frozen", "the factory returned a model with no trainable parameter", "def frozen"),
    ("bigmodel:sparse", "get sparse gradients (e.g. nn.Embedding(sparse=True))", "def sparse"),
    ("bigmodel:no_grad", "returned a loss that does not depend on the model's trainable parameters", "def forward"),
    ("bigmodel:bad_batch", "make_batch raised TypeError", "lambda b: torch.randn(b, 4) / 0"),
])
def test_a_model_batchlaw_cannot_train_is_the_users_error(user_module, capsys, tmp_path, spec, msg, line):
    """Frozen or sparse parameters, a loss without gradient, a factory or batch that raises: exit 4 with the
    user's file and line, before any profiling (issue 22 item 10)."""
    out = tmp_path / "p.json"
    assert main(["profile", "--model", spec, "--device", "cpu", "--max-batch", "2", "--out", str(out)]) == 4
    err = capsys.readouterr().err.strip()
    at = next(i for i, text in enumerate(BIG.splitlines(), 1) if line in text)
    assert msg in err and f"bigmodel.py:{at})" in err and len(err.splitlines()) == 1, err
    assert "internal error" not in err and not out.exists()


def test_user_model_target(user_module):
    t = user_target("bigmodel:make")
    assert isinstance(t.model, torch.nn.Module) and t.make_batch(3).shape == (3, 64)
    assert t.loss(t.model, t.make_batch(2)).ndim == 0


def _write_profile(path, fit=16, step=lambda b: 0.01 + 0.001 * b):
    rows = [{"micro_batch": b, "status": "ok", "step_time_s": step(b), "peak_memory_bytes": 1e8 * b}
            for b in (1, 2, 4, 8, 16, 32) if b <= fit]
    rows.append({"micro_batch": 2 * fit, "status": "oom", "step_time_s": None, "peak_memory_bytes": None})
    path.write_text(json.dumps({"schema": "batchlaw.profile/1", "parameters": 10_000_000, "device": "cuda:0",
                                "tokens_per_example": 1024, "train": rows,
                                "forward": [{"batch": b, "status": "ok", "latency_s": 0.005 + 0.001 * b}
                                            for b in (1, 2, 4, 8)]}))
    return path


def test_plan_reads_step_time_and_memory_ceiling_from_a_profile(tmp_path):
    hp = load_profile(_write_profile(tmp_path / "p.json"))
    p = plan_run(gpus=[1, 8], b_crit=1e6, seq_len=1024, micro_batch=8, accumulation=2, profile=hp)
    assert p.rows[0].step_time_s == pytest.approx(2 * 0.018) and p.rows[0].limit == "statistical"
    capped = plan_run(gpus=[1, 8], b_crit=1e6, seq_len=1024, micro_batch=64, profile=hp)
    r = capped.rows[0]
    assert (r.micro_batch, r.accumulation, r.limit) == (16, 4, "memory")
    assert r.step_time_s == pytest.approx(4 * 0.026) and "does not fit" in capped.notes[0]
    # with a link: grad bytes from the profile's parameters
    gb = 4 * 10_000_000
    linked = plan_run(gpus=[8], b_crit=1e6, seq_len=1024, micro_batch=8, profile=hp, grad_bytes=gb,
                      bandwidth_bytes_per_s=12.5e9, overlap=False)
    assert linked.rows[0].step_time_s == pytest.approx(0.018 + ring_allreduce_time(gb, 8, 12.5e9))


def test_plan_cli_with_profile_and_link(tmp_path, capsys):
    path = _write_profile(tmp_path / "p.json")
    assert main(["plan", "--profile", str(path), "--b-crit", "5000", "--gpus", "8,64", "--micro-batch", "8",
                 "--link", "eth100", "--no-overlap", "--tokens", "1e10", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["all_reduce"]["grad_bytes"] == 4e7 and out["rows"][0]["wall_clock_h"] > 0
    for bad, msg in [("{", "is not JSON"), (json.dumps({"schema": "other"}), "must have schema")]:
        (tmp_path / "bad.json").write_text(bad)
        assert main(["plan", "--profile", str(tmp_path / "bad.json"), "--b-crit", "5", "--gpus", "8",
                     "--micro-batch", "8"]) == 2
        assert msg in capsys.readouterr().err


@pytest.mark.slow
def test_ring_model_against_gloo_all_reduce():
    """Fit latency and bandwidth on 1 and 8 MiB, predict 2 and 4 MiB; every size within 25%.

    World sizes up to the machine's cores (more ranks than cores time-share them, which no network
    model describes). Timing on a shared machine: up to three attempts.
    """
    from batchlaw.profile import measure_allreduce

    worlds = [w for w in (2, 3, 4) if w <= (os.cpu_count() or 1)] or [2]
    sizes = [1 << 20, 1 << 21, 1 << 22, 1 << 23]
    ratios = None
    for _ in range(3):
        rows = measure_allreduce(sizes, worlds, repeats=15)
        link = fit_link([r for r in rows if r["n_bytes"] in (sizes[0], sizes[-1])])
        ratios = [ring_allreduce_time(r["n_bytes"], r["world"], link.bus_bandwidth, link.latency_s) / r["seconds"]
                  for r in rows]
        if all(0.75 <= q <= 1.25 for q in ratios):
            break
    assert all(0.75 <= q <= 1.25 for q in ratios), ratios


def test_fit_link_refuses_times_that_do_not_grow_with_size():
    """Latency-bound timings leave the bandwidth unresolved: a clear error, not an infinite bandwidth."""
    rows = [{"n_bytes": 2**18, "world": 2, "seconds": 1e-3}, {"n_bytes": 2**20, "world": 2, "seconds": 9e-4}]
    with pytest.raises(ValueError, match="do not grow with the message size"):
        fit_link(rows)


@pytest.mark.parametrize("plot,msg", [("x.txt", "must end in .png, .pdf or .svg"), (".", "is a directory"),
                                      ("nodir/x.png", "does not exist"), ("p.png", "is the '--out' path")])
def test_profile_paths_are_checked_before_any_work(tmp_path, monkeypatch, capsys, plot, msg):
    """A bad --plot fails at once, before the profile is written (not after the work, and never as ./.png)."""
    monkeypatch.chdir(tmp_path)
    out = "p.png" if plot == "p.png" else "p.json"
    assert main(["profile", "--workload", "linreg", "--device", "cpu", "--max-batch", "2", "--repeats", "1",
                 "--out", out, "--plot", plot]) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and "'--plot'" in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("sizes,msg", [("1", "at least 2 different sizes"), ("inf,1", "finite sizes"),
                                       ("nan,1", "finite sizes"), ("-1,2", "finite sizes"), ("1,1", "1 MiB twice"),
                                       ("1,1e30", "GiB of buffers"), ("1,x", "'x' is not a number")])
def test_allreduce_sizes_are_checked_before_any_work(monkeypatch, capsys, sizes, msg):
    """Refused in one line naming the option, before a process is started (the measurement is never called)."""
    import batchlaw.profile

    def measured(*a, **k):
        raise AssertionError("the all-reduce was measured before the options were checked")

    monkeypatch.setattr(batchlaw.profile, "measure_allreduce", measured)
    assert main(["profile", "allreduce", f"--sizes-mb={sizes}", "--repeats", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and "'--sizes-mb'" in err and len(err.splitlines()) == 1


def _stored(tmp_path, capsys):
    out = tmp_path / "prof.json"
    base = ["profile", "--workload", "linreg", "--device", "cpu", "--repeats", "1", "--warmup", "0", "--out", str(out),
            "--no-forward"]
    assert main(base + ["--max-batch", "2"]) == 0
    capsys.readouterr()
    return out, base + ["--max-batch", "4", "--resume"]


@pytest.mark.parametrize("field,value", [("torch", "1.0.0"), ("threads", 97), ("device_name", "NVIDIA H100"),
                                         ("tokens_per_example", 4)])
def test_resume_refuses_a_profile_from_another_machine(tmp_path, capsys, field, value):
    """Timings from another torch, thread count or GPU are not this run's: refused, the file untouched."""
    out, resume = _stored(tmp_path, capsys)
    data = json.loads(out.read_text())
    data[field] = value
    out.write_text(json.dumps(data))
    before = out.read_text()
    assert main(resume) == 2
    err = capsys.readouterr().err.strip()
    assert "Cannot resume: the stored profile differs in " + field in err and repr(value) in err
    assert len(err.splitlines()) == 1 and out.read_text() == before


@pytest.mark.parametrize("tamper,msg", [
    (lambda d: d["train"][0].update(step_time_s=-5), "train row 0 (micro_batch 1): step_time_s = -5 is not"),
    (lambda d: d["train"][1].update(step_time_s=[]), "step_time_s = [] is not a finite number > 0"),
    (lambda d: d["train"][1].pop("status"), "status = None is not 'ok' or 'oom'"),
    (lambda d: d.update(train={}), "'train' is dict, not a list"),
    (lambda d: d["train"].append(dict(d["train"][0])), "micro_batch 1 appears twice"),
    (lambda d: d["train"][0].update(status="oom", step_time_s=None), "2 fitted but the smaller 1 ran out of memory"),
    (lambda d: d.update(parameters=-3), "parameters = -3 is not an integer >= 1"),
])
def test_resume_refuses_tampered_values(tmp_path, capsys, tamper, msg):
    out, resume = _stored(tmp_path, capsys)
    data = json.loads(out.read_text())
    tamper(data)
    out.write_text(json.dumps(data))
    assert main(resume) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and "is malformed" in err and len(err.splitlines()) == 1
    out.write_text("[]")
    assert main(resume) == 2
    assert "must have schema 'batchlaw.profile/1'. Got 'list'" in capsys.readouterr().err
    # the planners read the same checks
    out.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="is malformed"):
        load_profile(out)


def test_a_time_budget_too_short_for_any_size_still_measures_the_first(tmp_path, capsys):
    """Found by the fuzz test: --time-budget 1e-308 gave exit 0 with an empty profile ("largest micro-batch that
    fitted: None"). The budget stops new sizes; the first of each curve is always measured."""
    out = tmp_path / "p.json"
    assert main(["profile", "--workload", "linreg", "--device", "cpu", "--max-batch", "8", "--repeats", "1",
                 "--warmup", "0", "--time-budget", "1e-308", "--out", str(out)]) == 0
    prof = json.loads(out.read_text())
    assert [r["micro_batch"] for r in prof["train"]] == [1] and prof["max_micro_batch"] == 1
    assert [r["batch"] for r in prof["forward"]] == [1] and prof["stopped_by"] == "time_budget"
    assert "largest micro-batch that fitted: 1 (stopped: the time budget ran out)" in capsys.readouterr().out
