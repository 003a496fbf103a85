"""SQLite store of trials: written as each trial finishes, so a crash loses no finished trial.

One row per trial, keyed by the trial spec's hash (:attr:`TrialSpec.key`): re-running a sweep
finds its finished trials here and does not run them again. A trial belongs to every sweep
that asked for it (table ``sweep_trials``): two sweeps that share a setting share the result,
not the ownership. Each insert is its own transaction, committed before the next trial's
result is handled, so even SIGKILL loses only the trials that were still running. Sweeps are
recorded with their configuration, so ``batchlaw report`` can rebuild the analysis from the
file alone.

Schema versions (``PRAGMA user_version``): 0/1, the first layout, where each trial had one
owning sweep; 2 adds ``sweep_trials``. Opening a version-1 file migrates it in place: each
trial joins its owner and every other sweep whose configuration would have asked for it
(same workload, target and budget; a batch size and seed of that sweep), which recovers the
trials the first layout gave to whichever sweep stored them first.

Errors (a directory, a file that is not SQLite, a truncated or tampered file, a constraint a
result violates) are raised as :class:`StoreError`, a ``ValueError`` whose message names the
file and says what to do.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import sqlite3
import time
from pathlib import Path

from .config import SweepConfig
from .trial import trial_lower_bound

__all__ = ["TrialStore", "StoreError", "CSV_COLUMNS", "SCHEMA_VERSION"]

#: Layout version written in ``PRAGMA user_version``.
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sweeps (
    name TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS trials (
    key TEXT PRIMARY KEY,
    sweep TEXT NOT NULL,  -- the sweep that ran it; membership is in sweep_trials
    batch_size REAL NOT NULL,
    lr REAL NOT NULL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL,
    steps_to_target REAL,
    examples_to_target REAL,
    tokens_to_target REAL,
    wall_time_s REAL,
    b_simple REAL,
    result TEXT NOT NULL,
    finished_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS trials_sweep ON trials (sweep);
CREATE TABLE IF NOT EXISTS sweep_trials (
    sweep TEXT NOT NULL,
    key TEXT NOT NULL REFERENCES trials (key),
    PRIMARY KEY (sweep, key)
);
"""

#: Columns of :meth:`TrialStore.export_csv`.
CSV_COLUMNS = ("sweep", "key", "batch_size", "lr", "seed", "status", "steps_to_target", "examples_to_target",
               "tokens_to_target", "wall_time_s", "b_simple", "final_loss", "steps_lower_bound")

_STATUSES = ("reached", "budget", "diverged")
# spec fields that must agree for a trial to belong to a sweep (besides batch size, seed and lr)
_SHARED_SPEC = ("workload", "target_loss", "max_steps", "eval_every", "target_on", "micro_batches", "workload_kwargs")


class StoreError(ValueError):
    """A store file that cannot be used as it is; the message names the file and what to do."""


