"""NoiseScaleCallback for Lightning, with the real package, against the plain-loop monitor and
known answers (linear regression at fixed weights, where B_simple is analytic)."""

from __future__ import annotations

import csv
import logging
import math
import subprocess
import sys
import time
import warnings

import pytest
import torch

pl = pytest.importorskip("lightning.pytorch")
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger  # noqa: E402
from lightning.pytorch.plugins.precision import MixedPrecision  # noqa: E402
from monitor_reference import WL, plain_loop, sample  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from batchlaw.integrations.lightning import NoiseScaleCallback  # noqa: E402
from batchlaw.schedule import BatchChoice  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
logging.getLogger("lightning.fabric").setLevel(logging.ERROR)


class LinReg(pl.LightningModule):
    def __init__(self, lr: float = 0.0, seed: int = 0):
        super().__init__()
        self.net = WL.make_model(seed)
        self.lr = lr

    def training_step(self, batch, batch_idx):
        return WL.loss(self.net, batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def _trainer(callbacks=(), **kw):
    defaults = dict(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False)
    defaults.update(kw)
    return pl.Trainer(callbacks=list(callbacks), **defaults)


def _fit(module, x, y, b, callbacks=(), **kw):
    trainer = _trainer(callbacks, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, DataLoader(TensorDataset(x, y), batch_size=b))
    return trainer


# ---------------------------------------------------------------- known answers
def test_estimate_matches_plain_loop_and_analytic_value_with_clipping():
    """Fixed weights (lr=0): the callback sees the same micro-batches as a plain loop, so the
    estimates agree; clipping at 1e-3 on the Trainer must not reach the measurement."""
    steps, k, b = 300, 4, 8
    x, y = sample(steps * k * b)
    cb = NoiseScaleCallback()
    _fit(LinReg(), x, y, b, [cb], accumulate_grad_batches=k, gradient_clip_val=1e-3)
    plain = plain_loop(x, y, b, k, steps)
    ours, ref = cb.monitor.estimate(), plain.estimate()
    assert ours.b_simple == pytest.approx(ref.b_simple, rel=0.10)
    assert ours.b_simple == pytest.approx(ref.b_simple, rel=1e-5)  # in fact the same numbers
    truth = WL.b_simple(WL.make_model(0))
    assert ours.ci[0] <= truth <= ours.ci[1]
    assert ours.b_simple == pytest.approx(truth, rel=0.15)
    assert ours.unit == "examples" and ours.n_steps == steps
    assert cb.examples_seen == steps * k * b
    assert [r["accumulation"] for r in cb.monitor.records] == [k] * steps


def test_short_last_step_of_each_epoch_keeps_absolute_values_right():
    """10 batches per epoch with accumulate_grad_batches=4: steps of 4, 4 and 2 micro-batches;
    Lightning divides every loss by 4. |G|^2 = |delta|^2, tr(Sigma) = d(|delta|^2 + s^2) + |delta|^2."""
    k, b, epochs = 4, 8, 60
    x, y = sample(10 * b, seed=1)
    gen = torch.Generator().manual_seed(2)

    class Fresh(LinReg):  # fresh i.i.d. data every batch: the estimate is then unbiased
        def training_step(self, batch, batch_idx):
            return WL.loss(self.net, WL.sample_batch(b, gen))

    cb = NoiseScaleCallback(micro_batch_size=b)
    _fit(Fresh(), x, y, b, [cb], accumulate_grad_batches=k, max_epochs=epochs)
    assert [r["accumulation"] for r in cb.monitor.records[:3]] == [4, 4, 2]
    d_sq = WL.delta_sq(WL.make_model(0))
    est = cb.monitor.estimate()
    assert est.g_sq == pytest.approx(d_sq, rel=0.10)
    assert est.trace_sigma == pytest.approx(16 * (d_sq + 1.0) + d_sq, rel=0.05)


def _cpu_fp16():
    return MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=2.0**12))


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed", "bf16-true", "16-true"])
def test_precisions_measure_the_same_norms(precision):
    """16-mixed: Lightning unscales before on_before_optimizer_step; the callback measures earlier
    and divides the plugin scaler's scale out. (Lightning turns 16-mixed into bf16-mixed on a CPU,
    so the fp16 path runs with an explicit CPU MixedPrecision plugin and a real GradScaler.)"""
    steps, k, b = 12, 3, 8
    x, y = sample(steps * k * b)
    ref = NoiseScaleCallback()
    _fit(LinReg(), x, y, b, [ref], accumulate_grad_batches=k)
    cb = NoiseScaleCallback()
    kw = {"plugins": [_cpu_fp16()]} if precision == "16-mixed" else {"precision": precision}
    trainer = _fit(LinReg(), x, y, b, [cb], accumulate_grad_batches=k, **kw)
    if precision == "16-mixed":
        assert trainer.precision_plugin.scaler.get_scale() == 2.0**12
    tol = 3e-2
    for a, r in zip(ref.monitor.records, cb.monitor.records):
        assert r["small_sq"] == pytest.approx(a["small_sq"], rel=tol)
        assert r["big_sq"] == pytest.approx(a["big_sq"], rel=tol)


