"""Gradient norms without synchronising: fused multi-tensor kernels, and the packing of device scalars.

What :class:`~batchlaw.noise.GradientNoiseMonitor` reads gradients with. ``torch._foreach_norm``
takes the L2 norm of a list of tensors in one kernel per dtype (float32 accumulation, float64
kept), so a bucket of gradients costs a few launches, not one per parameter, and nothing the size
of a gradient is allocated.
"""

from __future__ import annotations

from collections import defaultdict

import torch

__all__ = ["squared_norm"]  # the rest serve the monitor


def norms(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """L2 norms of ``tensors`` as 0-d float32 tensors (float64 ones computed in float64), one fused
    multi-tensor kernel per dtype; never synchronises and allocates nothing the size of a gradient."""
    if len({t.dtype for t in tensors}) == 1:
        groups = {tensors[0].dtype: tensors}
    else:
        groups = defaultdict(list)
        for t in tensors:
            groups[t.dtype].append(t)
    out: list[torch.Tensor] = []
    for dtype, group in groups.items():
        if dtype == torch.float64:  # float32 accumulation would lose what float64 gradients carry
            out.extend(n.float() for n in torch._foreach_norm(group, 2))
        else:  # half, bfloat16, float32: accumulate in float32
            out.extend(torch._foreach_norm(group, 2, dtype=torch.float32))
    return out


def sum_of_squares(values: list[torch.Tensor], device=None) -> torch.Tensor:
    """``sum_i values_i^2`` of 0-d tensors (norms), on ``device`` (default: the first one's)."""
    device = device or values[0].device
    return torch.stack([n if n.device == device else n.to(device, non_blocking=True) for n in values]).square().sum()


def squared_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Sum of squared L2 norms of ``tensors`` in float32, with one fused kernel per (device, dtype).

    Returns a 0-d float32 tensor on the device of the first tensor; never synchronises.

    Examples:
        >>> float(squared_norm([torch.ones(3), 2 * torch.ones(2, dtype=torch.float64)]))
        11.0
    """
    by_device: dict = defaultdict(list)
    for t in tensors:
        by_device[t.device].append(t)
    return sum_of_squares([n for group in by_device.values() for n in norms(group)], tensors[0].device)


def pack(entries: list, like: torch.Tensor) -> torch.Tensor:
    """``entries`` (0-d tensors, booleans or numbers) as one float64 vector on ``like``'s device;
    the numbers cross to the device in one copy."""
    numbers = [float(e) for e in entries if not isinstance(e, torch.Tensor)]
    host = iter(torch.tensor(numbers, dtype=torch.float64, device=like.device).unbind()) if numbers else None
    return torch.stack([e.to(like.device, torch.float64).reshape(()) if isinstance(e, torch.Tensor) else next(host)
                        for e in entries])


def local_shard(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor, the tensor itself otherwise."""
    return t.to_local() if hasattr(t, "to_local") else t
