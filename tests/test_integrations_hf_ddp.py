"""NoiseScaleCallback for transformers.Trainer under DDP: torchrun, two gloo processes on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

pytest.importorskip("transformers")
from batchlaw.noise import GradientNoiseMonitor  # noqa: E402
from batchlaw.workloads import LinearRegression  # noqa: E402

pytestmark = pytest.mark.slow
W, K, B, STEPS = 2, 2, 8, 60

_SCRIPT = textwrap.dedent('''
    import json, sys, warnings, torch
    import torch.distributed as dist
    from transformers import Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging
    from batchlaw.integrations.hf import NoiseScaleCallback
    from batchlaw.workloads import LinearRegression

    warnings.simplefilter("ignore"); hf_logging.set_verbosity_error()
    out, steps, k, b, attach = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
    padded = sys.argv[6] == "padded"
    wl = LinearRegression(dim=16, noise_std=1.0, init_distance=1.0)
    x, y = wl.sample_batch(steps * k * b * 2, torch.Generator().manual_seed(0))
    if padded:  # batch j keeps its first n_j labels, the rest are padding (-100)
        n = torch.randint(1, b + 1, (len(x) // b,), generator=torch.Generator().manual_seed(1))
        y = torch.where(torch.arange(len(x)) % b < n.repeat_interleave(b), y, torch.tensor(-100.0))

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__(); self.net = wl.make_model(0)
        def forward(self, x, labels):
            return {"loss": wl.loss(self.net, (x, labels))}

    class PaddedNet(Net):  # takes **kwargs: the Trainer passes num_items_in_batch and multiplies by W
        def forward(self, x, labels, **kwargs):
            valid = labels != -100
            per_row = 0.5 * (self.net(x).squeeze(-1) - labels).square() * valid
            return {"loss": per_row.sum() / kwargs["num_items_in_batch"]}

    class Rows(torch.utils.data.Dataset):
        def __len__(self): return len(x)
        def __getitem__(self, i): return {"x": x[i], "labels": y[i]}

    args = TrainingArguments(output_dir=out + "/o", per_device_train_batch_size=b, gradient_accumulation_steps=k,
                             max_steps=steps, learning_rate=0.0, max_grad_norm=1e-3, logging_steps=10, report_to=[],
                             use_cpu=True, ddp_backend="gloo", train_sampling_strategy="sequential",
                             remove_unused_columns=False, save_strategy="no", disable_tqdm=True)
    trainer = Trainer(model=PaddedNet() if padded else Net(), args=args, train_dataset=Rows())
    cb = NoiseScaleCallback()
    if attach:
        cb.attach(trainer)
    else:
        trainer.add_callback(cb)
    trainer.train()
    with open(f"{out}/rank{dist.get_rank()}.json", "w") as fh:
        json.dump({"records": cb.monitor.records, "kind": cb.monitor.setup.kind,
                   "logged": [e for e in trainer.state.log_history if "gns/b_big" in e]}, fh)
    dist.barrier()
    dist.destroy_process_group()
    import os
    sys.stdout.flush(); sys.stderr.flush()
    os._exit(0)  # threads left by the libraries at exit can abort a rank ("terminate called without an active exception")
''')


def _torchrun(tmp_path, attach, data):
    script = tmp_path / "worker.py"
    script.write_text(_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={W}", str(script),
           str(tmp_path), str(STEPS), str(K), str(B), "1" if attach else "0", data]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(W)]


def test_padded_labels_under_ddp_match_a_single_process(tmp_path):
    """A model that takes **kwargs: the Trainer normalises by num_items_in_batch counted over both
    ranks (average_tokens_across_devices) and multiplies the loss by W, so the callback steps the
    monitor with loss_normalisation="global_step". Reference: one process stepping the monitor
    with loss_normalisation="step" over the W K micro-batches of each step."""
    ranks = _torchrun(tmp_path, True, "padded")
    records = ranks[0]["records"]
    assert records == ranks[1]["records"] and len(records) == STEPS
    wl = LinearRegression(dim=16, noise_std=1.0, init_distance=1.0)
    x, y = wl.sample_batch(STEPS * K * B * 2, torch.Generator().manual_seed(0))
    n = torch.randint(1, B + 1, (len(x) // B,), generator=torch.Generator().manual_seed(1)).tolist()
    model = wl.make_model(0)
    plain = GradientNoiseMonitor(model, loss_normalisation="step")
    for s in range(STEPS):
        js = [(s * K + k) * W + r for k in range(K) for r in range(W)]
        total = sum(n[j] for j in js)
        for j in js:
            i = j * B
            (wl.loss(model, (x[i:i + n[j]], y[i:i + n[j]])) * n[j] / total).backward()
        plain.step(sizes=[n[j] for j in js])
        model.zero_grad(set_to_none=True)
    assert len({r["b_small"] for r in records}) > 1  # the sizes did differ
    for ours, ref in zip(records, plain.records):
        for key in ("small_sq", "big_sq", "b_small", "b_big"):
            assert ours[key] == pytest.approx(ref[key], rel=1e-4), key


@pytest.mark.parametrize("attach", [True, False])
def test_trainer_under_ddp_matches_a_single_process(tmp_path, attach):
    ranks = _torchrun(tmp_path, attach, "plain")
    assert ranks[0]["kind"] == ("ddp" if attach else "group")
    records = ranks[0]["records"]
    assert records == ranks[1]["records"] and len(records) == STEPS
    assert {r["world_size"] for r in records} == {W} and {r["b_big"] for r in records} == {W * K * B}
    assert ranks[0]["logged"][-1]["gns/b_big"] == W * K * B and "gns/global_batch" not in ranks[0]["logged"][-1]

    # accelerate deals the sequential batches round-robin: rank r takes batches r, r + W, ...
    wl = LinearRegression(dim=16, noise_std=1.0, init_distance=1.0)
    x, y = wl.sample_batch(STEPS * K * B * 2, torch.Generator().manual_seed(0))
    model = wl.make_model(0)
    plain = GradientNoiseMonitor(model, micro_batch_size=B)
    for s in range(STEPS):
        for k in range(K):
            for r in range(W):
                i = ((s * K + k) * W + r) * B
                (wl.loss(model, (x[i:i + B], y[i:i + B])) / (W * K)).backward()
        plain.step()
        model.zero_grad(set_to_none=True)
    for ours, ref in zip(records, plain.records):
        assert ours["small_sq"] == pytest.approx(ref["small_sq"], rel=1e-4)
        assert ours["big_sq"] == pytest.approx(ref["big_sq"], rel=1e-4)  # before the 1e-3 clipping
