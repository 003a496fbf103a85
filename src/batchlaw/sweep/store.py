"""SQLite store of trials: written as each trial finishes, so a crash loses no finished trial.

One row per trial, keyed by the trial spec's hash (:attr:`TrialSpec.key`): re-running a sweep
finds its finished trials here and does not run them again. Each insert is its own
transaction, committed before the next trial's result is handled, so even SIGKILL loses
only the trials that were still running. Sweeps are recorded with their configuration, so
``batchlaw report`` can rebuild the analysis from the file alone.
"""

from __future__ import annotations

import csv
import json
import sqlite3
import time
from pathlib import Path

__all__ = ["TrialStore", "CSV_COLUMNS"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sweeps (
    name TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS trials (
    key TEXT PRIMARY KEY,
    sweep TEXT NOT NULL,
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
"""

#: Columns of :meth:`TrialStore.export_csv`.
CSV_COLUMNS = ("sweep", "key", "batch_size", "lr", "seed", "status", "steps_to_target", "examples_to_target",
               "tokens_to_target", "wall_time_s", "b_simple", "final_loss")


class TrialStore:
    """A SQLite file of sweeps and their trials.

    Args:
        path: the database file (created if missing).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.parent and not self.path.parent.exists():
            raise ValueError(f"The directory of the store {str(self.path)!r} does not exist.")
        self._conn = sqlite3.connect(self.path, timeout=30.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        with self._conn:
            self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> TrialStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -------------------------------------------------------------- sweeps
    def save_sweep(self, name: str, config: dict) -> None:
        """Record a sweep's configuration; a different configuration under the same name is an error."""
        row = self._conn.execute("SELECT config FROM sweeps WHERE name = ?", (name,)).fetchone()
        blob = json.dumps(config, sort_keys=True)
        if row is not None:
            if row[0] != blob:
                raise ValueError(
                    f"The store {str(self.path)!r} already holds a sweep named {name!r} with another "
                    "configuration. Use another --name or another store file."
                )
            return
        with self._conn:
            self._conn.execute("INSERT INTO sweeps VALUES (?, ?, ?)", (name, blob, time.time()))

    def sweeps(self) -> dict[str, dict]:
        return {n: json.loads(c) for n, c in self._conn.execute("SELECT name, config FROM sweeps ORDER BY created_at")}

    # -------------------------------------------------------------- trials
    def get(self, key: str) -> dict | None:
        row = self._conn.execute("SELECT result FROM trials WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def add(self, sweep: str, result: dict) -> None:
        """Store one finished trial (committed at once). A trial already stored is left as it is."""
        spec = result["spec"]
        noise = result.get("noise") or {}
        with self._conn:
            self._conn.execute(
                "INSERT OR IGNORE INTO trials VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (result["key"], sweep, spec["batch_size"], spec["lr"], spec["seed"], result["status"],
                 result["steps_to_target"], result["examples_to_target"], result["tokens_to_target"],
                 result["wall_time_s"], noise.get("b_simple"), json.dumps(result), time.time()),
            )

    def trials(self, sweep: str | None = None) -> list[dict]:
        """Results of all trials (of one sweep), in the order they finished."""
        q, args = "SELECT result, sweep, finished_at FROM trials", ()
        if sweep is not None:
            q, args = q + " WHERE sweep = ?", (sweep,)
        out = []
        for blob, name, finished in self._conn.execute(q + " ORDER BY finished_at, rowid", args):
            r = json.loads(blob)
            r["sweep"], r["finished_at"] = name, finished
            out.append(r)
        return out

    def count(self, sweep: str | None = None) -> int:
        q, args = "SELECT COUNT(*) FROM trials", ()
        if sweep is not None:
            q, args = q + " WHERE sweep = ?", (sweep,)
        return self._conn.execute(q, args).fetchone()[0]

    def export_csv(self, path: str | Path, sweep: str | None = None) -> int:
        """Write one row per trial with :data:`CSV_COLUMNS`; returns the number of rows."""
        rows = self.trials(sweep)
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(CSV_COLUMNS)
            for r in rows:
                s = r["spec"]
                w.writerow([r["sweep"], r["key"], s["batch_size"], s["lr"], s["seed"], r["status"],
                            r["steps_to_target"], r["examples_to_target"], r["tokens_to_target"],
                            r["wall_time_s"], (r.get("noise") or {}).get("b_simple"), r["final_loss"]])
        return len(rows)
