"""Backpropagate one batch as several micro-batches, so a single-batch step yields two batch sizes.

A training step with one micro-batch sees one gradient: there is no second batch size at the
same weights, and the estimators of McCandlish et al. 2018 (App. A.1) need two. Splitting the
batch into ``chunks`` pieces and backpropagating each, weighted by its share of the batch, gives
the optimizer the same mean gradient (up to float rounding) while the monitor sees ``chunks``
micro-batch gradients. Cost: ``chunks`` backward passes over ``1/chunks`` of the batch, i.e.
the same FLOPs and more kernel launches (negligible for large batches, noticeable for tiny ones).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from .._validation import check_positive_int

__all__ = ["split_backward"]


def _length(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    if isinstance(batch, (tuple, list)) and batch and all(isinstance(t, torch.Tensor) for t in batch):
        lengths = {t.shape[0] for t in batch}
        if len(lengths) != 1:
            raise ValueError(f"All tensors in 'batch' must share their first dimension. Got {sorted(lengths)}.")
        return lengths.pop()
    raise TypeError("The 'batch' parameter must be a tensor or a tuple/list of tensors split along dim 0.")


def _slice(batch: Any, lo: int, hi: int) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch[lo:hi]
    return type(batch)(t[lo:hi] for t in batch)


def split_backward(
    loss_fn: Callable[[Any], torch.Tensor], batch: torch.Tensor | Sequence[torch.Tensor], chunks: int = 2
) -> torch.Tensor:
    """Run ``loss_fn`` and ``backward`` on ``chunks`` slices of ``batch``.

    ``.grad`` ends up holding the gradient of the mean loss over the whole batch, as if
    ``loss_fn(batch).backward()`` had been called, provided ``loss_fn`` returns a mean over its
    examples.

    Args:
        loss_fn: maps a (micro-)batch to its mean loss (a 0-d tensor).
        batch: a tensor, or a tuple/list of tensors, sliced along dim 0.
        chunks: number of micro-batches (>= 2 for a noise-scale measurement); the micro-batch
            size is ``len(batch) // chunks`` and ``len(batch)`` must divide evenly.

    Returns:
        The mean loss over the batch (detached).

    Examples:
        >>> model = torch.nn.Linear(3, 1)
        >>> x = torch.randn(8, 3)
        >>> loss = split_backward(lambda xb: model(xb).square().mean(), x, chunks=4)
        >>> model.weight.grad.shape
        torch.Size([1, 3])
    """
    chunks = check_positive_int("chunks", chunks)
    n = _length(batch)
    if n % chunks:
        raise ValueError(
            f"The batch of {n} examples does not split into 'chunks'={chunks} equal micro-batches; "
            "choose a divisor of the batch size."
        )
    size = n // chunks
    total = None
    for i in range(chunks):
        loss = loss_fn(_slice(batch, i * size, (i + 1) * size)) / chunks
        loss.backward()
        total = loss.detach() if total is None else total + loss.detach()
    return total
