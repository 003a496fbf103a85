"""An ordinary PyTorch model and dataset, wrapped as a batchlaw workload.

Everything here is what a training script already has: a ``torch.utils.data.Dataset``, an
``nn.Module``, AdamW with weight decay (none on biases and norms), a linear warm-up, gradient
clipping, optional bf16 autocast, CUDA when available. The ``OwnModel`` class only says how
batchlaw should draw a batch, compute the loss and evaluate. Use it with

    batchlaw sweep --workload own_model:OwnModel --workload-arg hidden=64 ...

from the directory holding this file (or with that directory on PYTHONPATH).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset, default_collate

from batchlaw.workloads import Workload


def make_datasets(n_train: int = 20_000, n_heldout: int = 4_000, dim: int = 16, classes: int = 4,
                  data_seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """A classification task from a random teacher network, with label noise (stands in for your data)."""
    gen = torch.Generator().manual_seed(data_seed)
    teacher = torch.nn.Sequential(torch.nn.Linear(dim, 32), torch.nn.Tanh(), torch.nn.Linear(32, classes))
    with torch.no_grad():
        for p in teacher.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 1.5)

    def draw(n):
        x = torch.randn(n, dim, generator=gen)  # (n, dim)
        with torch.no_grad():
            logits = teacher(x)
        gumbel = -torch.log(-torch.log(torch.rand(n, classes, generator=gen)))
        return TensorDataset(x, (logits + gumbel).argmax(-1))  # labels: (n,) int64

    return draw(n_train), draw(n_heldout)


class Classifier(torch.nn.Module):
    """A plain MLP classifier (LayerNorm, not BatchNorm: micro-batches must be independent)."""

    def __init__(self, dim: int, hidden: int, classes: int, dropout: float):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(dim, hidden), torch.nn.LayerNorm(hidden), torch.nn.GELU(), torch.nn.Dropout(dropout),
            torch.nn.Linear(hidden, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, dim) -> (B, classes)
        return self.net(x)


class OwnModel(Workload):
    """The model and data above, trained the way a user would train them.

    Args:
        hidden: hidden width.
        dropout: dropout probability (off during evaluation).
        weight_decay: AdamW weight decay (not applied to biases and LayerNorm weights).
        warmup_steps: linear learning-rate warm-up, in optimizer steps.
        clip: maximum gradient norm (``None``: no clipping).
        amp: run the forward pass under bf16 autocast.
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        data_seed: seed of the dataset.
    """

    name = "own_model"
    default_lr = 3e-3
    default_micro_batch = 32
    lr_scaling = 0.5  # AdamW: square-root rule when the sweep moves the batch

    def __init__(self, hidden: int = 64, dropout: float = 0.0, weight_decay: float = 0.01, warmup_steps: int = 10,
                 clip: float | None = 1.0, amp: bool = False, device: str = "auto", data_seed: int = 0):
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"The 'device' parameter must be 'auto', 'cpu' or 'cuda'. Got {device!r} instead.")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.hidden, self.dropout, self.weight_decay = hidden, dropout, weight_decay
        self.warmup_steps, self.amp = warmup_steps, amp
        self.clip_grad_norm = clip  # batchlaw clips after measuring the noise, before the optimizer step
        self.train_set, self.heldout_set = make_datasets(data_seed=data_seed)

    def make_model(self, seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        x, y = self.train_set.tensors
        return Classifier(x.shape[1], self.hidden, int(y.max()) + 1, self.dropout).to(self.device)

    def sample_batch(self, batch_size: int, generator: torch.Generator):
        # What a DataLoader with RandomSampler(replacement=True) does: i.i.d. indices, then collate.
        idx = torch.randint(len(self.train_set), (batch_size,), generator=generator)
        x, y = default_collate([self.train_set[i] for i in idx.tolist()])
        return x.to(self.device), y.to(self.device)

    def loss(self, model: torch.nn.Module, batch) -> torch.Tensor:
        x, y = batch
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits = model(x)
        return F.cross_entropy(logits.float(), y)  # mean over the examples of the batch

    def make_optimizer(self, model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
        decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
        no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
        return torch.optim.AdamW([{"params": decay, "weight_decay": self.weight_decay},
                                  {"params": no_decay, "weight_decay": 0.0}], lr=lr)

    def lr_multiplier(self, step: int) -> float:
        return min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0

    @torch.no_grad()
    def eval_loss(self, model: torch.nn.Module) -> float:
        was_training = model.training
        model.eval()
        x, y = (t.to(self.device) for t in self.heldout_set.tensors)
        loss = float(self.loss(model, (x, y)))
        model.train(was_training)
        return loss
