"""NoiseScaleCallback for transformers.Trainer and the accelerate pattern, with the real packages,
against the plain-loop monitor and the analytic B_simple of linear regression at fixed weights."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch

transformers = pytest.importorskip("transformers")
accelerate = pytest.importorskip("accelerate")
from accelerate import Accelerator  # noqa: E402
from accelerate.state import AcceleratorState, GradientState  # noqa: E402
from transformers import Trainer, TrainingArguments  # noqa: E402

from monitor_reference import WL, plain_loop, sample  # noqa: E402

from batchlaw.integrations.hf import NoiseScaleCallback  # noqa: E402
from batchlaw.noise import GradientNoiseMonitor  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")
transformers.logging.set_verbosity_error()


class Net(torch.nn.Module):
    """A model the Trainer can drive: keyword inputs in, {"loss": ...} out."""

    def __init__(self, seed: int = 0):
        super().__init__()
        self.net = WL.make_model(seed)

    def forward(self, x, labels):
        return {"loss": WL.loss(self.net, (x, labels))}


class Rows(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def _args(tmp_path, b, k, **kw):
    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=b, gradient_accumulation_steps=k,
                learning_rate=0.0, num_train_epochs=1, logging_steps=10, report_to=[], use_cpu=True,
                train_sampling_strategy="sequential", remove_unused_columns=False, save_strategy="no",
                disable_tqdm=True, seed=0)
    base.update(kw)
    return TrainingArguments(**base)


def test_trainer_estimate_matches_plain_loop_and_analytic_value(tmp_path):
    """Fixed weights (learning_rate=0), the Trainer clipping at 1e-3: the callback must measure
    before the clipping and see the same micro-batches as the plain loop."""
    steps, k, b = 250, 4, 8
    x, y = sample(steps * k * b)
    args = _args(tmp_path, b, k, max_grad_norm=1e-3, logging_steps=5)
    trainer = Trainer(model=Net(), args=args, train_dataset=Rows(x, y))
    cb = NoiseScaleCallback().attach(trainer)
    trainer.train()
    ours, ref = cb.monitor.estimate(), plain_loop(x, y, b, k, steps).estimate()
    assert ours.b_simple == pytest.approx(ref.b_simple, rel=0.10)
    assert ours.b_simple == pytest.approx(ref.b_simple, rel=1e-5)
    truth = WL.b_simple(WL.make_model(0))
    assert ours.ci[0] <= truth <= ours.ci[1]
    assert ours.n_steps == steps and ours.unit == "examples"
    # the metrics are in the Trainer's log history, beside its own loss
    entries = [e for e in trainer.state.log_history if "loss" in e]
    assert len(entries) == steps // 5
    assert all("gns/b_big" in e and e["gns/b_big"] == k * b for e in entries)
    assert entries[-1]["gns/b_simple"] == pytest.approx(cb.monitor.estimate(start=steps - 200).b_simple, rel=1e-9)
    assert "gns/b_simple" not in entries[0]  # 5 steps: too few for an interval
    assert "gns/b_simple" in entries[9]  # 50 independent steps: enough
    assert not cb.monitor._handles  # hooks removed after training


def test_short_last_step_and_batch_size_from_inputs(tmp_path):
    """10 micro-batches with gradient_accumulation_steps=4: steps of 4, 4, 2 (the Trainer divides
    the last step's losses by 2); the last micro-batch holds 5 examples, not 8."""
    b, k = 8, 4
    x, y = sample(9 * b + 5)
    trainer = Trainer(model=Net(), args=_args(tmp_path, b, k), train_dataset=Rows(x, y))
    cb = NoiseScaleCallback().attach(trainer)
    trainer.train()
    recs = cb.monitor.records
    assert [r["accumulation"] for r in recs] == [4, 4, 2]
    harmonic = 2 / (1 / 8 + 1 / 5)  # E|g_i|^2 = |G|^2 + tr(Sigma)/n_i: exact, no longer rounded to 6
    assert [r["micro_batch_size"] for r in recs] == [8, 8, pytest.approx(harmonic, rel=1e-12)]
    assert [r["b_small"] for r in recs] == [8, 8, pytest.approx(harmonic, rel=1e-12)]
    assert recs[2]["b_big"] == pytest.approx(2 * harmonic, rel=1e-12) and recs[2]["global_batch"] == 13


class PaddedNet(torch.nn.Module):
    """Like a transformers model: takes ``**kwargs``, so the Trainer passes ``num_items_in_batch``
    (the labels other than -100 in the whole step) and the loss is the sum over this micro-batch's
    labelled rows divided by it."""

    def __init__(self, seed: int = 0):
        super().__init__()
        self.net = WL.make_model(seed)

    def forward(self, x, labels, **kwargs):
        valid = labels != -100
        per_row = 0.5 * (self.net(x).squeeze(-1) - labels).square() * valid
        n = kwargs.get("num_items_in_batch")
        return {"loss": per_row.sum() / (valid.sum() if n is None else n)}


def _padded(steps, k, rows, seed=0):
    """``steps * k`` micro-batches of ``rows`` rows, the first ``n_i`` labelled (``n_i`` about 32,
    CV 0.3) and the rest padding (label -100), with the sizes ``n_i`` per step."""
    import numpy as np

    x, y = sample(steps * k * rows, seed)
    rng = np.random.default_rng(seed)
    n = np.clip(np.round(32 * (1 + 0.3 * rng.standard_normal(steps * k))), 1, rows).astype(int)
    y = y.clone()
    for j, nj in enumerate(n):
        y[j * rows + nj:(j + 1) * rows] = -100.0
    return x, y, n.reshape(steps, k).tolist()


def test_trainer_weighting_micro_batches_by_labels_matches_the_exact_loop(tmp_path):
    """The Trainer normalises by num_items_in_batch, so micro-batch i weighs n_i / N: the callback
    passes the label counts (loss_normalisation="step") and agrees with the plain loop stepped
    with those sizes. Before, it took every micro-batch as 64 examples weighed 1/K."""
    steps, k, rows = 250, 4, 64
    x, y, sizes = _padded(steps, k, rows)
    trainer = Trainer(model=PaddedNet(), args=_args(tmp_path, rows, k, max_grad_norm=1e-3), train_dataset=Rows(x, y))
    assert trainer.model_accepts_loss_kwargs
    cb = NoiseScaleCallback().attach(trainer)
    trainer.train()
    model = WL.make_model(0)
    ref = GradientNoiseMonitor(model, loss_normalisation="step")
    for s, step_sizes in enumerate(sizes):
        total = sum(step_sizes)
        for j, n in enumerate(step_sizes):
            i = (s * k + j) * rows
            (0.5 * (model(x[i:i + n]).squeeze(-1) - y[i:i + n]).square().sum() / total).backward()
        ref.step(sizes=step_sizes)
        model.zero_grad(set_to_none=True)
    ours, exact = cb.monitor.estimate(), ref.estimate()
    assert ours.b_simple == pytest.approx(exact.b_simple, rel=1e-5)
    assert ours.g_sq == pytest.approx(exact.g_sq, rel=1e-5)
    assert [r["b_small"] for r in cb.monitor.records] == pytest.approx([r["b_small"] for r in ref.records], rel=1e-12)
    truth = WL.b_simple(WL.make_model(0))  # 33; one seed's interval misses it 5% of the time, so the check is
    assert ours.b_simple == pytest.approx(truth, rel=0.15)  # on the estimate (30.7 here; 72 with 1/K weights)


def test_label_tokens_need_the_tokens_unit(tmp_path):
    class TokenNet(PaddedNet):
        def forward(self, x, labels, **kwargs):
            return super().forward(x, labels[:, 0], **kwargs)

    x, y = sample(4 * 8)
    ds = Rows(x, torch.stack([y, y], 1))  # two labels per example: counted as tokens by the Trainer
    trainer = Trainer(model=TokenNet(), args=_args(tmp_path, 8, 2), train_dataset=ds)
    NoiseScaleCallback().attach(trainer)
    with pytest.raises(ValueError, match=r"must be measured in tokens: pass NoiseScaleCallback\(tokens_per_example"):
        trainer.train()
    trainer = Trainer(model=TokenNet(), args=_args(tmp_path, 8, 2), train_dataset=ds)
    cb = NoiseScaleCallback(tokens_per_example=2).attach(trainer)
    trainer.train()
    assert [r["b_big"] for r in cb.monitor.records] == [32.0, 32.0]  # 2 x 8 examples x 2 label tokens


def test_trainer_loss_hidden_from_the_callback_is_refused(tmp_path):
    x, y = sample(32)
    trainer = Trainer(model=Net(), args=_args(tmp_path, 8, 2), train_dataset=Rows(x, y),
                      compute_loss_func=lambda outputs, labels, num_items_in_batch=None: outputs["loss"])
    NoiseScaleCallback().attach(trainer)
    with pytest.raises(ValueError, match="does not support a Trainer with compute_loss_func"):
        trainer.train()


@pytest.mark.parametrize("bf16", [False, True])
def test_training_is_bit_for_bit_unchanged(tmp_path, bf16):
    steps, k, b = 8, 3, 8
    x, y = sample(steps * k * b)
    params = []
    for with_cb in (False, True):
        model = Net()
        trainer = Trainer(model=model, args=_args(tmp_path, b, k, learning_rate=0.05, max_grad_norm=0.5, bf16=bf16),
                          train_dataset=Rows(x, y))
        if with_cb:
            cb = NoiseScaleCallback().attach(trainer)
        trainer.train()
        params.append([p.detach().clone() for p in model.parameters()])
    assert len(cb.monitor.records) == steps
    for a, c in zip(*params):
        assert torch.equal(a, c)


def test_report_to_tensorboard_receives_the_metrics(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps, k, b = 40, 2, 8
    x, y = sample(steps * k * b)
    logdir = tmp_path / "out"  # the Trainer's TensorBoard logs go under output_dir
    args = _args(tmp_path, b, k, report_to=["tensorboard"], logging_steps=5)
    trainer = Trainer(model=Net(), args=args, train_dataset=Rows(x, y))
    cb = NoiseScaleCallback().attach(trainer)
    trainer.train()
    acc = EventAccumulator(str(next(p for p in logdir.rglob("events.out.tfevents.*")).parent))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for key in ("b_simple", "b_simple_lo", "b_simple_hi", "b_simple_ema", "g_sq", "trace_sigma", "b_big", "small_sq"):
        assert f"train/gns/{key}" in tags, tags
    last = acc.Scalars("train/gns/b_simple")[-1]
    assert last.step == steps and last.value == pytest.approx(cb.monitor.estimate().b_simple, rel=1e-5)
    assert [e.step for e in acc.Scalars("train/gns/b_big")] == list(range(5, steps + 1, 5))


def test_added_without_attach_warns_and_still_fills_log_history(tmp_path):
    steps, k, b = 50, 2, 8
    x, y = sample(steps * k * b)
    cb = NoiseScaleCallback()
    args = _args(tmp_path, b, k, report_to=["tensorboard"])
    trainer = Trainer(model=Net(), args=args, train_dataset=Rows(x, y), callbacks=[cb])
    with pytest.warns(UserWarning, match=r"attach\(trainer\)"):
        trainer.train()
    assert "gns/b_simple" in [e for e in trainer.state.log_history if "loss" in e][-1]


def test_unsupported_setups_are_refused_by_name(tmp_path):
    args = _args(tmp_path, 8, 2, fsdp="full_shard")  # real arguments as the Trainer would get them
    with pytest.raises(ValueError, match="does not support FSDP"):
        NoiseScaleCallback._check_supported(args)
    args = _args(tmp_path, 8, 2, gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": True})
    with pytest.raises(ValueError, match="reentrant activation checkpointing"):
        NoiseScaleCallback._check_supported(args)
    NoiseScaleCallback._check_supported(_args(tmp_path, 8, 2, gradient_checkpointing=True))  # non-reentrant: fine
    with pytest.raises(ValueError, match="'window' parameter"):
        NoiseScaleCallback(window=2)
    with pytest.raises(TypeError, match="transformers.Trainer"):
        NoiseScaleCallback().attach(object())


def test_auto_cadence_reaches_the_monitor(tmp_path):
    """every="auto" through the Trainer: a cadence is decided, and the measured steps after it are that far apart."""
    steps, k, b = 60, 4, 8
    x, y = sample(steps * k * b)
    trainer = Trainer(model=Net(), args=_args(tmp_path, b, k), train_dataset=Rows(x, y))
    cb = NoiseScaleCallback(every="auto", overhead_target=0.05).attach(trainer)
    trainer.train()
    cad = cb.monitor.cadence
    assert cad["auto"] and cad["target"] == 0.05 and cad["decided_at_step"] is not None
    after = [r["step"] for r in cb.monitor.records if r["step"] > cad["decided_at_step"]]
    assert all(b - a == cad["every"] for a, b in zip(after, after[1:]))
    with pytest.raises(ValueError, match="'every' parameter must be a positive integer or 'auto'"):
        NoiseScaleCallback(every="sometimes")


def test_single_micro_batch_warns(tmp_path):
    x, y = sample(32)
    trainer = Trainer(model=Net(), args=_args(tmp_path, 8, 1), train_dataset=Rows(x, y))
    NoiseScaleCallback().attach(trainer)
    with pytest.warns(UserWarning, match="gradient_accumulation_steps=1"):
        trainer.train()


def test_missing_transformers_names_the_extra():
    code = ("import sys; sys.modules['transformers'] = None\n"
            "try:\n    import batchlaw.integrations.hf\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pip install 'batchlaw[hf]'" in out


# ---------------------------------------------------------------- accelerate, documented pattern
def _accelerate_loop(x, y, b, k, steps, lr, mixed_precision="no", with_monitor=True):
    torch.manual_seed(0)
    accelerator = Accelerator(gradient_accumulation_steps=k, cpu=True, mixed_precision=mixed_precision)
    model = WL.make_model(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=b)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    monitor = GradientNoiseMonitor(model, micro_batch_size=b, scaler=accelerator.scaler) if with_monitor else None
    for batch in loader:
        with accelerator.accumulate(model):
            with accelerator.autocast():
                loss = WL.loss(model, batch)
            accelerator.backward(loss)  # accelerate divides the loss by k
            if accelerator.sync_gradients:
                if monitor is not None:
                    monitor.step()  # before clipping and the optimizer step
                accelerator.clip_grad_norm_(model.parameters(), 1e-3)
            optimizer.step()
            optimizer.zero_grad()
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    return model, monitor


def test_accelerate_pattern_matches_plain_loop():
    steps, k, b = 250, 4, 8
    x, y = sample(steps * k * b)
    _, monitor = _accelerate_loop(x, y, b, k, steps, lr=0.0)
    ours, ref = monitor.estimate(), plain_loop(x, y, b, k, steps).estimate()
    assert ours.b_simple == pytest.approx(ref.b_simple, rel=1e-5)
    assert ours.g_sq == pytest.approx(ref.g_sq, rel=1e-5)  # the loss division by k is accounted for
    truth = WL.b_simple(WL.make_model(0))
    assert ours.ci[0] <= truth <= ours.ci[1]


@pytest.mark.parametrize("mixed_precision", ["no", "bf16"])
def test_accelerate_pattern_leaves_training_unchanged(mixed_precision):
    steps, k, b = 10, 3, 8
    x, y = sample(steps * k * b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain, _ = _accelerate_loop(x, y, b, k, steps, 0.05, mixed_precision, with_monitor=False)
        watched, monitor = _accelerate_loop(x, y, b, k, steps, 0.05, mixed_precision)
    assert len(monitor.records) == steps
    for a, c in zip(plain.parameters(), watched.parameters()):
        assert torch.equal(a, c)


@pytest.mark.slow
def test_example_script_runs(tmp_path):
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parents[1] / "examples"))
    try:
        import hf_trainer_noise_scale
    finally:
        sys.path.pop(0)
    out = hf_trainer_noise_scale.main(["--steps", "12", "--context", "16", "--out", str(tmp_path)])
    assert out["unit"] == "tokens" and out["b_simple"] > 0
    assert out["last_log"]["gns/b_big"] == 4 * 8 * 15  # K micro-batches of 8 blocks of 16 tokens: 15 predicted
    # one unit per record (issue 22 item 16): b_small in tokens, and no batch size in sequences beside it
    assert out["last_log"]["gns/b_small"] == 8 * 15
    assert not {"gns/micro_batch_size", "gns/global_batch"} & set(out["last_log"])
    assert list(tmp_path.rglob("events.out.tfevents.*"))  # report_to=["tensorboard"] wrote its file


@pytest.mark.slow
def test_activation_checkpointing_measures_the_same(tmp_path):
    """A GPT-2 built from a config, with and without (non-reentrant) activation checkpointing:
    the recomputation must not disturb where the callback finds the end of the backward."""
    from transformers import GPT2Config, GPT2LMHeadModel

    blocks = torch.randint(0, 64, (6 * 2 * 4, 12), generator=torch.Generator().manual_seed(0))  # (48, 12)

    class Blocks(torch.utils.data.Dataset):
        def __len__(self):
            return len(blocks)

        def __getitem__(self, i):
            return {"input_ids": blocks[i], "labels": blocks[i]}

    runs = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=12, n_embd=16, n_layer=2, n_head=2))
        args = _args(tmp_path, 4, 2, gradient_checkpointing=checkpointing)
        trainer = Trainer(model=model, args=args, train_dataset=Blocks())
        cb = NoiseScaleCallback(tokens_per_example=12).attach(trainer)
        trainer.train()
        assert model.is_gradient_checkpointing == checkpointing
        runs.append(cb.monitor.records)
    assert len(runs[0]) == 6 and [r["b_small"] for r in runs[0]] == [44.0] * 6  # 4 blocks x 11 predicted tokens
    for a, c in zip(*runs):
        assert c["small_sq"] == pytest.approx(a["small_sq"], rel=1e-5)
        assert c["big_sq"] == pytest.approx(a["big_sq"], rel=1e-5)
