"""Next-byte prediction on real text with a small MLP: trains on a CPU in seconds.

Data: the Python standard library's source (:mod:`batchlaw.workloads.corpus`). An example is a
window of ``context`` bytes and the byte that follows it; training examples are drawn uniformly
with replacement from the training part, evaluation uses a fixed set of windows from the
held-out part. Model: byte embedding -> concatenation -> one hidden layer (GELU) -> 256 logits.
Loss: cross-entropy in nats per byte. Optimizer: Adam.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._validation import check_positive_int
from .base import Workload
from .corpus import load_stdlib_corpus

__all__ = ["ByteMLP"]


class _Net(torch.nn.Module):
    def __init__(self, context: int, embed: int, hidden: int):
        super().__init__()
        self.embed = torch.nn.Embedding(256, embed)
        self.hidden = torch.nn.Linear(context * embed, hidden)
        self.out = torch.nn.Linear(hidden, 256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, context) int64
        h = self.embed(x).flatten(1)  # (B, context * embed)
        return self.out(F.gelu(self.hidden(h)))  # (B, 256)


class ByteMLP(Workload):
    """Next-byte MLP on standard-library source code (real data, no download).

    Args:
        context: bytes of context per example.
        embed: embedding width.
        hidden: hidden-layer width.
        eval_examples: held-out windows used by :meth:`eval_loss`.
    """

    name = "bytemlp"
    default_lr = 3e-3
    default_micro_batch = 32
    lr_scaling = 0.5  # Adam: square-root rule (Malladi et al. 2022)

    def __init__(self, context: int = 8, embed: int = 16, hidden: int = 128, eval_examples: int = 4096):
        self.context = check_positive_int("context", context)
        self.embed = check_positive_int("embed", embed)
        self.hidden = check_positive_int("hidden", hidden)
        self.corpus = load_stdlib_corpus()
        self.train = torch.from_numpy(self.corpus.train).long()  # (n_train,)
        heldout = torch.from_numpy(self.corpus.heldout).long()
        n_eval = min(check_positive_int("eval_examples", eval_examples), heldout.numel() - self.context - 1)
        starts = torch.linspace(0, heldout.numel() - self.context - 2, n_eval).long()
        self._eval = self._windows(heldout, starts)

    def _windows(self, data: torch.Tensor, starts: torch.Tensor):
        idx = starts[:, None] + torch.arange(self.context + 1)[None, :]  # (B, context + 1)
        w = data[idx]
        return w[:, :-1], w[:, -1]

    def make_model(self, seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return _Net(self.context, self.embed, self.hidden)

    def sample_batch(self, batch_size: int, generator: torch.Generator):
        starts = torch.randint(0, self.train.numel() - self.context - 1, (batch_size,), generator=generator)
        return self._windows(self.train, starts)

    def loss(self, model: torch.nn.Module, batch) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(x), y)

    def make_optimizer(self, model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
        return torch.optim.Adam(model.parameters(), lr=lr)

    @torch.no_grad()
    def eval_loss(self, model: torch.nn.Module) -> float:
        return float(self.loss(model, self._eval))

    def describe(self) -> dict:
        return {"name": self.name, "tokens_per_example": None, "context": self.context,
                "corpus": "Python standard library sources", "corpus_files": len(self.corpus.files),
                "corpus_bytes": self.corpus.n_bytes, "corpus_sha256": self.corpus.sha256,
                "loss": "cross-entropy, nats per byte"}