def _guard(method):
    """Turn SQLite's errors into a :class:`StoreError` naming the file."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.IntegrityError as err:
            raise StoreError(f"The store {str(self.path)!r} refused a row: {err}.") from None
        except sqlite3.OperationalError as err:
            raise StoreError(f"The store {str(self.path)!r} cannot be used: {err}. Check that the file and its "
                             "directory are writable and that no other program holds a lock on it.") from None
        except sqlite3.DatabaseError as err:
            raise StoreError(f"The store {str(self.path)!r} is not a readable batchlaw store ({err}): it is not "
                             "SQLite, or it is truncated or damaged. Pass the file 'batchlaw sweep' wrote, or a new "
                             "path to start a new store.") from None

    return wrapper


def _check_result(path: Path, key: str, blob: str) -> dict:
    """A stored result, or a :class:`StoreError` that says which row is damaged."""

    def bad(why: str) -> StoreError:
        return StoreError(f"The store {str(path)!r} has a damaged trial row (key {key!r}): {why}. Delete that row "
                          "(or the file) and rerun the sweep to measure the trial again.")

    try:
        r = json.loads(blob)
    except (TypeError, ValueError):
        raise bad("its result is not JSON") from None
    if not isinstance(r, dict):
        raise bad("its result is not a JSON object")
    missing = [k for k in ("key", "spec", "status", "steps_to_target", "examples_to_target", "tokens_to_target",
                           "wall_time_s", "final_loss", "curve") if k not in r]
    if missing:
        raise bad(f"fields {missing} are missing")
    spec = r["spec"]
    if not isinstance(spec, dict) or any(k not in spec for k in ("batch_size", "lr", "seed")):
        raise bad("its spec lacks batch_size, lr or seed")
    for name in ("batch_size", "lr"):
        v = spec[name]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise bad(f"spec {name} = {v!r} is not a positive number")
    if isinstance(spec["seed"], bool) or not isinstance(spec["seed"], int):
        raise bad(f"spec seed = {spec['seed']!r} is not an integer")
    if r["status"] not in _STATUSES:
        raise bad(f"status {r['status']!r} is not one of {_STATUSES}")
    s = r["steps_to_target"]
    if r["status"] == "reached":
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s <= 0:
            raise bad(f"steps_to_target = {s!r} is not a positive number for a trial that reached the target")
    elif s is not None:
        raise bad(f"steps_to_target = {s!r} for a trial that did not reach the target")
    def num(v, allow_none=True):
        if v is None:
            return allow_none
        return not isinstance(v, bool) and isinstance(v, (int, float))

    if not isinstance(r["curve"], list) or not all(
            isinstance(c, list) and len(c) >= 2 and num(c[0], False) and num(c[1]) and (len(c) < 3 or num(c[2]))
            for c in r["curve"]):
        raise bad("its loss curve is not a list of [step, loss, ...] rows of numbers")
    if r.get("unit") not in ("examples", "tokens"):
        raise bad(f"unit {r.get('unit')!r} is not 'examples' or 'tokens'")
    noise = r.get("noise")
    if noise is not None:
        if not isinstance(noise, dict) or not all(num(noise.get(k)) for k in ("b_simple", "g_sq_mean",
                                                                            "trace_sigma_mean")):
            raise bad("its noise record is not an object of numbers")
        if noise.get("g_sq_mean") is not None and noise.get("trace_sigma_mean") is None:
            raise bad("its noise record has g_sq_mean without trace_sigma_mean")
    for name in ("wall_time_s", "final_loss", "examples_to_target", "tokens_to_target"):
        if not num(r[name]):
            raise bad(f"{name} = {r[name]!r} is not a number")
    return r


class TrialStore:
    """A SQLite file of sweeps and their trials.

    Args:
        path: the database file.
        create: create the file if it is missing (``False``: a missing file, or a SQLite file
            without batchlaw's tables, is an error).
        readonly: open for reading only (SQLite ``mode=ro``): nothing is created, migrated or
            written, so a read command leaves the file as it was; implies ``create=False``. A
            store of an older layout is refused (opening it for writing once upgrades it).

    Raises:
        StoreError: the path is a directory, its directory does not exist, or the file is not
            a batchlaw store (see the module docstring).
    """

    def __init__(self, path: str | Path, *, create: bool = True, readonly: bool = False) -> None:
        self.path = Path(path)
        create = create and not readonly
        if self.path.is_dir():
            raise StoreError(f"The store {str(self.path)!r} is a directory. Pass a file path such as "
                             f"{str(self.path / 'sweeps.db')!r}.")
        if not self.path.exists():
            if not create:
                raise StoreError(f"The store {str(self.path)!r} does not exist. Run 'batchlaw sweep --store "
                                 f"{self.path} ...' first.")
            if not self.path.parent.is_dir():
                raise StoreError(f"The directory of the store {str(self.path)!r} does not exist. Create it first.")
        self._conn = None
        self._open(create, readonly)

    @_guard
    def _open(self, create: bool, readonly: bool) -> None:
        if readonly:
            # a read-only connection to a WAL file creates the -wal and -shm files if they are missing; without
            # them no writer holds pages not yet in the file, which can then be read as immutable (creating nothing)
            wal = self.path.with_name(self.path.name + "-wal").exists()
            uri = f"{self.path.resolve().as_uri()}?{'mode=ro' if wal else 'immutable=1'}"
            self._conn = sqlite3.connect(uri, uri=True, timeout=30.0)
        else:
            self._conn = sqlite3.connect(self.path, timeout=30.0)
        tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not create and not {"sweeps", "trials"} <= tables:
            held = " (it holds only branched measurements, from 'batchlaw branch')" if "branches" in tables else ""
            raise StoreError(f"The file {str(self.path)!r} is SQLite but not a batchlaw store (tables sweeps "
                             f"and trials are missing){held}. Pass the file 'batchlaw sweep --store' wrote.")
        if readonly:
            self._check_readable_layout(tables)
            return
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"The store {str(self.path)!r} was written by a newer batchlaw (layout {version}, this "
                             f"one reads up to {SCHEMA_VERSION}). Upgrade batchlaw.")
        with self._conn:
            self._conn.executescript(_SCHEMA)
        if version < SCHEMA_VERSION:
            self._migrate()

    def _check_readable_layout(self, tables: set[str]) -> None:
        """A read-only store must be of this layout: reading may not migrate it."""
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"The store {str(self.path)!r} was written by a newer batchlaw (layout {version}, this "
                             f"one reads up to {SCHEMA_VERSION}). Upgrade batchlaw.")
        if version < SCHEMA_VERSION or "sweep_trials" not in tables:
            raise StoreError(f"The store {str(self.path)!r} has an older layout ({version}) that a read-only open "
                             f"cannot upgrade: run 'batchlaw report {self.path} --out DIR' once (it upgrades the "
                             "file in place), then read it again.")

    def _migrate(self) -> None:
        """Layout 1 -> 2: each trial joins its owner and every sweep that would have asked for it."""
        configs = {}
        for name, blob in self._conn.execute("SELECT name, config FROM sweeps"):
            try:
                configs[name] = json.loads(blob)
            except ValueError:
                continue  # reported when the sweep is read
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute("INSERT OR IGNORE INTO sweep_trials (sweep, key) SELECT sweep, key FROM trials")
            for key, blob in self._conn.execute("SELECT key, result FROM trials").fetchall():
                try:
                    spec = json.loads(blob)["spec"]
                except (ValueError, KeyError, TypeError):
                    continue  # reported when the trial is read
                for name, cfg in configs.items():
                    if _asks_for(cfg, spec):
                        self._conn.execute("INSERT OR IGNORE INTO sweep_trials VALUES (?, ?)", (name, key))
            self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def __enter__(self) -> TrialStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -------------------------------------------------------------- sweeps
    @_guard
    def save_sweep(self, name: str, config: dict) -> None:
        """Record a sweep's configuration; a different configuration under the same name is an error."""
        row = self._conn.execute("SELECT config FROM sweeps WHERE name = ?", (name,)).fetchone()
        blob = json.dumps(config, sort_keys=True, allow_nan=False)
        if row is not None:
            if row[0] != blob:
                raise StoreError(
                    f"The store {str(self.path)!r} already holds a sweep named {name!r} with another "
                    "configuration. Use another --name or another store file."
                )
            return
        with self._conn:
            self._conn.execute("INSERT INTO sweeps VALUES (?, ?, ?)", (name, blob, time.time()))

    @_guard
    def sweeps(self) -> dict[str, dict]:
        """Configurations of the stored sweeps, oldest first."""
        out = {}
        for name, blob in self._conn.execute("SELECT name, config FROM sweeps ORDER BY created_at"):
            try:
                cfg = json.loads(blob)
            except (TypeError, ValueError):
                cfg = None
            out[name] = self._check_config(name, cfg)
        return out

    def _check_config(self, name, cfg) -> dict:
        why = None
        if not isinstance(cfg, dict) or not isinstance(name, str):
            why = "its configuration is not a JSON object"
        else:
            try:
                SweepConfig(**{**cfg, "batch_sizes": tuple(cfg.get("batch_sizes") or ()),
                               "seeds": tuple(cfg.get("seeds") or ())})
            except (TypeError, ValueError) as err:
                why = f"its configuration is not valid ({' '.join(str(err).split())})"
        if why:
            raise StoreError(f"The store {str(self.path)!r} has a damaged sweep row ({name!r}): {why}. Delete that "
                             "row, or use a new store.")
        return cfg

    # -------------------------------------------------------------- trials
    @_guard
    def get(self, key: str, sweep: str | None = None) -> dict | None:
        """The stored result of trial ``key`` (``None`` if not stored); with ``sweep``, the trial
        also joins that sweep."""
        row = self._conn.execute("SELECT result FROM trials WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        result = _check_result(self.path, key, row[0])
        if sweep is not None:
            with self._conn:
                self._conn.execute("INSERT OR IGNORE INTO sweep_trials VALUES (?, ?)", (sweep, key))
        return result

    @_guard
    def add(self, sweep: str, result: dict) -> None:
        """Store one finished trial of ``sweep`` (committed at once).

        A trial already stored (by this or another sweep, or by a concurrent run of the same
        sweep) keeps its first result and joins ``sweep``.

        Raises:
            StoreError: the result violates a constraint (a missing or non-finite field).
        """
        spec = result["spec"]
        noise = result.get("noise") or {}
        blob = json.dumps(result)  # a diverged trial's losses may be inf or NaN: Python's JSON keeps them
        values = (result["key"], sweep, spec["batch_size"], spec["lr"], spec["seed"], result["status"],
                  result["steps_to_target"], result["examples_to_target"], result["tokens_to_target"],
                  result["wall_time_s"], noise.get("b_simple"), blob, time.time())
        values = tuple(None if isinstance(v, float) and math.isnan(v) else v for v in values)
        with self._conn:
            exists = self._conn.execute("SELECT 1 FROM trials WHERE key = ?", (result["key"],)).fetchone()
            if not exists:
                try:
                    self._conn.execute("INSERT INTO trials VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", values)
                except sqlite3.IntegrityError as err:
                    raise StoreError(
                        f"The store {str(self.path)!r} refused trial {result['key']} (batch {spec['batch_size']!r}, "
                        f"lr {spec['lr']!r}, seed {spec['seed']!r}): {err}. A field is missing or not finite "
                        "(e.g. a NaN learning rate); check the sweep's options."
                    ) from None
            self._conn.execute("INSERT OR IGNORE INTO sweep_trials VALUES (?, ?)", (sweep, result["key"]))

    @_guard
    def trials(self, sweep: str | None = None) -> list[dict]:
        """Results of all trials (of one sweep), in the order they finished.

        Each result carries ``sweep`` (the sweep asked about, or with ``sweep=None`` the sweep
        that ran it) and ``finished_at``.
        """
        if sweep is None:
            q, args = "SELECT key, result, sweep, finished_at FROM trials ORDER BY finished_at, rowid", ()
        else:
            q = ("SELECT t.key, t.result, m.sweep, t.finished_at FROM sweep_trials m JOIN trials t ON t.key = m.key "
                 "WHERE m.sweep = ? ORDER BY t.finished_at, t.rowid")
            args = (sweep,)
        out = []
        for key, blob, name, finished in self._conn.execute(q, args).fetchall():
            r = _check_result(self.path, key, blob)
            r["sweep"], r["finished_at"] = name, finished
            out.append(r)
        return out

    @_guard
    def count(self, sweep: str | None = None) -> int:
        """Number of stored trials (of one sweep)."""
        if sweep is None:
            return self._conn.execute("SELECT COUNT(*) FROM trials").fetchone()[0]
        return self._conn.execute("SELECT COUNT(*) FROM sweep_trials WHERE sweep = ?", (sweep,)).fetchone()[0]

    def export_csv(self, path: str | Path, sweep: str | None = None) -> int:
        """Write one row per trial and sweep with :data:`CSV_COLUMNS`; returns the number of rows.

        ``steps_lower_bound`` is empty for a trial that reached the target, else a lower bound on
        its steps (:func:`~batchlaw.sweep.trial.trial_lower_bound`), so that ``batchlaw fit cbs``
        reads censored seeds from the file as the sweep's analysis does.

        A trial shared by two sweeps has one row for each (``sweep=None``: every sweep).
        """
        names = [sweep] if sweep is not None else list(self.sweeps())
        rows = [r for name in names for r in self.trials(name)]
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(CSV_COLUMNS)
            for r in rows:
                s = r["spec"]
                w.writerow([r["sweep"], r["key"], s["batch_size"], s["lr"], s["seed"], r["status"],
                            r["steps_to_target"], r["examples_to_target"], r["tokens_to_target"],
                            r["wall_time_s"], (r.get("noise") or {}).get("b_simple"), r["final_loss"],
                            trial_lower_bound(r)])
        return len(rows)


def _asks_for(config: dict, spec: dict) -> bool:
    """Whether a sweep with ``config`` would run a trial with ``spec`` (at some learning rate)."""
    try:
        return (all(config.get(k) == spec.get(k) for k in _SHARED_SPEC)
                and spec["batch_size"] in config["batch_sizes"] and spec["seed"] in config["seeds"])
    except (KeyError, TypeError):
        return False
