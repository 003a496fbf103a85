"""Find a workload by reference: a built-in name or ``"package.module:ClassName"``.

Everything that trains (sweeps, ``batchlaw measure``, trials in worker processes or on Ray)
stores a workload as a *reference* string plus JSON keyword arguments and rebuilds it with
:func:`resolve_workload`; :func:`workload_ref` turns what a user passed (a name, a class, an
instance) into that pair. Bad references fail at the boundary with a one-line error.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

from .base import Workload

__all__ = ["WorkloadImportError", "resolve_workload", "workload_ref", "workload_spec"]


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
        module = importlib.import_module(module_name)
    except ImportError as err:
        missing = getattr(err, "name", None)
        if missing and not (module_name == missing or module_name.startswith(missing + ".")):
            # the module exists but one of its own imports is missing
            raise ValueError(f"Importing workload module {module_name!r} failed: {err}.") from None
        raise WorkloadImportError(
            f"The workload module {module_name!r} cannot be imported ({type(err).__name__}: {err}): install it "
            "or add its directory to PYTHONPATH.", module_name, ref) from None
    except Exception as err:  # a module that raises while importing
        msg = str(err).splitlines()[0] if str(err) else ""
        raise ValueError(f"Importing workload module {module_name!r} failed: {type(err).__name__}: {msg}") from None
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


def _what(obj: Any) -> str:
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
            arguments; each with a one-line message.

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
    except TypeError as err:
        raise ValueError(f"The workload {ref!r} rejected the arguments {kwargs!r}: {_one_line(err)}") from None
    except ValueError as err:
        raise ValueError(f"The workload {ref!r} rejected the arguments {kwargs!r}: {_one_line(err)}") from None


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
