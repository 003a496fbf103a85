"""A small decoder-only transformer trained on bytes of real text (no download).

Data: the Python standard library's sources (:mod:`batchlaw.workloads.corpus`: a fixed module
list, the last 10% held out, SHA-256 recorded). An example is a sequence of ``context`` bytes
with next-byte targets, so one example is ``context`` tokens. Loss: cross-entropy in nats per
byte. Optimizer: AdamW. Sizes: ``tiny`` and ``small`` train on a CPU; ``gpu`` and ``gpt2``
are for a GPU, where the forward pass runs under bf16 autocast.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from .._validation import check_choice, check_positive_int
from .base import Workload
from .corpus import load_stdlib_corpus
from .transformer import GPTConfig, TinyGPT

__all__ = ["ByteGPT", "BYTEGPT_SIZES"]

#: Named model sizes.
BYTEGPT_SIZES: dict[str, GPTConfig] = {
    "tiny": GPTConfig(context=32, d_model=64, n_layer=2, n_head=4),
    "small": GPTConfig(context=64, d_model=128, n_layer=4, n_head=4),
    "gpu": GPTConfig(context=256, d_model=384, n_layer=6, n_head=6),
    "gpt2": GPTConfig.gpt2_small(context=1024),
}


class ByteGPT(Workload):
    """Byte-level GPT on standard-library source code.

    Args:
        size: one of ``BYTEGPT_SIZES`` (``tiny``, ``small``, ``gpu``, ``gpt2``).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when available).
        eval_sequences: held-out sequences used by :meth:`eval_loss`.
    """

    name = "bytegpt"
    default_lr = 1e-3
    default_micro_batch = 16
    lr_scaling = 0.5  # Adam: square-root rule (Malladi et al. 2022)

    def __init__(self, size: str = "tiny", device: str = "cpu", eval_sequences: int = 128):
        self.size = check_choice("size", size, tuple(BYTEGPT_SIZES))
        self.cfg = BYTEGPT_SIZES[size]
        device = check_choice("device", device, ("cpu", "cuda", "auto"))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise ValueError("The 'device' parameter is 'cuda' but no CUDA device is available.")
        self.device = torch.device(device)
        self.tokens_per_example = self.cfg.context
        corpus = load_stdlib_corpus()
        self.corpus = corpus
        self.train = torch.from_numpy(corpus.train).long().to(self.device)  # (n_train,)
        heldout = torch.from_numpy(corpus.heldout).long().to(self.device)
        n = check_positive_int("eval_sequences", eval_sequences)
        starts = torch.linspace(0, heldout.numel() - self.cfg.context - 2, n).long().to(self.device)
        self._eval = self._windows(heldout, starts)

    def _windows(self, data, starts):
        idx = starts[:, None] + torch.arange(self.cfg.context + 1, device=self.device)[None, :]  # (B, T+1)
        w = data[idx]
        return w[:, :-1], w[:, 1:]

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else nullcontext()

    def make_model(self, seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return TinyGPT(self.cfg).to(self.device)

    def sample_batch(self, batch_size: int, generator: torch.Generator):
        starts = torch.randint(0, self.train.numel() - self.cfg.context - 1, (batch_size,), generator=generator)
        return self._windows(self.train, starts.to(self.device))

    def loss(self, model, batch) -> torch.Tensor:
        x, y = batch
        with self._autocast():
            return model.loss(x, y)

    def make_optimizer(self, model, lr: float) -> torch.optim.Optimizer:
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)

    @torch.no_grad()
    def eval_loss(self, model) -> float:
        return float(self.loss(model, self._eval))

    def describe(self) -> dict:
        return {"name": self.name, "size": self.size, "tokens_per_example": self.tokens_per_example,
                "device": str(self.device), "parameters": sum(p.numel() for p in TinyGPT(self.cfg).parameters()),
                "corpus": "Python standard library sources", "corpus_sha256": self.corpus.sha256,
                "loss": "cross-entropy, nats per byte"}
