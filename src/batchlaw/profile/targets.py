"""What ``batchlaw profile`` runs: a built-in workload, or the user's own model from ``module:factory``.

A user factory is a function with no arguments returning ``(model, make_batch)``: an
``nn.Module`` and a function of the batch size returning one batch. The model is called as
``model(*batch)`` when the batch is a tuple or list, ``model(**batch)`` for a dict, else
``model(batch)``; if the output is a 0-d tensor it is the loss, otherwise its mean is used as a
stand-in loss (the backward pass costs the same). The optimizer is AdamW.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import torch

from .._usercode import definition, is_user_file, user_code_error
from ..errors import UserCodeError
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

    The factory's model is run through one training step on ``make_batch(1)`` with the checks
    every workload gets (:func:`batchlaw.workloads.loader.check_training_step`): trainable
    parameters, a loss that depends on them, dense gradients (AdamW refuses sparse ones).

    Raises:
        ValueError: one line naming what is wrong: the spec's form, a missing module, a missing
            attribute, a factory that is not callable or that returns something else.
        UserCodeError: the user's module, factory, ``make_batch`` or model raised, or the model
            cannot be trained (no trainable parameter, a loss without gradient, sparse
            gradients); with the user's file and line.
    """
    from ..workloads.loader import Hook, _import_user_module, check_training_step

    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise ValueError(f"The '--model' option must be MODULE:FACTORY, e.g. mymodels:make. Got {spec!r} instead.")
    mod_name, attr = spec.split(":")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = _import_user_module(mod_name)
    except ModuleNotFoundError as err:
        if err.name and not (mod_name == err.name or mod_name.startswith(err.name + ".")):
            raise ValueError(f"--model {spec}: importing {mod_name!r} failed: {err}.") from None
        raise ValueError(f"--model {spec}: cannot import module {mod_name!r} ({err}); run from its directory or "
                         "put it on PYTHONPATH.") from None
    except UserCodeError:
        raise
    except Exception as err:  # the user's module failed while importing: its own code
        raise user_code_error(f"--model {spec}: importing {mod_name!r}", err) from err
    factory = getattr(module, attr, None)
    if factory is None:
        raise ValueError(f"--model {spec}: module {mod_name!r} has no attribute {attr!r}.")
    if not callable(factory):
        raise ValueError(f"--model {spec}: {attr!r} is a {type(factory).__name__}, not a function.")
    where = definition(factory)
    try:
        got = factory()
    except Exception as err:
        raise user_code_error(f"--model {spec}: the factory", err, where) from err
    if not (isinstance(got, tuple) and len(got) == 2 and isinstance(got[0], torch.nn.Module) and callable(got[1])):
        what = type(got).__name__ if not isinstance(got, tuple) else f"a tuple of {len(got)}"
        raise ValueError(f"--model {spec}: the factory must return (model, make_batch): an nn.Module and a function "
                         f"of the batch size. Got {what} instead.")
    model, make_batch = got
    forward = getattr(type(model).forward, "__code__", None)  # blamed when it is the user's, else the factory
    model_where = definition(type(model).forward) if forward and is_user_file(forward.co_filename) else where
    # one training step on one example, so that a model batchlaw cannot train is named here, not mid-profile
    check_training_step(Hook(f"--model {spec}: the factory", lambda: model, where),
                        Hook(f"--model {spec}: make_batch", make_batch, definition(make_batch) or where),
                        Hook(f"--model {spec}: the model on make_batch(1)", _default_loss, model_where), batch_size=1)
    return Target(model=model, make_batch=make_batch, loss=_default_loss,
                  make_optimizer=lambda m: torch.optim.AdamW(m.parameters(), lr=1e-4), name=spec)
