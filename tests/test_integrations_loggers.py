"""log_to: a plain loop's noise-scale records into TensorBoard, W&B (offline), CSV and a function,
read back from each logger's own files."""

from __future__ import annotations

import csv
import glob
import json
import math
import struct
import time

import numpy as np
import pytest
import torch

from batchlaw.integrations.loggers import CSVSink, log_to, noise_metrics
from batchlaw.noise import GradientNoiseMonitor, unbiased_g_sq, unbiased_trace_sigma
from batchlaw.workloads import LinearRegression

WL = LinearRegression(dim=16, noise_std=1.0, init_distance=1.0)


def _run(monitor, model, steps, k=4, b=8, noise_log=None, log_every=7, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        for _ in range(k):
            (WL.loss(model, WL.sample_batch(b, gen)) / k).backward()
        monitor.step()
        model.zero_grad(set_to_none=True)  # fixed weights: no optimizer step
        if noise_log is not None and step % log_every == 0:
            noise_log.log()


def test_csv_rows_recompute_to_the_logged_estimates(tmp_path):
    model = WL.make_model(0)
    monitor = GradientNoiseMonitor(model, micro_batch_size=8)
    seen = []
    path = tmp_path / "gns.csv"
    noise_log = log_to(monitor, path, lambda metrics, step: seen.append(step), window=None)
    _run(monitor, model, 60, noise_log=noise_log)
    noise_log.close()
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == list(range(60)) == seen  # nothing lost between log() calls
    assert {r["unit"] for r in rows} == {"examples"}
    col = {k: np.array([float(r[k]) for r in rows]) for k in ("small_sq", "big_sq", "b_small", "b_big", "g_sq",
                                                               "trace_sigma")}
    assert np.all(col["b_small"] == 8) and np.all(col["b_big"] == 32)
    # the raw norms and batch sizes are enough to recompute (McCandlish et al. App. A.1)
    np.testing.assert_allclose(unbiased_g_sq(col["small_sq"], col["big_sq"], 8, 32), col["g_sq"], rtol=1e-9)
    np.testing.assert_allclose(unbiased_trace_sigma(col["small_sq"], col["big_sq"], 8, 32), col["trace_sigma"],
                               rtol=1e-9)
    recomputed = col["trace_sigma"].mean() / col["g_sq"].mean()
    last = rows[-1]
    assert float(last["b_simple"]) == pytest.approx(recomputed, rel=1e-9)
    assert float(last["b_simple"]) == pytest.approx(monitor.estimate().b_simple, rel=1e-12)
    assert float(last["b_simple_lo"]) < recomputed < float(last["b_simple_hi"])
    assert rows[0]["b_simple"] == ""  # one step: no estimate yet
    truth = WL.b_simple(model)
    assert float(last["b_simple_lo"]) <= truth <= float(last["b_simple_hi"])


def test_csv_appends_after_a_restart_and_refuses_another_header(tmp_path):
    model = WL.make_model(0)
    path = tmp_path / "gns.csv"
    for _ in range(2):
        monitor = GradientNoiseMonitor(model, micro_batch_size=8)
        with log_to(monitor, path) as noise_log:
            _run(monitor, model, 3, noise_log=noise_log)
        monitor.remove()
    with path.open(newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 6
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="exists with other columns"):
        CSVSink(other)


def test_tensorboard_event_file_holds_every_step(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    model = WL.make_model(0)
    monitor = GradientNoiseMonitor(model, micro_batch_size=8)
    writer = SummaryWriter(tmp_path / "tb")
    noise_log = log_to(monitor, writer)
    _run(monitor, model, 30, noise_log=noise_log)
    noise_log.close()
    writer.close()
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"gns/small_sq", "gns/big_sq", "gns/b_small", "gns/b_big", "gns/g_sq", "gns/trace_sigma",
            "gns/b_simple_ema", "gns/b_simple", "gns/b_simple_lo", "gns/b_simple_hi"} <= tags
    big = acc.Scalars("gns/big_sq")
    assert [e.step for e in big] == list(range(30))
    np.testing.assert_allclose([e.value for e in big], [r["big_sq"] for r in monitor.records], rtol=1e-6)
    last = acc.Scalars("gns/b_simple")[-1]
    assert last.step == 29 and last.value == pytest.approx(monitor.estimate().b_simple, rel=1e-6)
    assert "gns/unit/text_summary" in acc.Tags()["tensors"]  # the unit, as text


def _wandb_history(path):
    """History rows of an offline W&B run file (LevelDB-log records of protobuf Records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = open(path, "rb").read()
    ident, magic, _ = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1
    pos, block, buf, rows = 7, 32768, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        if pos + 7 + length > len(data):  # still being written
            break
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            rec = pb.Record()
            rec.ParseFromString(buf)
            buf = b""
            if rec.WhichOneof("record_type") == "history":
                rows.append({(it.key or "/".join(it.nested_key)): json.loads(it.value_json) for it in rec.history.item})
    return rows


@pytest.mark.slow
def test_wandb_offline_run_holds_every_step(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    model = WL.make_model(0)
    monitor = GradientNoiseMonitor(model, micro_batch_size=8)
    run = wandb.init(mode="offline", dir=str(tmp_path), project="batchlaw-test",
                     settings=wandb.Settings(console="off"))
    try:
        run.log({"loss": 1.0})  # the user's own metric, on the run's own step
        noise_log = log_to(monitor, run)
        _run(monitor, model, 40, noise_log=noise_log, log_every=4)  # 40 steps: enough for an interval
        noise_log.close()
    finally:
        run.finish()
    path = glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "run-*.wandb"))[0]
    deadline = time.monotonic() + 30
    while True:  # wandb-core may still be writing the run file when finish() returns
        ours = [r for r in _wandb_history(path) if "gns/step" in r]
        if len(ours) >= 40 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert [r["gns/step"] for r in ours] == list(range(40))
    np.testing.assert_allclose([r["gns/small_sq"] for r in ours], [r["small_sq"] for r in monitor.records], rtol=1e-6)
    assert ours[-1]["gns/b_simple"] == pytest.approx(monitor.estimate().b_simple, rel=1e-6)
    assert ours[-1]["gns/b_big"] == 32


def test_noise_metrics_and_bad_targets():
    rec = {"step": 0, "small_sq": math.inf, "big_sq": 1.0, "b_small": 8.0, "b_big": 32.0, "skipped": True,
           "g_sq": math.nan}
    m = noise_metrics(rec, prefix="x/")
    assert m["x/skipped"] == 1.0 and math.isnan(m["x/g_sq"]) and "x/world_size" not in m
    monitor = GradientNoiseMonitor(torch.nn.Linear(2, 1), micro_batch_size=4)
    with pytest.raises(TypeError, match="SummaryWriter, a wandb run, a CSV path or a callable"):
        log_to(monitor, 42)
    with pytest.raises(ValueError, match="at least one target"):
        log_to(monitor)
    with pytest.raises(ValueError, match="'window' parameter"):
        log_to(monitor, lambda m, s: None, window=0)
    with pytest.raises(TypeError, match="GradientNoiseMonitor"):
        log_to(object(), lambda m, s: None)


def test_every_batch_size_in_a_record_is_in_the_monitors_unit(tmp_path):
    """With tokens_per_example the monitor's unit is tokens: b_small and b_big are logged in tokens, and the
    record's micro_batch_size and global_batch (examples) are not logged beside them, in any sink; the unit
    travels with the numbers (CSV column, TensorBoard text)."""
    from torch.utils.tensorboard import SummaryWriter

    model = WL.make_model(0)
    monitor = GradientNoiseMonitor(model, micro_batch_size=8, tokens_per_example=16)
    seen = []
    writer = SummaryWriter(tmp_path / "tb")
    noise_log = log_to(monitor, tmp_path / "gns.csv", lambda metrics, step: seen.append(metrics), writer)
    _run(monitor, model, 40, k=4, b=8, noise_log=noise_log)
    noise_log.close()
    writer.close()
    assert monitor.records[-1]["micro_batch_size"] == 8 and monitor.records[-1]["global_batch"] == 32  # examples
    batch_keys = {"gns/b_small": 8 * 16, "gns/b_big": 4 * 8 * 16}  # tokens
    for metrics in seen:
        assert {k: metrics[k] for k in batch_keys} == batch_keys
        assert not {"gns/micro_batch_size", "gns/global_batch"} & set(metrics)
    with (tmp_path / "gns.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert "micro_batch_size" not in rows[0] and "global_batch" not in rows[0]
    assert {(r["unit"], float(r["b_small"]), float(r["b_big"])) for r in rows} == {("tokens", 128.0, 512.0)}
    assert float(rows[-1]["b_simple"]) == pytest.approx(monitor.estimate().b_simple, rel=1e-9)  # in tokens too
