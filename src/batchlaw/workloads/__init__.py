"""Reference trainings that run anywhere: exact-answer synthetic and real data."""

from __future__ import annotations

from .base import Workload
from .bytegpt import ByteGPT
from .bytemlp import ByteMLP
from .linreg import LinearRegression, linreg_b_simple
from .loader import WorkloadImportError, check_workload, resolve_workload, workload_ref, workload_spec
from .nqm import NoisyQuadratic

__all__ = ["Workload", "ByteGPT", "ByteMLP", "LinearRegression", "NoisyQuadratic", "linreg_b_simple", "WORKLOADS",
           "get_workload", "check_workload", "resolve_workload", "workload_ref", "workload_spec", "WorkloadImportError"]

#: Built-in workloads by command-line name.
WORKLOADS: dict[str, type[Workload]] = {"linreg": LinearRegression, "bytemlp": ByteMLP, "bytegpt": ByteGPT,
                                       "nqm": NoisyQuadratic}


def get_workload(name: str, **kwargs) -> Workload:
    """Instantiate a workload by built-in name or ``"package.module:ClassName"``
    (:func:`resolve_workload` with ``kwargs``); unknown names list the built-in ones."""
    return resolve_workload(name, kwargs)
