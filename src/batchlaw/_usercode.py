"""Where an error comes from: the user's code (a workload, a model factory), batchlaw, or a library.

An exception that a user's workload raises is reported as an error in that workload, at the
innermost line of the user's own file in its traceback, never as a bug in batchlaw. The rule
(:func:`user_location`): walk the traceback from the innermost frame outwards, skipping the
frames of libraries (the standard library, site-packages: torch, numpy ...); if the first frame
left is in a user's file, the error is the user's; if it is in batchlaw, it is batchlaw's.
For an exception re-raised from a worker process (``concurrent.futures``), the worker's frames
come from the remote traceback's text.
"""

from __future__ import annotations

import inspect
import os
import re
import site
import sysconfig
import traceback
from functools import lru_cache
from pathlib import Path

from .errors import UserCodeError

__all__ = ["is_user_file", "user_location", "definition", "user_code_error"]

_PACKAGE = os.path.realpath(Path(__file__).resolve().parent) + os.sep
_REMOTE_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+)')


@lru_cache(maxsize=1)
def _library_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if paths.get(k)}
    roots.update(getattr(site, "getsitepackages", list)())
    user_site = getattr(site, "getusersitepackages", lambda: None)()
    if user_site:
        roots.add(user_site)
    return tuple(os.path.realpath(r) + os.sep for r in roots)


def _is_batchlaw(filename: str) -> bool:
    return os.path.realpath(filename).startswith(_PACKAGE)


def is_user_file(filename: str | None) -> bool:
    """True for a source file of the user's: not batchlaw's, not a library's, not ``<frozen ...>``."""
    if not filename or filename.startswith("<"):
        return False
    real = os.path.realpath(filename)
    if real.startswith(_PACKAGE) or real.startswith(_library_roots()):
        return False
    parts = Path(real).parts
    return "site-packages" not in parts and "dist-packages" not in parts


def _frames(err: BaseException) -> list[tuple[str, int]]:
    """``(file, line)`` of ``err``'s traceback, outermost first, a worker's frames last."""
    out = [(f.filename, f.lineno or 0) for f in traceback.extract_tb(err.__traceback__)]
    remote = err.__cause__
    if remote is not None and type(remote).__name__ == "_RemoteTraceback":
        out += [(m["file"], int(m["line"])) for m in _REMOTE_FRAME.finditer(str(remote))]
    return out


def _show(filename: str, line: int) -> str:
    rel = os.path.relpath(filename) if os.path.isabs(filename) else filename
    return f"{filename if rel.startswith('..') else rel}:{line}"


def user_location(err: BaseException) -> str | None:
    """``"file.py:LINE"`` when ``err`` was raised in the user's code (see the module docstring), else ``None``."""
    for filename, line in reversed(_frames(err)):
        if _is_batchlaw(filename):
            return None
        if is_user_file(filename):
            return _show(filename, line)
    return None


def definition(fn) -> str | None:
    """``"file.py:LINE"`` where the function or method ``fn`` is defined, when known."""
    fn = inspect.unwrap(getattr(fn, "__func__", fn))
    code = getattr(fn, "__code__", None)
    if code is None:
        return None
    return _show(code.co_filename, code.co_firstlineno)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= 300 else line[:297] + "..."


def user_code_error(what: str, err: BaseException, fallback: str | None = None) -> UserCodeError:
    """A :class:`UserCodeError` for ``err``, raised by the user's code while doing ``what``
    (e.g. ``"the workload 'mod:W'.make_model(0)"``); located at the user's innermost frame or
    else at ``fallback`` (the hook's definition)."""
    if isinstance(err, UserCodeError):
        return err
    where = user_location(err) or fallback
    return UserCodeError(f"{what} raised {type(err).__name__}: {_first_line(err)}".rstrip(": "), where)

