"""What the framework callbacks share: optional imports, micro-batch sizes, examples counted."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = ["require", "batch_size_of", "step_batch_size", "set_monitor_options", "dataset_sampler", "to_device"]


def set_monitor_options(obj: Any, *, micro_batch_size: int | None, tokens_per_example: int | None,
                        every: int | str, overhead_target: float, window: int | None, ema_beta: float,
                        prefix: str) -> None:
    """Validate the monitor options both framework callbacks take, and set them on ``obj``, with
    the unit its estimates are in (``"tokens"`` given ``tokens_per_example``, else ``"examples"``)."""
    from .._validation import check_positive_int, check_probability
    from ..noise.cadence import check_every

    obj.micro_batch_size = (None if micro_batch_size is None
                            else check_positive_int("micro_batch_size", micro_batch_size))
    obj.tokens_per_example = (None if tokens_per_example is None
                              else check_positive_int("tokens_per_example", tokens_per_example))
    obj.every = check_every(every)
    obj.overhead_target = check_probability("overhead_target", overhead_target)
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 3):
        raise ValueError(f"The 'window' parameter must be an integer >= 3 or None. Got {window!r} instead.")
    obj.window = window
    obj.ema_beta = ema_beta
    if not isinstance(prefix, str):
        raise TypeError(f"The 'prefix' parameter must be a string. Got {prefix!r} instead.")
    obj.prefix = prefix
    obj.unit = "tokens" if obj.tokens_per_example else "examples"


def require(module: str, extra: str, what: str):
    """Import ``module`` or raise an ImportError that says which extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{what} needs the '{module.split('.')[0]}' package, which is not installed: "
            f"pip install 'batchlaw[{extra}]'"
        ) from err


def batch_size_of(batch: Any) -> int | None:
    """Examples in ``batch``: the first dimension of its first tensor (depth-first through
    tuples, lists and dicts; ``input_ids`` first in a dict). ``None`` when there is no tensor."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() > 0 else None
    if isinstance(batch, Mapping):
        keys = sorted(batch, key=lambda k: k != "input_ids")
        for key in keys:
            n = batch_size_of(batch[key])
            if n is not None:
                return n
        return None
    if isinstance(batch, Sequence) and not isinstance(batch, (str, bytes)):
        for item in batch:
            n = batch_size_of(item)
            if n is not None:
                return n
    return None


def step_batch_size(sizes: list[int]) -> int:
    """The micro-batch size to give the monitor for one step with micro-batches of ``sizes``.

    Equal sizes give that size. With unequal sizes (a short last batch of an epoch) and each
    micro-batch loss a mean over its own examples, ``E|G_small|^2 = |G|^2 + tr(Sigma)/H`` and
    ``E|G_big|^2 = |G|^2 + tr(Sigma)/(K H)`` with ``H`` the harmonic mean of the sizes, so ``H``
    (rounded to an integer, as the monitor takes) is the right batch size.
    """
    if not sizes:
        raise RuntimeError("No micro-batch was seen in this optimizer step.")
    if min(sizes) == max(sizes):
        return int(sizes[0])
    harmonic = len(sizes) / sum(1.0 / s for s in sizes)
    return max(1, round(harmonic))


def to_device(batch: Any, device) -> Any:
    """``batch`` (a tensor, or a dict/tuple/list of them) moved to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)) and not isinstance(batch, (str, bytes)):
        items = [to_device(v, device) for v in batch]
        return type(batch)(*items) if hasattr(batch, "_fields") else type(batch)(items)
    return batch


def dataset_sampler(dataset: Any, collate_fn: Any = None, device: Any = None):
    """``sample_fn(n, generator)`` for the batch controller's branches: ``n`` items of a map-style
    ``dataset`` drawn uniformly with replacement using ``generator`` only, put together by
    ``collate_fn`` (the training DataLoader's) and moved to ``device``.

    Raises:
        ValueError: ``dataset`` has no ``__len__``/``__getitem__`` (an iterable dataset): pass your
            own ``sample_fn``.
    """
    if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")) or len(dataset) == 0:
        raise ValueError(
            f"Branches need examples drawn at random from the training data, but the dataset ({type(dataset).__name__}) "
            "is not a non-empty map-style dataset: pass sample_fn=(lambda n, generator: batch of n examples).")
    if collate_fn is None:
        from torch.utils.data import default_collate as collate_fn

    def sample(n: int, generator: torch.Generator):
        idx = torch.randint(len(dataset), (int(n),), generator=generator).tolist()
        batch = collate_fn([dataset[i] for i in idx])
        return to_device(batch, device) if device is not None else batch

    return sample
