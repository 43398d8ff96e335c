"""The service's own records of the searches it accepted: one SQLite table, safe across threads.

A record is written before its Ray job is submitted (the job's submission id is derived from the
search id), so a service that dies in between resubmits at start-up instead of losing or
duplicating the search.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

TERMINAL_STATES = ("SUCCEEDED", "FAILED", "CANCELLED")

SCHEMA = """
CREATE TABLE IF NOT EXISTS searches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    name TEXT NOT NULL,
    idempotency_key TEXT UNIQUE,
    spec TEXT NOT NULL,            -- the request's SearchSpec as JSON
    config TEXT NOT NULL,          -- the validated search config as JSON
    state TEXT NOT NULL,
    submitted INTEGER NOT NULL,    -- 1 once Ray accepted the job
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 1,  -- Ray jobs started for it (a head restart loses one)
    output_dir TEXT NOT NULL,
    error TEXT NOT NULL DEFAULT '',
    progress TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS searches_state ON searches (state);
"""
ALL = "*"
LIGHT = ("seq, id, name, idempotency_key, spec, state, submitted, cancel_requested, job_id, attempt, output_dir, "
         "error, progress, created_at, updated_at")


@dataclass
class SearchRecord:
    id: str
    name: str
    idempotency_key: str | None
    spec: dict[str, Any]
    config: dict[str, Any]
    state: str
    submitted: bool
    job_id: str
    output_dir: str
    attempt: int = 1
    error: str = ""
    progress: dict[str, Any] = field(default_factory=dict)
    cancel_requested: bool = False
    created_at: float = 0.0
    updated_at: float = 0.0
    seq: int = 0

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


def new_search_id() -> str:
    return "s-" + uuid.uuid4().hex[:16]


class DuplicateKey(Exception):
    """Another record already holds this idempotency key."""


class SearchStore:
    def __init__(self, path: str | Path, timeout_s: float = 30.0) -> None:
        """``timeout_s``: how long a query waits for another process's lock before failing."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=timeout_s)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        columns = {row["name"] for row in self._db.execute("PRAGMA table_info(searches)")}
        if "attempt" not in columns:  # a database from before job resubmission
            self._db.execute("ALTER TABLE searches ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1")

    def check_writable(self) -> None:
        """Take the write lock and let it go: raises sqlite3.OperationalError while another process
        holds the database (or the disk refuses) for longer than the timeout."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("ROLLBACK")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def insert(self, record: SearchRecord) -> SearchRecord:
        now = time.time()
        record.created_at = record.updated_at = now
        row = asdict(record)
        row.pop("seq")
        for key in ("spec", "config", "progress"):
            row[key] = json.dumps(row[key])
        columns = ", ".join(row)
        with self._lock:
            try:
                cursor = self._db.execute(f"INSERT INTO searches ({columns}) VALUES ({', '.join('?' * len(row))})",
                                          list(row.values()))
            except sqlite3.IntegrityError as exc:
                if "idempotency_key" in str(exc):
                    raise DuplicateKey(record.idempotency_key) from None
                raise
        record.seq = cursor.lastrowid
        return record

    def update(self, search_id: str, **changes: Any) -> None:
        changes["updated_at"] = time.time()
        for key in ("progress", "spec", "config"):
            if key in changes:
                changes[key] = json.dumps(changes[key])
        sets = ", ".join(f"{key} = ?" for key in changes)
        with self._lock:
            self._db.execute(f"UPDATE searches SET {sets} WHERE id = ?", [*changes.values(), search_id])

    def get(self, search_id: str, with_config: bool = True) -> SearchRecord | None:
        """``with_config=False`` skips the largest column (what listings and progress need)."""
        return self._one(f"SELECT {ALL if with_config else LIGHT} FROM searches WHERE id = ?", (search_id,))

    def by_key(self, key: str) -> SearchRecord | None:
        return self._one("SELECT * FROM searches WHERE idempotency_key = ?", (key,))

    def unfinished(self) -> list[SearchRecord]:
        return self._many(f"SELECT * FROM searches WHERE state NOT IN ({', '.join('?' * len(TERMINAL_STATES))}) "
                          "ORDER BY seq", TERMINAL_STATES)

    def count_unfinished(self) -> int:
        with self._lock:
            return self._db.execute(f"SELECT COUNT(*) FROM searches WHERE state NOT IN "
                                    f"({', '.join('?' * len(TERMINAL_STATES))})", TERMINAL_STATES).fetchone()[0]

    def page(self, states: Iterable[str] = (), name_prefix: str = "", after_seq: int = 0,
             limit: int = 50) -> list[tuple[int, str]]:
        """(seq, id) of the records after ``after_seq`` in acceptance order (keyset paging: stable while
        new ones arrive); the messages come from the service's cache or ``get``."""
        where, args = _page_filter(states, name_prefix, after_seq)
        with self._lock:
            rows = self._db.execute(f"SELECT seq, id FROM searches WHERE {where} ORDER BY seq LIMIT ?",
                                    (*args, limit)).fetchall()
        return [(row["seq"], row["id"]) for row in rows]

    def _one(self, sql: str, args: tuple) -> SearchRecord | None:
        rows = self._many(sql, args)
        return rows[0] if rows else None

    def _many(self, sql: str, args: Iterable[Any]) -> list[SearchRecord]:
        with self._lock:
            rows = self._db.execute(sql, tuple(args)).fetchall()
        return [_record(r) for r in rows]


def _page_filter(states: Iterable[str], name_prefix: str, after_seq: int) -> tuple[str, list[Any]]:
    where, args = ["seq > ?"], [after_seq]
    states = list(states)
    if states:
        where.append(f"state IN ({', '.join('?' * len(states))})")
        args += states
    if name_prefix:
        where.append("substr(name, 1, ?) = ?")
        args += [len(name_prefix), name_prefix]
    return " AND ".join(where), args


def _record(row: sqlite3.Row) -> SearchRecord:
    data = dict(row)
    for key in ("spec", "config", "progress"):
        data[key] = json.loads(data[key]) if key in data else {}
    data["submitted"], data["cancel_requested"] = bool(data["submitted"]), bool(data["cancel_requested"])
    return SearchRecord(**data)
