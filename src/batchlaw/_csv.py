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
        return _unique(next(csv.reader(fh), []), path)


def _unique(header: list[str], path: Path) -> list[str]:
    """``header``, unless a (non-empty) column name appears twice: which one would be meant?"""
    seen: dict[str, int] = {}
    for i, name in enumerate(header, start=1):
        if name.strip() and name in seen:
            raise ValueError(f"The CSV file {str(path)!r} names column {name!r} twice in its header (fields "
                             f"{seen[name]} and {i}). Rename or remove one of them.")
        seen.setdefault(name, i)
    return header


def read_columns(path: str | Path, columns: list[str], numeric: list[str] = ()) -> dict[str, list]:
    """Read ``columns`` from a CSV with a header row.

    The file is read as UTF-8; a byte-order mark (as Excel writes) is skipped.

    Raises:
        ValueError: a missing file, a directory, a file that is not UTF-8 text, a header that
            names a column twice, a column that does not exist (the message lists those that
            do), a row with fewer fields than the header (where a wanted column has no value) or
            more (a non-empty field beyond the header: often a decimal comma or an unquoted
            thousands separator that shifted the row), or a non-numeric / non-finite value in a
            ``numeric`` column (line and value named).
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
    columns = list(dict.fromkeys(columns))  # a column asked for twice (one column for two options) is read once
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = _unique(reader.fieldnames or [], path)
        missing = [c for c in columns if c not in header]
        if missing:
            raise ValueError(
                f"Column(s) {', '.join(map(repr, missing))} not found in {str(path)!r}. "
                f"Columns that exist: {', '.join(map(repr, header)) or 'none (empty file)'}."
            )
        out: dict[str, list] = {c: [] for c in columns}
        for row in reader:
            line = reader.line_num
            extra = [v for v in row.get(None, []) if v.strip()]
            if extra:
                raise ValueError(f"Line {line} of {str(path)!r} has {len(header) + len(row[None])} fields but the "
                                 f"header has {len(header)} (extra: {', '.join(map(repr, extra[:3]))}). A decimal "
                                 "comma or an unquoted thousands separator splits a value in two: use '.' for decimals "
                                 "and quote or remove the rest.")
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
