"""The gradient noise scale of a Hugging Face Trainer run, in its log history and TensorBoard.

A two-layer GPT-2 built from a config (no download) learns bytes of the Python standard
library's source with ``gradient_accumulation_steps=4``. ``NoiseScaleCallback`` measures
``B_simple`` in tokens (the tokens the loss predicts, ``--context`` - 1 per example, which is
how the Trainer's ``num_items_in_batch`` weighs the micro-batches) before the Trainer clips the
gradients, and adds ``gns/*`` metrics to the Trainer's log entries, so
``trainer.state.log_history`` and the ``report_to`` integrations (TensorBoard here) get them.

    python examples/hf_trainer_noise_scale.py --steps 40 --out hf-gns

About 20 s on two idle CPU cores. Then ``tensorboard --logdir hf-gns``.
"""

from __future__ import annotations

import argparse
import warnings

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments
from transformers.utils import logging as hf_logging

from batchlaw.errors import InsufficientDataError
from batchlaw.integrations.hf import NoiseScaleCallback
from batchlaw.workloads.corpus import load_stdlib_corpus


class ByteBlocks(torch.utils.data.Dataset):
    """``n`` random blocks of ``context`` bytes of the training text (fixed by ``seed``)."""

    def __init__(self, n: int, context: int, seed: int = 0):
        text = torch.from_numpy(load_stdlib_corpus().train).long()  # (n_bytes,)
        starts = torch.randint(0, text.numel() - context, (n,), generator=torch.Generator().manual_seed(seed))
        self.blocks = text[starts[:, None] + torch.arange(context)[None, :]]  # (n, context)

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i):
        return {"input_ids": self.blocks[i], "labels": self.blocks[i]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps")
    parser.add_argument("--micro-batch", type=int, default=8, help="examples per micro-batch")
    parser.add_argument("--accumulate", type=int, default=4, help="gradient_accumulation_steps (>= 2)")
    parser.add_argument("--context", type=int, default=32, help="tokens (bytes) per example")
    parser.add_argument("--out", default="hf-gns", help="output_dir of the Trainer (TensorBoard logs under it)")
    args = parser.parse_args(argv)

    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=256, n_positions=args.context, n_embd=32, n_layer=2, n_head=2)
    model = GPT2LMHeadModel(config)
    data = ByteBlocks(args.steps * args.accumulate * args.micro_batch, args.context)
    training_args = TrainingArguments(
        output_dir=args.out, per_device_train_batch_size=args.micro_batch,
        gradient_accumulation_steps=args.accumulate, max_steps=args.steps, learning_rate=1e-3,
        max_grad_norm=1.0, logging_steps=10, report_to=["tensorboard"], save_strategy="no",
        use_cpu=True, disable_tqdm=True, seed=0,
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=data)
    noise = NoiseScaleCallback(tokens_per_example=args.context, window=40).attach(trainer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()

    try:
        estimate, note = noise.monitor.estimate(), ""
    except InsufficientDataError as err:  # too few steps for an honest interval: say so, keep the value
        estimate, note = err.provisional, str(err)
    last = [entry for entry in trainer.state.log_history if "gns/b_big" in entry][-1]
    print(f"whole run: {estimate}" + (f"\n  no interval: {note}" if note else ""))
    print(f"last log entry (step {last['step']}): loss {last['loss']:.3f}, B_simple "
          f"{last.get('gns/b_simple', float('nan')):,.0f} tokens, batch {last['gns/b_big']:,.0f} tokens")
    return {"b_simple": estimate.b_simple, "ci": estimate.ci, "unit": estimate.unit, "note": note, "last_log": last}


if __name__ == "__main__":
    main()
