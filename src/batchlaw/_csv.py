"""Reading the columns a command needs from a user's CSV, with errors that name what exists."""

from __future__ import annotations

import csv
import math
from pathlib import Path

__all__ = ["read_columns", "read_header"]


def read_header(path: str | Path) -> list[str]:
    """The column names of a CSV file (its first row), with the same errors as :func:`read_columns`."""
    return _checked(Path(path), _header)


def _header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return next(csv.reader(fh), [])


def read_columns(path: str | Path, columns: list[str], numeric: list[str] = ()) -> dict[str, list]:
    """Read ``columns`` from a CSV with a header row.

    The file is read as UTF-8; a byte-order mark (as Excel writes) is skipped.

    Raises:
        ValueError: a missing file, a directory, a file that is not UTF-8 text, a column that
            does not exist (the message lists those that do), or a non-numeric / non-finite
            value in a ``numeric`` column (row and value named).
    """
    return _checked(Path(path), lambda p: _read(p, columns, numeric))


def _checked(path: Path, read):
    """Run ``read(path)``, turning every way a file can fail into a one-line ValueError naming it."""
    if path.is_dir():
        raise ValueError(f"The CSV file {str(path)!r} is a directory. Pass the path of a CSV file.")
    if not path.is_file():
        raise ValueError(f"The CSV file {str(path)!r} does not exist.")
    try:
        return read(path)
    except UnicodeDecodeError as err:
        raise ValueError(f"The CSV file {str(path)!r} is not UTF-8 text (byte {err.start}: {err.reason}). "
                         "Save it as UTF-8 CSV.") from None
    except csv.Error as err:
        raise ValueError(f"The CSV file {str(path)!r} cannot be parsed as CSV: {err}.") from None
    except OSError as err:
        raise ValueError(f"The CSV file {str(path)!r} cannot be read: {err.strerror or err}.") from None


def _read(path: Path, columns: list[str], numeric) -> dict[str, list]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in columns if c not in header]
        if missing:
            raise ValueError(
                f"Column(s) {', '.join(map(repr, missing))} not found in {str(path)!r}. "
                f"Columns that exist: {', '.join(map(repr, header)) or 'none (empty file)'}."
            )
        out: dict[str, list] = {c: [] for c in columns}
        for line, row in enumerate(reader, start=2):
            for c in columns:
                v = row[c]
                if v is None:
                    raise ValueError(f"Line {line} of {str(path)!r} has fewer fields than the header "
                                     f"(no value for column {c!r}).")
                if c in numeric:
                    try:
                        v = float(v)
                    except (TypeError, ValueError):
                        raise ValueError(f"Column {c!r}, line {line} of {str(path)!r}: {row[c]!r} is not a number.") from None
                    if not math.isfinite(v):
                        raise ValueError(f"Column {c!r}, line {line} of {str(path)!r}: {row[c]!r} is not finite.")
                out[c].append(v)
    if not out[columns[0]]:
        raise ValueError(f"The CSV file {str(path)!r} has no data rows.")
    return out
