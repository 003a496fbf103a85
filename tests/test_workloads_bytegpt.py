"""The byte-level GPT workload (and its transformer): causal, starts at the uniform loss, learns."""

import numpy as np
import pytest
import torch

from batchlaw.workloads.bytegpt import BYTEGPT_SIZES, ByteGPT
from batchlaw.workloads.transformer import TinyGPT


def test_tiny_gpt_is_causal():
    """A logit at position t depends on bytes 0..t only: changing the later bytes leaves it as it was."""
    model = TinyGPT(BYTEGPT_SIZES["tiny"]).eval()
    x = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(0))
    y = x.clone()
    y[:, 20:] = (y[:, 20:] + 1) % 256
    with torch.no_grad():
        a, b = model(x), model(y)
    assert a.shape == (2, 32, 256)
    assert torch.equal(a[:, :20], b[:, :20])
    assert not torch.allclose(a[:, 20:], b[:, 20:])


def test_bytegpt_starts_at_the_uniform_loss_and_learns_on_held_out_text():
    wl = ByteGPT(size="tiny", eval_sequences=64)
    assert wl.tokens_per_example == 32
    model = wl.make_model(0)
    opt = wl.make_optimizer(model, 3e-3)
    gen = torch.Generator().manual_seed(0)
    before = wl.eval_loss(model)
    for _ in range(25):
        wl.loss(model, wl.sample_batch(16, gen)).backward()
        opt.step()
        opt.zero_grad()
    after = wl.eval_loss(model)
    assert before == pytest.approx(np.log(256), rel=0.05)  # nats per byte of a uniform guess
    assert after < before - 1.0, (before, after)  # 5.39 -> 3.15 nats per byte here
    with pytest.raises(ValueError, match="'size'"):
        ByteGPT(size="huge")
