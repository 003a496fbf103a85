"""NoiseScaleCallback under Lightning's DDP strategy: two gloo processes on CPU (ddp_spawn)."""

from __future__ import annotations

import json
import logging
import warnings

import pytest
import torch

pl = pytest.importorskip("lightning.pytorch")
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from batchlaw.integrations.lightning import NoiseScaleCallback  # noqa: E402
from batchlaw.noise import GradientNoiseMonitor  # noqa: E402
from batchlaw.workloads import LinearRegression  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore"), pytest.mark.slow]
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
logging.getLogger("lightning.fabric").setLevel(logging.ERROR)

WL = LinearRegression(dim=16, noise_std=1.0, init_distance=1.0)
W, K, B, STEPS = 2, 2, 8, 100


class LinReg(pl.LightningModule):
    def __init__(self, lr: float):
        super().__init__()
        self.net = WL.make_model(0)
        self.lr = lr

    def training_step(self, batch, batch_idx):
        return WL.loss(self.net, batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class Dump(pl.Callback):
    """Writes each rank's monitor records and final weights where the parent process reads them."""

    def __init__(self, path: str, noise: NoiseScaleCallback | None):
        self.path, self.noise = path, noise

    def on_fit_end(self, trainer, pl_module):
        out = {"weight": pl_module.net.weight.detach().flatten().tolist()}
        if self.noise is not None:
            out["records"] = self.noise.monitor.records
            out["examples_seen"] = self.noise.examples_seen
        with open(f"{self.path}/rank{trainer.global_rank}.json", "w") as fh:
            json.dump(out, fh)


def _run(tmp_path, lr: float, with_noise: bool, x, y, **kw):
    noise = NoiseScaleCallback() if with_noise else None
    trainer = pl.Trainer(
        accelerator="cpu", devices=W, strategy="ddp_spawn", max_epochs=1, accumulate_grad_batches=K,
        callbacks=[c for c in (noise, Dump(str(tmp_path), noise)) if c is not None], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(LinReg(lr), DataLoader(TensorDataset(x, y), batch_size=B))
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(W)]


def test_ddp_strategy_measures_like_one_process_and_leaves_training_unchanged(tmp_path):
    """Lightning's DistributedSampler shuffles the training set with seed 0 and gives rank r the
    samples perm[r], perm[r + W], ...; a single process that accumulates the same W*K micro-batches
    per step (and clips and steps SGD the same way) computes the same pair of squared norms
    (b, W K b) at the same weights. Training with the callback is bit-for-bit training without it."""
    n = STEPS * W * K * B
    x, y = WL.sample_batch(n, torch.Generator().manual_seed(0))
    (tmp_path / "plain").mkdir()
    (tmp_path / "watched").mkdir()
    lr, clip = 0.02, 0.5
    plain_run = _run(tmp_path / "plain", lr, False, x, y, gradient_clip_val=clip)
    ranks = _run(tmp_path / "watched", lr, True, x, y, gradient_clip_val=clip)
    assert plain_run[0]["weight"] == ranks[0]["weight"] == ranks[1]["weight"]

    records = ranks[0]["records"]
    assert records == ranks[1]["records"]  # every rank holds the same measurement
    assert len(records) == STEPS and {r["world_size"] for r in records} == {W}
    assert {r["global_batch"] for r in records} == {W * K * B} and {r["b_big"] for r in records} == {W * K * B}
    assert ranks[0]["examples_seen"] == n

    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))  # DistributedSampler, epoch 0
    model = WL.make_model(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    plain = GradientNoiseMonitor(model, micro_batch_size=B)
    for s in range(STEPS):
        for k in range(K):
            for r in range(W):
                idx = perm[r::W][(s * K + k) * B:(s * K + k + 1) * B]
                (WL.loss(model, (x[idx], y[idx])) / (W * K)).backward()
        plain.step()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    for ours, ref in zip(records, plain.records):
        assert ours["small_sq"] == pytest.approx(ref["small_sq"], rel=1e-3)
        assert ours["big_sq"] == pytest.approx(ref["big_sq"], rel=1e-3)  # measured before the clipping
    mon = GradientNoiseMonitor(torch.nn.Linear(1, 1), micro_batch_size=B)
    mon.tracker.records = [dict(r) for r in records]
    assert mon.estimate().b_simple == pytest.approx(plain.estimate().b_simple, rel=0.10)
