"""BatchControllerCallback for Lightning: the controller drives accumulate_grad_batches and the learning rate,
branches on a copy of the LightningModule with examples that never come from the Trainer's DataLoader."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch

pl = pytest.importorskip("lightning.pytorch")
from monitor_reference import WL, sample  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from batchlaw.integrations.lightning import BatchControllerCallback  # noqa: E402
from batchlaw.schedule import BatchController  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)


class LinReg(pl.LightningModule):
    def __init__(self, lr: float = 0.01):
        super().__init__()
        self.net = WL.make_model(0)
        self.lr = lr
        self.seen_rows = 0

    def loss(self, batch):
        return WL.loss(self.net, batch)

    def training_step(self, batch, batch_idx):
        self.seen_rows += len(batch[0])
        return self.loss(batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def _fit(module, callback, x, y, b):
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[callback])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, DataLoader(TensorDataset(x, y), batch_size=b))
    return trainer


def _controller(**kw):
    args = dict(max_batch=64, lr_rule="linear", max_lr=0.5, max_micro_batch=4, planned_examples=20_000,
                branch_budget=0.1)
    args.update(kw)
    return BatchController(8, 0.01, **args)


def test_the_controller_grows_accumulation_by_branches_and_sets_the_rule_s_learning_rate():
    """SGD far below its best learning rate: the first branch test finds the larger batch free and the batch grows
    at once; accumulate_grad_batches follows; the learning rate is the linear rule's."""
    x, y = sample(4 * 8 * 100, seed=3)
    ctl = _controller()
    module = LinReg()
    cb = BatchControllerCallback(ctl, loss_fn=lambda m, batch: m.loss(batch))
    trainer = _fit(module, cb, x, y, 4)
    first = ctl.decisions[0]
    assert first["path"] == "branch" and first["decision"] == "grow"
    ks = [r["accumulation"] for r in cb.monitor.records]
    assert ks[0] == first["new_batch"] // 4 and max(ks) * 4 == 64
    assert all(r["b_big"] == r["accumulation"] * 4 for r in cb.monitor.records)  # whole steps of K micro-batches
    assert trainer.accumulate_grad_batches == 16
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.08)  # 0.01 x 64 / 8
    assert cb.examples_seen == module.seen_rows == len(x)  # branches never drew from the DataLoader
    assert ctl.branch_examples > 0 and ctl.branch_examples <= 0.1 * 20_000
    assert cb.state_dict()["schedule"]["want"] == 64


def test_without_loss_fn_the_noise_scale_decides_alone():
    x, y = sample(4 * 8 * 100, seed=3)
    ctl = _controller()
    cb = BatchControllerCallback(ctl)
    _fit(LinReg(), cb, x, y, 4)
    assert ctl.branch_examples == 0 and all(d["path"] == "noise" for d in ctl.decisions)


def test_the_controller_state_travels_in_the_callback_state():
    x, y = sample(4 * 8 * 40, seed=3)
    ctl = _controller()
    cb = BatchControllerCallback(ctl, loss_fn=lambda m, batch: m.loss(batch))
    _fit(LinReg(), cb, x, y, 4)
    state = cb.state_dict()
    ctl2 = _controller()
    cb2 = BatchControllerCallback(ctl2)
    cb2.load_state_dict(state)
    cb2.monitor = cb.monitor  # what on_fit_start would have made: the restored state is loaded then
    cb2._load_restored()
    assert ctl2.decisions == ctl.decisions and ctl2.current_batch == ctl.current_batch


def test_bad_arguments_are_refused():
    with pytest.raises(TypeError, match="'controller'"):
        BatchControllerCallback(object())
    with pytest.raises(TypeError, match="'loss_fn'"):
        BatchControllerCallback(_controller(), loss_fn=3)
    x, y = sample(64)
    with pytest.raises(ValueError, match="micro_batch_size=4 but the training DataLoader gives 8"):
        _fit(LinReg(), BatchControllerCallback(_controller()), x, y, 8)
