"""What ``batchlaw profile`` runs: a built-in workload, or the user's own model from ``module:factory``.

A user factory is a function with no arguments returning ``(model, make_batch)``: an
``nn.Module`` and a function of the batch size returning one batch. The model is called as
``model(*batch)`` when the batch is a tuple or list, ``model(**batch)`` for a dict, else
``model(batch)``; if the output is a 0-d tensor it is the loss, otherwise its mean is used as a
stand-in loss (the backward pass costs the same). The optimizer is AdamW.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

import torch

from .hardware import Target

__all__ = ["workload_target", "user_target"]


def workload_target(name: str, device: str = "cpu", **kwargs) -> Target:
    """A built-in workload (``batchlaw.workloads.WORKLOADS``) as a profiling target."""
    from ..workloads import WORKLOADS, get_workload

    cls = WORKLOADS.get(name)
    if cls is not None and "device" in inspect.signature(cls.__init__).parameters and "device" not in kwargs:
        kwargs["device"] = device
    wl = get_workload(name, **kwargs)
    gen = torch.Generator().manual_seed(0)
    model = wl.make_model(0)
    return Target(model=model, make_batch=lambda b: wl.sample_batch(b, gen), loss=wl.loss,
                  make_optimizer=lambda m: wl.make_optimizer(m, wl.default_lr), name=f"workload:{name}",
                  tokens_per_example=wl.tokens_per_example, extra={"workload": wl.describe()})


def _default_loss(model, batch):
    if isinstance(batch, (tuple, list)):
        out = model(*batch)
    elif isinstance(batch, dict):
        out = model(**batch)
    else:
        out = model(batch)
    if isinstance(out, tuple):
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"The model must return a tensor (the loss, or outputs). Got {type(out).__name__}.")
    return out if out.ndim == 0 else out.float().mean()


def user_target(spec: str) -> Target:
    """Import ``module:factory`` (the current directory is searched first) and check what it returns.

    Raises:
        ValueError: one line naming what is wrong: the spec's form, a missing module, a missing
            attribute, a factory that is not callable or that returns something else.
    """
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise ValueError(f"The '--model' option must be MODULE:FACTORY, e.g. mymodels:make. Got {spec!r} instead.")
    mod_name, attr = spec.split(":")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as err:
        raise ValueError(f"--model {spec}: cannot import module {mod_name!r} ({err}); run from its directory or "
                         "put it on PYTHONPATH.") from None
    except Exception as err:  # the user's module failed while importing: say so in one line
        raise ValueError(f"--model {spec}: importing {mod_name!r} raised {type(err).__name__}: {err}") from None
    factory = getattr(module, attr, None)
    if factory is None:
        raise ValueError(f"--model {spec}: module {mod_name!r} has no attribute {attr!r}.")
    if not callable(factory):
        raise ValueError(f"--model {spec}: {attr!r} is a {type(factory).__name__}, not a function.")
    try:
        got = factory()
    except Exception as err:
        raise ValueError(f"--model {spec}: the factory raised {type(err).__name__}: {err}") from None
    if not (isinstance(got, tuple) and len(got) == 2 and isinstance(got[0], torch.nn.Module) and callable(got[1])):
        what = type(got).__name__ if not isinstance(got, tuple) else f"a tuple of {len(got)}"
        raise ValueError(f"--model {spec}: the factory must return (model, make_batch): an nn.Module and a function "
                         f"of the batch size. Got {what} instead.")
    model, make_batch = got
    try:  # one example through the model, so that a mismatch is reported here and not mid-profile
        with torch.no_grad():
            _default_loss(model, make_batch(1))
    except Exception as err:
        raise ValueError(f"--model {spec}: the model failed on make_batch(1): {type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''}") from None
    return Target(model=model, make_batch=make_batch, loss=_default_loss,
                  make_optimizer=lambda m: torch.optim.AdamW(m.parameters(), lr=1e-4), name=spec)
