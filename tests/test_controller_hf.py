"""BatchControllerCallback for the Hugging Face Trainer: the batch grows through gradient_accumulation_steps at
boundaries the Trainer follows, each optimizer step gets the rule's learning rate for the batch it had, and
branches never draw from the Trainer's data stream."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
from accelerate.state import AcceleratorState, GradientState  # noqa: E402
from monitor_reference import WL, sample  # noqa: E402
from transformers import Trainer, TrainerCallback, TrainingArguments  # noqa: E402

from batchlaw.integrations.hf import BatchControllerCallback  # noqa: E402
from batchlaw.schedule import BatchController  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")
transformers.logging.set_verbosity_error()


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = WL.make_model(0)
        self.rows = 0

    def forward(self, x, labels):
        if self.training and torch.is_grad_enabled():
            self.rows += len(x)
        return {"loss": WL.loss(self.net, (x, labels))}


class Rows(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


class StepLog(TrainerCallback):
    """The learning rate each optimizer step used (read before the Trainer's scheduler moves it)."""

    def __init__(self):
        self.lrs = []

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        self.lrs.append(optimizer.param_groups[0]["lr"])


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def _train(tmp_path, ctl, n, *, b=4, k=2, **cb_kw):
    x, y = sample(n, seed=3)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=b,
                             gradient_accumulation_steps=k, learning_rate=0.01, optim="sgd",
                             lr_scheduler_type="constant", num_train_epochs=1, report_to=[], use_cpu=True,
                             train_sampling_strategy="sequential", remove_unused_columns=False, save_strategy="no",
                             disable_tqdm=True, logging_strategy="no", seed=0)
    model = Net()
    trainer = Trainer(model=model, args=args, train_dataset=Rows(x, y))
    log = StepLog()
    trainer.add_callback(log)
    cb = BatchControllerCallback(ctl, **cb_kw).attach(trainer)
    trainer.train()
    return cb, log, model, args


def _controller(**kw):
    args = dict(max_batch=64, lr_rule="linear", max_lr=0.5, max_micro_batch=4, planned_examples=20_000,
                branch_budget=0.1)
    args.update(kw)
    return BatchController(8, 0.01, **args)


def test_the_batch_grows_through_gradient_accumulation_with_the_rule_s_learning_rate(tmp_path):
    ctl = _controller()
    cb, log, model, args = _train(tmp_path, ctl, 4 * 8 * 100)
    ks = [r["accumulation"] for r in cb.monitor.records]
    assert ctl.decisions[0]["path"] == "branch" and ctl.decisions[0]["decision"] == "grow"
    assert max(ks) == 16 and args.gradient_accumulation_steps == 16
    full = ks[:-1]  # the epoch's last step may be short
    assert all(k1 <= k2 for k1, k2 in zip(full, full[1:]))
    assert all(r["b_big"] == r["accumulation"] * 4 for r in cb.monitor.records)  # whole steps of K micro-batches
    for r, lr in zip(cb.monitor.records, log.lrs):  # the linear rule for the batch each step really had
        assert lr == pytest.approx(0.01 * r["global_batch"] / 8)
    assert cb.examples_seen == model.rows == 4 * 8 * 100  # branches never drew from the Trainer's data
    assert ctl.branch_examples > 0
    assert [k for _, k in cb.applied] == sorted(k for _, k in cb.applied)


def test_branch_false_decides_from_the_noise_scale_only(tmp_path):
    ctl = _controller()
    cb, _, _, _ = _train(tmp_path, ctl, 4 * 8 * 60, branch=False)
    assert ctl.branch_examples == 0 and all(d["path"] == "noise" for d in ctl.decisions)


def test_a_controller_that_does_not_start_at_the_trainer_s_batch_is_refused(tmp_path):
    with pytest.raises(ValueError, match="per_device_train_batch_size=4, gradient_accumulation_steps=4"):
        _train(tmp_path, _controller(), 64, k=4)
    with pytest.raises(TypeError, match="'controller'"):
        BatchControllerCallback(None)
