"""A real text corpus on every machine: the Python standard library's own source code.

No download is needed: the ``.py`` files of a fixed, documented list of standard-library modules
are read from the running interpreter's ``stdlib`` directory, concatenated in that order (each
preceded by a ``# file: NAME`` line), and split into a training part (the first 90% of bytes)
and a held-out part (the last 10%). The SHA-256 of the bytes read is recorded, so two runs can
tell whether they trained on the same text (it differs between Python versions, whose standard
libraries differ).
"""

from __future__ import annotations

import hashlib
import sysconfig
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = ["STDLIB_MODULES", "Corpus", "load_stdlib_corpus"]

#: The modules read, in this order. A module that is a package in this Python version is read
#: from its ``__init__.py``; one missing from this version is skipped (and not in the hash).
STDLIB_MODULES: tuple[str, ...] = (
    "argparse", "ast", "calendar", "collections", "configparser", "csv", "dataclasses",
    "difflib", "enum", "fractions", "functools", "heapq", "inspect", "ipaddress",
    "json.decoder", "json.encoder", "logging", "pathlib", "pprint", "random", "shutil",
    "statistics", "string", "subprocess", "tarfile", "textwrap", "threading", "typing",
    "unittest.case", "zipfile",
)


@dataclass(frozen=True)
class Corpus:
    """Bytes of text split into training and held-out parts."""

    train: np.ndarray  # (n_train,) uint8
    heldout: np.ndarray  # (n_heldout,) uint8
    files: tuple[str, ...]
    sha256: str

    @property
    def n_bytes(self) -> int:
        return int(self.train.size + self.heldout.size)


def _module_path(root: Path, module: str) -> Path | None:
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@lru_cache(maxsize=4)
def load_stdlib_corpus(heldout_fraction: float = 0.1) -> Corpus:
    """Read the standard-library corpus (cached per process).

    Args:
        heldout_fraction: share of bytes, taken from the end, kept for evaluation.
    """
    if not 0.0 < heldout_fraction < 0.5:
        raise ValueError(f"The 'heldout_fraction' parameter must be in (0, 0.5). Got {heldout_fraction!r}.")
    root = Path(sysconfig.get_paths()["stdlib"])
    parts, files = [], []
    for module in STDLIB_MODULES:
        path = _module_path(root, module)
        if path is None:
            continue
        files.append(str(path.relative_to(root)))
        parts.append(f"# file: {module}\n".encode() + path.read_bytes())
    if not parts:
        raise RuntimeError(f"No standard-library sources found under {root}; is this a full Python install?")
    data = b"\n".join(parts)
    arr = np.frombuffer(data, dtype=np.uint8).copy()
    cut = int(arr.size * (1.0 - heldout_fraction))
    return Corpus(arr[:cut], arr[cut:], tuple(files), hashlib.sha256(data).hexdigest())
