"""Find a workload by reference: a built-in name or ``"package.module:ClassName"``.

Everything that trains (sweeps, ``batchlaw measure``, trials in worker processes or on Ray)
stores a workload as a *reference* string plus JSON keyword arguments and rebuilds it with
:func:`resolve_workload`; :func:`workload_ref` turns what a user passed (a name, a class, an
instance) into that pair. Bad references fail at the boundary with a one-line error.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

from .._usercode import definition, user_code_error, user_location
from ..errors import UserCodeError
from .base import Workload

__all__ = ["Hook", "WorkloadImportError", "check_training_step", "check_workload", "resolve_workload", "workload_ref", "workload_spec"]


class WorkloadImportError(ValueError):
    """The module of a workload reference cannot be imported in this process.

    Attributes:
        module: the module name that failed to import.
        ref: the full reference.
    """

    def __init__(self, message: str, module: str, ref: str) -> None:
        super().__init__(message)
        self.module = module
        self.ref = ref

    def __reduce__(self):  # survive pickling across processes (Ray, process pools)
        return (type(self), (str(self), self.module, self.ref))


def _builtins() -> dict[str, type[Workload]]:
    from . import WORKLOADS

    return WORKLOADS


def _import_class(ref: str) -> type[Workload]:
    module_name, _, qualname = ref.partition(":")
    if not module_name or not qualname or ":" in qualname:
        raise ValueError(
            f"The 'workload' parameter must be one of {', '.join(map(repr, _builtins()))}, or "
            f"'package.module:ClassName'. Got {ref!r} instead."
        )
    try:
        module = _import_user_module(module_name)
    except ImportError as err:
        missing = getattr(err, "name", None)
        if missing and not (module_name == missing or module_name.startswith(missing + ".")):
            # the module exists but one of its own imports is missing
            raise ValueError(f"Importing workload module {module_name!r} failed: {err}.") from None
        raise WorkloadImportError(
            f"The workload module {module_name!r} cannot be imported ({type(err).__name__}: {err}): install it "
            "or add its directory to PYTHONPATH.", module_name, ref) from None
    except UserCodeError:
        raise
    except Exception as err:  # a module that raises while importing: its own code
        raise user_code_error(f"Importing workload module {module_name!r}", err) from err
    obj: Any = module
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"The workload module {module_name!r} has no attribute {qualname!r} "
                             f"(reference {ref!r}).") from None
    if not (isinstance(obj, type) and issubclass(obj, Workload)):
        raise ValueError(f"The workload reference {ref!r} names {_what(obj)}, not a subclass of "
                         "batchlaw.workloads.Workload.")
    return obj


def _import_user_module(module_name: str):
    """Import the module of a workload reference as a library, not as a script.

    Its module-level code sees no command-line arguments (batchlaw's are not for it), and what
    it writes to stderr is held back and replayed after the import; a module that calls
    ``sys.exit`` or parses the command line on import raises :class:`UserCodeError` quoting
    the last line it wrote (argparse's message).

    Raises:
        UserCodeError: the module exited (``SystemExit``) while being imported.
    """
    argv, sys.argv = sys.argv, sys.argv[:1]
    held = io.StringIO()
    try:
        with contextlib.redirect_stderr(held):
            module = importlib.import_module(module_name)
    except SystemExit as err:
        said = [line.strip() for line in held.getvalue().splitlines() if line.strip()]
        code = err.code if err.code is None or isinstance(err.code, int) else repr(str(err.code))
        quote = f"; it printed {said[-1]!r}" if said else ""
        raise UserCodeError(
            f"The workload module {module_name!r} exited while being imported (sys.exit({code}){quote}): module-level "
            "code must not parse the command line or call sys.exit; put that under `if __name__ == \"__main__\":`.",
            user_location(err)) from None
    except BaseException:
        sys.stderr.write(held.getvalue())
        raise
    finally:
        sys.argv = argv
    sys.stderr.write(held.getvalue())
    return module


def _what(obj: Any) -> str:
    if obj is None:
        return "None"
    if isinstance(obj, type):
        return f"the class {obj.__name__!r}"
    return f"a {type(obj).__name__}"


def _class_ref(cls: type[Workload]) -> str:
    for name, builtin in _builtins().items():
        if cls is builtin:
            return name
    if "<locals>" in cls.__qualname__:
        raise ValueError(f"The workload class {cls.__qualname__!r} is defined inside a function: trials rebuild "
                         "workloads by import in other processes, so define it at module level.")
    if cls.__module__ == "__main__":
        main = getattr(sys.modules.get("__main__"), "__file__", None)
        where = f" ({main})" if main else " (a notebook or an interactive session)"
        raise ValueError(f"The workload class {cls.__qualname__!r} is defined in __main__{where}: trials rebuild "
                         "workloads by import in other processes, so define it in a module file and import it "
                         "from there.")
    return f"{cls.__module__}:{cls.__qualname__}"


def _check_kwargs(kwargs: Any, ref: str) -> dict:
    if kwargs is None:
        return {}
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise ValueError(f"The 'workload_kwargs' parameter must be a dict with string keys. Got {kwargs!r} instead.")
    try:
        json.dumps(kwargs, allow_nan=False)
    except (TypeError, ValueError):
        bad = [k for k, v in kwargs.items() if not _jsonable(v)]
        raise ValueError(f"The arguments of workload {ref!r} must be JSON values (numbers, strings, booleans, lists, "
                         f"dicts) so trials can store and rebuild it; {', '.join(map(repr, bad))} "
                         "is not.") from None
    return dict(kwargs)


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v, allow_nan=False)
        return True
    except (TypeError, ValueError):
        return False


def workload_spec(workload: str | type[Workload] | Workload, kwargs: dict | None = None) -> tuple[str, dict]:
    """The reference and keyword arguments that rebuild ``workload`` anywhere.

    Args:
        workload: a built-in name, ``"package.module:ClassName"``, a :class:`Workload`
            subclass or an instance (its recorded constructor arguments are used).
        kwargs: constructor arguments (not allowed with an instance).

    Returns:
        ``(ref, kwargs)`` with ``kwargs`` JSON-ready. Does not import a string reference: use
        :func:`resolve_workload` to validate it.

    Raises:
        ValueError: a class defined in ``__main__`` or inside a function, an instance given
            arguments, an instance built with ``*args``, non-JSON arguments, a wrong type.
    """
    if isinstance(workload, Workload):
        if kwargs:
            raise ValueError(f"The 'workload_kwargs' parameter must be empty when 'workload' is an instance "
                             f"(got {kwargs!r}): pass the class with its arguments, or the instance alone.")
        ref = _class_ref(type(workload))
        init = workload.init_kwargs
        if init is None:
            raise ValueError(f"The workload instance of {ref!r} was built with positional *args, which cannot be "
                             "stored: give its constructor keyword arguments.")
        return ref, _check_kwargs(init, ref)
    if isinstance(workload, type) and issubclass(workload, Workload):
        ref = _class_ref(workload)
        return ref, _check_kwargs(kwargs, ref)
    if isinstance(workload, str):
        ref = workload.strip()
        if ":" not in ref and ref not in _builtins():
            raise ValueError(
                f"The 'workload' parameter must be one of {', '.join(map(repr, _builtins()))}, or "
                f"'package.module:ClassName'. Got {workload!r} instead."
            )
        return ref, _check_kwargs(kwargs, ref)
    raise TypeError(f"The 'workload' parameter must be a name, 'package.module:ClassName', a Workload subclass or "
                    f"instance. Got {_what(workload)} instead.")


def workload_ref(workload: str | type[Workload] | Workload) -> str:
    """The reference string of ``workload`` (see :func:`workload_spec`).

    Examples:
        >>> from batchlaw.workloads import LinearRegression
        >>> workload_ref(LinearRegression), workload_ref("nqm")
        ('linreg', 'nqm')
    """
    return workload_spec(workload)[0]


def resolve_workload(workload: str | type[Workload] | Workload, kwargs: dict | None = None) -> Workload:
    """A ready workload from a name, a ``"package.module:ClassName"`` reference, a class or an instance.

    An instance is returned as is; a class or reference is imported and constructed with
    ``kwargs``.

    Args:
        workload: built-in name (``linreg``, ``bytemlp``, ``bytegpt``, ``nqm``),
            ``"package.module:ClassName"``, a :class:`Workload` subclass or instance.
        kwargs: keyword arguments of the constructor.

    Returns:
        The :class:`Workload`.

    Raises:
        WorkloadImportError: the module cannot be imported here (a ``ValueError``).
        ValueError: no such attribute, not a Workload subclass, or the constructor rejected the
            arguments (a ``TypeError`` or ``ValueError``); each with a one-line message.
        UserCodeError: the module or the constructor failed in the user's own code (another
            exception, or ``sys.exit`` on import), with the file and line.

    Examples:
        >>> resolve_workload("nqm", {"dim": 4}).dim
        4
        >>> resolve_workload("batchlaw.workloads:NoisyQuadratic", {"dim": 3}).dim
        3
    """
    if isinstance(workload, Workload):
        if kwargs:
            raise ValueError(f"The 'workload_kwargs' parameter must be empty when 'workload' is an instance "
                             f"(got {kwargs!r}).")
        return workload
    if isinstance(workload, str):
        ref = workload.strip()
        cls = _builtins().get(ref) or _import_class(ref)
    elif isinstance(workload, type) and issubclass(workload, Workload):
        cls, ref = workload, workload.__qualname__
    else:
        raise TypeError(f"The 'workload' parameter must be a name, 'package.module:ClassName', a Workload subclass "
                        f"or instance. Got {_what(workload)} instead.")
    kwargs = {} if kwargs is None else kwargs
    if not isinstance(kwargs, dict):
        raise ValueError(f"The 'workload_kwargs' parameter must be a dict. Got {kwargs!r} instead.")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"The workload {ref!r} rejected the arguments {kwargs!r}: {_one_line(err)}") from None
    except Exception as err:  # a bug in the constructor: the user's code, not their arguments
        raise user_code_error(f"The constructor of workload {ref!r}", err, definition(cls.__init__)) from err


class Hook(NamedTuple):
    """A piece of the user's code that :func:`check_training_step` runs.

    Attributes:
        label: how messages name it, e.g. ``"The workload mod:W.loss()"``; a problem is appended.
        fn: the callable.
        where: ``"file.py:LINE"`` to blame when the error's traceback has no frame of the user's
            (its definition), or ``None``.
    """

    label: str
    fn: Callable[..., Any]
    where: str | None


def check_training_step(make_model: Hook, sample_batch: Hook, loss: Hook, make_optimizer: Hook | None = None, *,
                        batch_size: int = 2) -> None:
    """Run one training step of the user's code on a tiny batch and check what each piece returns.

    The contract a model must meet for batchlaw to train, profile or measure it:
    ``make_model.fn()`` returns a ``torch.nn.Module`` with trainable parameters;
    ``sample_batch.fn(batch_size)`` and ``loss.fn(model, batch)`` run, and the loss is a
    one-element floating tensor that depends on the parameters; backpropagating it gives dense
    gradients (the noise monitor takes their norms, and AdamW refuses sparse ones);
    ``make_optimizer.fn(model)``, when given, returns an object with ``param_groups``. The
    global random state is left as it was, and the model's gradients are cleared afterwards.

    Args:
        make_model: returns the model (called with no argument).
        sample_batch: returns a batch of ``batch_size`` examples.
        loss: ``loss(model, batch)``.
        make_optimizer: ``make_optimizer(model)``, or ``None`` when the optimizer is batchlaw's.
        batch_size: examples in the test batch.

    Raises:
        UserCodeError: a piece raised, or returned something the contract does not allow; with
            the user's file and line (the innermost frame of the user's, else ``hook.where``).
    """
    import torch

    def call(hook: Hook, *args):
        try:
            return hook.fn(*args)
        except (Exception, SystemExit) as err:
            raise user_code_error(hook.label, err, hook.where) from err

    def refuse(hook: Hook, problem: str) -> UserCodeError:
        return UserCodeError(f"{hook.label} {problem}", hook.where)

    with torch.random.fork_rng(devices=[]):
        model = call(make_model)
        if not isinstance(model, torch.nn.Module):
            raise refuse(make_model, f"returned {_what(model)}, not a torch.nn.Module: return the model.")
        if not any(p.requires_grad for p in model.parameters()):
            raise refuse(make_model, "returned a model with no trainable parameter (every parameter has "
                         "requires_grad=False, or there are none): there is no gradient to train or measure.")
        batch = call(sample_batch, batch_size)
        value = call(loss, model, batch)
        if not (isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point()):
            shape = (f"a tensor of shape {tuple(value.shape)} ({value.dtype})" if isinstance(value, torch.Tensor)
                     else _what(value))
            raise refuse(loss, f"returned {shape}, not a scalar: return the mean loss over the batch as a 0-d "
                         "floating tensor (e.g. losses.mean()).")
        if not value.requires_grad:
            raise refuse(loss, "returned a loss that does not depend on the model's trainable parameters "
                         "(requires_grad=False): compute it from model(batch), outside torch.no_grad().")
        try:
            value.backward()
        except Exception as err:
            raise user_code_error(f"{loss.label}: backpropagating its loss", err, loss.where) from err
        sparse = [n for n, p in model.named_parameters() if p.grad is not None and p.grad.is_sparse]
        model.zero_grad(set_to_none=True)
        if sparse:
            raise refuse(make_model, f"returned a model whose parameters {sparse} get sparse gradients (e.g. "
                         "nn.Embedding(sparse=True)): batchlaw measures gradient norms and needs dense gradients; "
                         "build those layers with sparse=False.")
        if make_optimizer is not None:
            opt = call(make_optimizer, model)
            if not hasattr(opt, "param_groups"):
                raise refuse(make_optimizer, f"returned {_what(opt)}, not an optimizer (no param_groups).")


def check_workload(workload: Workload, *, batch_size: int = 2) -> None:
    """Run each hook of ``workload`` once on a tiny batch and check what it returns.

    Done by every command that trains a workload given by reference, before any work, so a
    workload that breaks the contract of :class:`~batchlaw.workloads.Workload` fails at once
    with its file and line, not hours in (or as a confusing error inside batchlaw). The checks
    are :func:`check_training_step`'s, on :meth:`~Workload.make_model` (seed 0),
    :meth:`~Workload.sample_batch`, :meth:`~Workload.loss` and :meth:`~Workload.make_optimizer`
    (at the workload's ``default_lr``).

    Args:
        workload: the workload instance.
        batch_size: examples in the test batch.

    Raises:
        UserCodeError: a hook raised, or returned something the contract does not allow; with
            the user's file and line.
    """
    import torch

    cls = type(workload)
    label = f"The workload {cls.__module__}:{cls.__qualname__}"

    def hook(name: str, fn: Callable[..., Any]) -> Hook:
        return Hook(f"{label}.{name}()", fn, definition(getattr(workload, name)))

    check_training_step(
        hook("make_model", lambda: workload.make_model(0)),
        hook("sample_batch", lambda b: workload.sample_batch(b, torch.Generator().manual_seed(0))),
        hook("loss", workload.loss),
        hook("make_optimizer", lambda model: workload.make_optimizer(model, workload.default_lr)),
        batch_size=batch_size)


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
