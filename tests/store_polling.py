"""Waiting on a sweep that runs in another process: which trials its SQLite store holds as finished."""

from __future__ import annotations

import sqlite3
import time


def finished_trials(proc, db, at_least: int, *, timeout: float = 120.0, poll: float = 0.05) -> dict:
    """``{key: finished_at}`` of the trials in store ``db`` once at least ``at_least`` are there, or
    as they stand when ``proc`` exits or ``timeout`` seconds pass. A store that is being written
    (locked) or not created yet reads as it was."""
    finished: dict = {}
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(db) as con:
                    finished = dict(con.execute("SELECT key, finished_at FROM trials").fetchall())
            except sqlite3.OperationalError:
                pass
        if len(finished) >= at_least:
            break
        time.sleep(poll)
    return finished
