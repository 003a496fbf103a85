"""Data-parallel communication: a ring all-reduce model, link presets, and its calibration.

A ring all-reduce of ``n`` bytes over ``W`` ranks runs ``2 (W - 1)`` steps, each moving ``n / W``
bytes per rank, so each rank sends ``2 (W - 1) / W * n`` bytes (the "bus bandwidth" convention of
nccl-tests, where ``busbw = algbw * 2 (W - 1) / W``):

    t(n, W) = 2 (W - 1) * latency + 2 (W - 1) / W * n / bus_bandwidth

Gradient bytes are parameters times bytes per gradient element (4 for fp32, 2 for a bf16 reduce).
With overlap, the all-reduce of one bucket runs while backward computes the next, so only the part
of the all-reduce that outlasts backward adds to the step (PyTorch DDP's bucketed overlap).

References:
    Patarasuk and Yuan 2009, "Bandwidth optimal all-reduce algorithms for clusters of workstations".
    NVIDIA nccl-tests, doc/PERFORMANCE.md ("bus bandwidth").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validation import check_positive_float, check_positive_int

__all__ = ["Link", "LINKS", "get_link", "ring_allreduce_time", "exposed_comm_time", "fit_link"]


@dataclass(frozen=True)
class Link:
    """An interconnect as the ring model sees it.

    Attributes:
        name: preset name or ``"custom"``.
        bus_bandwidth: bytes/s each rank sends and receives in a ring (nccl-tests "busbw").
        latency_s: seconds per ring step (one of ``2 (W - 1)``).
        description: where the figure comes from.
    """

    name: str
    bus_bandwidth: float  # bytes/s
    latency_s: float = 0.0
    description: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "bus_bandwidth_bytes_per_s": self.bus_bandwidth, "latency_s": self.latency_s,
                "description": self.description}


#: Nominal per-GPU link rates (line rate, not measured: measure yours with nccl-tests and pass
#: ``--bandwidth`` for a sharper plan).
LINKS: dict[str, Link] = {
    "nvlink": Link("nvlink", 450e9, 5e-6, "NVLink 4 (H100 SXM), 450 GB/s per direction per GPU, within a node"),
    "ib400": Link("ib400", 50e9, 5e-6, "400 Gb/s InfiniBand, one NIC per GPU (50 GB/s)"),
    "eth100": Link("eth100", 12.5e9, 2e-5, "100 Gb/s Ethernet, one NIC per GPU (12.5 GB/s)"),
}


def get_link(name: str) -> Link:
    """A preset by name; unknown names list the presets.

    Examples:
        >>> get_link("ib400").bus_bandwidth
        50000000000.0
    """
    try:
        return LINKS[name]
    except KeyError:
        raise ValueError(f"The 'link' parameter must be one of {', '.join(map(repr, LINKS))}. "
                         f"Got {name!r} instead.") from None


def ring_allreduce_time(n_bytes: float, world: int, bus_bandwidth: float, latency_s: float = 0.0) -> float:
    """Seconds for a ring all-reduce of ``n_bytes`` over ``world`` ranks.

    ``t = 2 (W - 1) latency + 2 (W - 1) / W * n / bus_bandwidth``; zero on one rank.

    Args:
        n_bytes: bytes reduced (gradient elements x bytes per element).
        world: number of ranks ``W``.
        bus_bandwidth: bytes/s per rank.
        latency_s: seconds per ring step.

    Returns:
        Seconds.

    Examples:
        >>> ring_allreduce_time(1e9, 8, 50e9)  # 1 GB over 8 GPUs at 50 GB/s
        0.035

    References:
        Patarasuk and Yuan 2009; nccl-tests PERFORMANCE.md.
    """
    n = check_positive_float("n_bytes", n_bytes, allow_zero=True)
    w = check_positive_int("world", world)
    bw = check_positive_float("bus_bandwidth", bus_bandwidth)
    lat = check_positive_float("latency_s", latency_s, allow_zero=True)
    if w == 1:
        return 0.0
    return 2.0 * (w - 1) * lat + 2.0 * (w - 1) / w * n / bw


def exposed_comm_time(comm_s: float, backward_s: float, overlap: bool) -> float:
    """The part of the all-reduce that adds to the step: all of it without overlap, else what
    outlasts backward (``max(0, comm - backward)``).

    Examples:
        >>> exposed_comm_time(0.3, 0.2, overlap=True), exposed_comm_time(0.3, 0.2, overlap=False)
        (0.09999999999999998, 0.3)
    """
    return max(0.0, comm_s - backward_s) if overlap else comm_s


def fit_link(measurements: list[dict]) -> Link:
    """Fit the ring model's latency and bus bandwidth to measured all-reduce times.

    Least squares in relative error of ``t = a * 2 (W - 1) + b * 2 (W - 1) / W * n`` over
    ``(n_bytes, world, seconds)`` records, with ``a, b >= 0``; bandwidth is ``1 / b``.

    Args:
        measurements: dicts with ``n_bytes``, ``world`` (>= 2) and ``seconds``.

    Returns:
        A :class:`Link` named ``"fitted"``.

    Raises:
        ValueError: fewer than two usable measurements, or times that do not grow with the size
            (the bandwidth is not resolved).
    """
    rows = [m for m in measurements if m["world"] >= 2 and m["seconds"] > 0]
    if len(rows) < 2:
        raise ValueError(f"fit_link needs at least 2 measurements on 2 or more ranks. Got {len(rows)}.")
    t = np.array([m["seconds"] for m in rows])
    w = np.array([m["world"] for m in rows], dtype=float)
    n = np.array([m["n_bytes"] for m in rows], dtype=float)
    x = np.column_stack([2 * (w - 1), 2 * (w - 1) / w * n]) / t[:, None]  # relative-error weighting
    from scipy.optimize import nnls

    (a, b), _ = nnls(x, np.ones_like(t))
    if b <= 0:
        raise ValueError(
            "The all-reduce times do not grow with the message size (sizes "
            f"{', '.join(f'{v / 2**20:g}' for v in sorted(set(n)))} MiB): latency hides the bandwidth, so it "
            "cannot be fitted. Time larger messages (e.g. --sizes-mb 1,8,32).")
    return Link("fitted", 1.0 / b, float(a), f"fitted to {len(rows)} all-reduce timings")
