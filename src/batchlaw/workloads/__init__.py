"""Reference trainings that run anywhere: exact-answer synthetic and real data."""

from __future__ import annotations

from .base import Workload
from .bytegpt import ByteGPT
from .bytemlp import ByteMLP
from .linreg import LinearRegression, linreg_b_simple

__all__ = ["Workload", "ByteGPT", "ByteMLP", "LinearRegression", "linreg_b_simple", "WORKLOADS", "get_workload"]

#: Built-in workloads by command-line name.
WORKLOADS: dict[str, type[Workload]] = {"linreg": LinearRegression, "bytemlp": ByteMLP, "bytegpt": ByteGPT}


def get_workload(name: str, **kwargs) -> Workload:
    """Instantiate a built-in workload by name; unknown names list the ones that exist."""
    try:
        cls = WORKLOADS[name]
    except KeyError:
        raise ValueError(
            f"The 'workload' parameter must be one of {', '.join(map(repr, WORKLOADS))}. Got {name!r} instead."
        ) from None
    return cls(**kwargs)