# ---------------------------------------------------------------- training unchanged
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed"])
def test_training_is_bit_for_bit_unchanged(precision):
    steps, k, b = 10, 3, 8
    x, y = sample(steps * k * b + 2 * b)  # a short last step too
    kw = {"plugins": [_cpu_fp16()]} if precision == "16-mixed" else {"precision": precision}
    params = []
    for callbacks in ([], [NoiseScaleCallback()]):
        torch.manual_seed(0)
        module = LinReg(lr=0.05)
        _fit(module, x, y, b, callbacks, accumulate_grad_batches=k, gradient_clip_val=0.5, max_epochs=2, **kw)
        params.append([p.detach().clone() for p in module.parameters()])
        if callbacks:
            assert len(callbacks[0].monitor.records) == 2 * (steps + 1)
            assert not callbacks[0].monitor._handles  # hooks removed after fit
    for a, c in zip(*params):
        assert torch.equal(a, c)


# ---------------------------------------------------------------- loggers read back
def test_csv_tensorboard_and_wandb_loggers_receive_the_metrics(tmp_path, monkeypatch):
    from lightning.pytorch.loggers import WandbLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from test_integrations_loggers import _wandb_history

    monkeypatch.setenv("WANDB_SILENT", "true")
    steps, k, b = 40, 2, 8
    x, y = sample(steps * k * b)
    wandb_logger = WandbLogger(offline=True, save_dir=str(tmp_path), project="batchlaw-test")
    loggers = [CSVLogger(tmp_path, name="csv"), TensorBoardLogger(tmp_path, name="tb"), wandb_logger]
    cb = NoiseScaleCallback()
    _fit(LinReg(lr=0.01), x, y, b, [cb], accumulate_grad_batches=k, logger=loggers, log_every_n_steps=5)
    wandb_logger.experiment.finish()

    with open(loggers[0].log_dir + "/metrics.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("gns/b_big")]
    assert len(rows) == steps // 5
    assert {"gns/b_simple", "gns/b_simple_lo", "gns/b_simple_hi", "gns/b_simple_ema", "gns/g_sq",
            "gns/trace_sigma", "gns/small_sq", "gns/big_sq", "gns/b_small", "gns/accumulation"} <= set(rows[-1])
    last = rows[-1]
    assert float(last["gns/b_big"]) == 16.0 and float(last["gns/b_small"]) == 8.0
    est = cb.monitor.estimate(start=steps - 200)
    assert float(last["gns/b_simple"]) == pytest.approx(est.b_simple, rel=1e-5)
    assert float(last["gns/b_simple_lo"]) <= float(last["gns/b_simple"]) <= float(last["gns/b_simple_hi"])
    assert rows[0]["gns/b_simple"] == ""  # 5 steps: too few for an interval, so not logged

    acc = EventAccumulator(loggers[1].log_dir)
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"gns/b_simple", "gns/b_simple_ema", "gns/g_sq", "gns/trace_sigma", "gns/b_big"} <= set(tags)
    events = acc.Scalars("gns/b_simple")
    assert events[-1].value == pytest.approx(est.b_simple, rel=1e-5)
    assert [e.step for e in acc.Scalars("gns/b_big")] == [s - 1 for s in range(5, steps + 1, 5)]

    path = next(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    deadline = time.monotonic() + 30
    while True:  # wandb-core may still be writing the run file when finish() returns
        history = [r for r in _wandb_history(str(path)) if "gns/b_big" in r]
        if len(history) >= steps // 5 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(history) == steps // 5
    assert history[-1]["gns/b_simple"] == pytest.approx(est.b_simple, rel=1e-5)


# ---------------------------------------------------------------- errors
def test_manual_optimization_is_refused_by_name():
    class Manual(LinReg):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            opt = self.optimizers()
            self.manual_backward(WL.loss(self.net, batch))
            opt.step()
            opt.zero_grad()

    x, y = sample(32)
    with pytest.raises(ValueError, match="automatic optimization only"):
        _fit(Manual(), x, y, 8, [NoiseScaleCallback()])


def test_unsupported_strategy_is_refused_by_name():
    """FSDP is refused by Lightning itself on a CPU; on a GPU the callback refuses it when
    fitting starts. The callback's own check is run here on the real strategy object."""
    from types import SimpleNamespace

    from lightning.pytorch.strategies import FSDPStrategy

    x, y = sample(32)
    with pytest.raises(ValueError, match="fsdp"):
        _fit(LinReg(), x, y, 8, [NoiseScaleCallback()], strategy=FSDPStrategy())
    stand_in = SimpleNamespace(strategy=FSDPStrategy(), precision_plugin=pl.plugins.precision.Precision())
    with pytest.raises(ValueError, match="does not support the FSDPStrategy strategy(.|\n)*strategy='ddp'"):
        NoiseScaleCallback._check_supported(stand_in, LinReg())


def test_unsupported_precision_is_refused_by_name():
    class OtherPrecision(pl.plugins.precision.Precision):  # a third-party plugin the callback does not know
        pass

    x, y = sample(32)
    with pytest.raises(ValueError, match="OtherPrecision precision plugin"):
        _fit(LinReg(), x, y, 8, [NoiseScaleCallback()], plugins=[OtherPrecision()])
    with pytest.raises(ValueError, match="DoublePrecision precision plugin(.|\n)*'64-true'"):
        _fit(LinReg(), x, y, 8, [NoiseScaleCallback()], precision="64-true")


def test_batch_without_tensor_asks_for_micro_batch_size():
    class Listy(LinReg):
        def training_step(self, batch, batch_idx):
            return WL.loss(self.net, (torch.tensor(batch["x"]), torch.tensor(batch["y"])))

    rows = [{"x": [[0.5] * 16] * 4, "y": [0.0] * 4}]  # plain Python lists: no tensor to read a size from

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return rows[0]

    with pytest.raises(ValueError, match="micro_batch_size"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _trainer([NoiseScaleCallback()]).fit(Listy(), DataLoader(Rows(), batch_size=None))


def test_single_micro_batch_warns():
    x, y = sample(64)
    with pytest.warns(UserWarning, match="accumulate_grad_batches=1"):
        _trainer([NoiseScaleCallback()]).fit(LinReg(), DataLoader(TensorDataset(x, y), batch_size=8))


def test_auto_cadence_reaches_the_monitor():
    """every="auto": the monitor times its hooks and decides a cadence after its first measured steps; the
    measured steps after the decision are that cadence apart."""
    steps, k, b = 60, 4, 8
    x, y = sample(steps * k * b)
    cb = NoiseScaleCallback(every="auto", overhead_target=0.05)
    _fit(LinReg(), x, y, b, [cb], accumulate_grad_batches=k)
    cad = cb.monitor.cadence
    assert cad["auto"] and cad["target"] == 0.05 and cad["decided_at_step"] is not None
    after = [r["step"] for r in cb.monitor.records if r["step"] > cad["decided_at_step"]]
    assert all(b - a == cad["every"] for a, b in zip(after, after[1:]))


def test_bad_arguments():
    with pytest.raises(ValueError, match="'every' parameter"):
        NoiseScaleCallback(every=0)
    with pytest.raises(ValueError, match="'every' parameter must be a positive integer or 'auto'"):
        NoiseScaleCallback(every="sometimes")
    with pytest.raises(ValueError, match="'overhead_target' parameter"):
        NoiseScaleCallback(every="auto", overhead_target=0)
    with pytest.raises(ValueError, match="'window' parameter"):
        NoiseScaleCallback(window=1)
    with pytest.raises(TypeError, match="'schedule' parameter"):
        NoiseScaleCallback(schedule=object())


def test_missing_lightning_names_the_extra():
    code = ("import sys; sys.modules['lightning'] = None; sys.modules['lightning.pytorch'] = None\n"
            "import batchlaw, batchlaw.integrations\n"
            "try:\n    import batchlaw.integrations.lightning\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pip install 'batchlaw[lightning]'" in out


# ---------------------------------------------------------------- batch-size schedule
class StageSchedule:
    """A small schedule that follows the batchlaw.schedule contract: global batch by examples seen."""

    def __init__(self, stages, micro_batch_size, lr_per_example):
        self.stages, self.b, self.lr_per_example = stages, micro_batch_size, lr_per_example
        self.calls: list[tuple[int, object]] = []
        self._last = None

    def step(self, examples_seen: int, monitor=None) -> BatchChoice:
        self.calls.append((examples_seen, monitor))
        batch = [bb for start, bb in self.stages if examples_seen >= start][-1]
        k = batch // self.b
        changed = self._last is not None and batch != self._last
        self._last = batch
        return BatchChoice(self.b, k, 1, batch, self.lr_per_example * batch, changed)

    def state_dict(self):
        return {"last": self._last, "calls": len(self.calls)}

    def load_state_dict(self, state):
        self._last = state["last"]


def test_schedule_drives_accumulation_and_lr():
    b = 4
    x, y = sample(4 * 64)  # 64 micro-batches in one epoch
    schedule = StageSchedule([(0, 8), (40, 16), (100, 48)], micro_batch_size=b, lr_per_example=1e-4)
    cb = NoiseScaleCallback(schedule=schedule)
    trainer = _fit(LinReg(lr=0.0), x, y, b, [cb])
    ks = [r["accumulation"] for r in cb.monitor.records]
    # 8 examples (K=2) until 40 seen; then 16 (K=4) from an aligned boundary; 48 (K=12) likewise.
    assert ks[:5] == [2] * 5
    assert ks[5] == 2 and ks[6:8] == [4, 4]  # 40 seen after 5 steps; 10 micro-batches is not a multiple of 4
    assert set(ks[8:]) <= {4, 12} and 12 in ks
    for r in cb.monitor.records:  # every step holds exactly its K micro-batches
        assert r["b_big"] == r["accumulation"] * b
    assert cb.examples_seen == sum(ks) * b == len(x)
    assert trainer.accumulate_grad_batches == 12
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(48e-4)
    assert [c["accumulation"] for c in cb.choices][-1] == 12
    assert schedule.calls[0] == (0, cb.monitor) and schedule.calls[1][0] == 8
    assert all(b2 >= b1 for (b1, _), (b2, _) in zip(schedule.calls, schedule.calls[1:]))
    assert cb.state_dict()["schedule"]["last"] == 48


def test_schedule_with_another_micro_batch_is_refused():
    x, y = sample(64)
    schedule = StageSchedule([(0, 12)], micro_batch_size=6, lr_per_example=1e-3)
    with pytest.raises(ValueError, match="micro_batch_size=6 but the training DataLoader gives 8"):
        _fit(LinReg(), x, y, 8, [NoiseScaleCallback(schedule=schedule)])


def test_import_batchlaw_needs_neither_lightning_nor_transformers():
    code = ("import sys, batchlaw, batchlaw.integrations, batchlaw.integrations.loggers\n"
            "print(any(m.split('.')[0] in ('lightning', 'pytorch_lightning', 'transformers') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_state_dict_round_trip_resumes_the_measurement(tmp_path):
    steps, k, b = 20, 2, 8
    x, y = sample(steps * k * b)
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)
    cb = NoiseScaleCallback()
    _fit(LinReg(), x, y, b, [cb, ckpt], accumulate_grad_batches=k, enable_checkpointing=True)
    resumed = NoiseScaleCallback()
    trainer = _trainer([resumed], accumulate_grad_batches=k, max_epochs=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(LinReg(), DataLoader(TensorDataset(x, y), batch_size=b), ckpt_path=str(tmp_path / "last.ckpt"))
    assert len(resumed.monitor.records) == 2 * steps
    assert [r["step"] for r in resumed.monitor.records] == list(range(2 * steps))
    assert resumed.examples_seen == 2 * steps * k * b
    assert math.isfinite(resumed.monitor.estimate().b_simple)


def _real_schedule():
    schedule = pytest.importorskip("batchlaw.schedule")
    if not hasattr(schedule, "FixedRamp"):
        pytest.skip("this batchlaw has no batch-size schedules yet")
    return schedule


def test_real_fixed_ramp_drives_accumulation_and_lr():
    schedule = _real_schedule()
    b = 4
    x, y = sample(4 * 64)
    ramp = schedule.FixedRamp([(0, 8), (40, 16), (100, 48)], lr=1e-3, lr_rule="linear", max_micro_batch=b)
    cb = NoiseScaleCallback(schedule=ramp)
    trainer = _fit(LinReg(), x, y, b, [cb])
    ks = [r["accumulation"] for r in cb.monitor.records]
    assert ks == [2] * 6 + [4] * 6 + [12] * 2 + [4]  # changes wait for aligned boundaries; short last step
    assert trainer.accumulate_grad_batches == 12
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-3 * 48 / 8)  # linear rule
    assert cb.examples_seen == len(x)
    assert cb.state_dict()["schedule"]["current"] == 48


def test_noise_scale_ramp_grows_the_batch_towards_b_simple():
    """Closed loop at fixed weights: B_simple = 33 examples, so the ramp grows the batch from 8
    towards the measured value (at most x2 per change), in micro-batches of 4."""
    schedule = _real_schedule()
    b = 4
    x, y = sample(b * 8 * 120, seed=3)
    ramp = schedule.NoiseScaleRamp(8, lr=1e-4, max_batch=64, max_micro_batch=b, cooldown=10, min_records=10)
    cb = NoiseScaleCallback(schedule=ramp)
    trainer = _fit(LinReg(), x, y, b, [cb])
    ks = [r["accumulation"] for r in cb.monitor.records]
    assert ks[:10] == [2] * 10
    full = ks[:-1]  # the epoch's last step may be short
    assert all(k1 <= k2 <= 2 * k1 for k1, k2 in zip(full, full[1:]))  # grows, at most x2 at a time
    truth = WL.b_simple(WL.make_model(0))
    assert 0.6 * truth <= trainer.accumulate_grad_batches * b <= 1.5 * truth
    assert full[-1] == trainer.accumulate_grad_batches
    assert all(r["b_big"] == r["accumulation"] * b for r in cb.monitor.records)


@pytest.mark.slow
def test_example_script_runs(tmp_path):
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parents[1] / "examples"))
    try:
        import lightning_noise_scale
    finally:
        sys.path.pop(0)
    out = lightning_noise_scale.main(["--steps", "60", "--micro-batch", "8", "--out", str(tmp_path)])
    assert out["unit"] == "examples" and out["b_simple"] > 0 and out["ci"][0] <= out["b_simple"] <= out["ci"][1]
