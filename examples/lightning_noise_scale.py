"""The gradient noise scale of a Lightning run, in its CSV and TensorBoard logs.

A next-byte MLP learns the Python standard library's source (read from this interpreter, no
download), with ``accumulate_grad_batches=4`` and gradient clipping. ``NoiseScaleCallback``
measures ``B_simple`` before the clipping and logs it with Lightning's own logging, so every
logger configured on the Trainer receives ``gns/b_simple``, its interval ends, its EMA,
``gns/g_sq``, ``gns/trace_sigma`` and the batch sizes.

    python examples/lightning_noise_scale.py --steps 100 --out lightning-gns

About 15 s on two idle CPU cores. Then ``tensorboard --logdir lightning-gns`` or read
``lightning-gns/csv/version_0/metrics.csv``.
"""

from __future__ import annotations

import argparse
import csv
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from batchlaw.errors import InsufficientDataError
from batchlaw.integrations.lightning import NoiseScaleCallback
from batchlaw.workloads import ByteMLP


class ByteWindows(torch.utils.data.Dataset):
    """``n`` random windows of the training text (fixed by ``seed``): (context bytes, next byte)."""

    def __init__(self, workload: ByteMLP, n: int, seed: int = 0):
        self.x, self.y = workload.sample_batch(n, torch.Generator().manual_seed(seed))  # (n, context), (n,)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


class ByteModel(pl.LightningModule):
    def __init__(self, workload: ByteMLP, lr: float):
        super().__init__()
        self.workload = workload
        self.net = workload.make_model(0)
        self.lr = lr

    def training_step(self, batch, batch_idx):
        loss = self.workload.loss(self.net, batch)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps")
    parser.add_argument("--micro-batch", type=int, default=16, help="examples per micro-batch")
    parser.add_argument("--accumulate", type=int, default=4, help="micro-batches per optimizer step (>= 2)")
    parser.add_argument("--precision", default="32-true", help="Lightning precision, e.g. bf16-mixed")
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    parser.add_argument("--out", default="lightning-gns", help="directory for the CSV and TensorBoard logs")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    workload = ByteMLP(context=8, embed=16, hidden=64)
    data = ByteWindows(workload, args.steps * args.accumulate * args.micro_batch)
    loggers = [CSVLogger(args.out, name="csv"), TensorBoardLogger(args.out, name="tb")]
    noise = NoiseScaleCallback(window=100)
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, precision=args.precision,
        accumulate_grad_batches=args.accumulate, gradient_clip_val=1.0,
        logger=loggers, log_every_n_steps=10, callbacks=[noise],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on dataloader workers
        trainer.fit(ByteModel(workload, args.lr), torch.utils.data.DataLoader(data, batch_size=args.micro_batch))

    try:
        estimate, note = noise.monitor.estimate(start=max(args.steps - 100, 0)), ""
    except InsufficientDataError as err:  # too few steps for an honest interval: say so, keep the value
        estimate, note = err.provisional, str(err)
    metrics = Path(loggers[0].log_dir) / "metrics.csv"
    with metrics.open(newline="") as fh:
        logged = [row for row in csv.DictReader(fh) if row.get("gns/b_simple")]
    print(f"last 100 steps: {estimate}" + (f"\n  no interval: {note}" if note else ""))
    if logged:
        print(f"{len(logged)} rows with gns/b_simple in {metrics}; last: {float(logged[-1]['gns/b_simple']):.0f} "
              f"({float(logged[-1]['gns/b_simple_lo']):.0f} to {float(logged[-1]['gns/b_simple_hi'] or 'inf'):.0f}) "
              "examples")
    return {"b_simple": estimate.b_simple, "ci": estimate.ci, "unit": estimate.unit, "note": note,
            "metrics_csv": str(metrics)}


if __name__ == "__main__":
    main()
