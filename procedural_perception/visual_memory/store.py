"""SQLite store of a visual memory: samples (vector, label, source, dataset, time), class names,
an append-only audit log and a generation counter.

The database is the memory's source of truth. Each ``add`` or ``remove`` is one transaction that
writes the samples *and* their audit rows and bumps the generation, so a process killed in the
middle leaves either the whole batch or none of it. Vectors live in the database too, so the faiss
index can always be rebuilt from it; a saved index snapshot is only trusted when it carries the
database's current generation. ``secure_delete`` overwrites removed rows in the file, so forgotten
vectors do not linger in free pages.

Tables::

    samples(id INTEGER PRIMARY KEY, label, source, dataset, added_at, vector BLOB float32[dim])
    classes(label INTEGER PRIMARY KEY, name)
    audit(seq, time, action 'add'|'remove', sample_id, label, source, reason)  -- no UPDATE/DELETE
    meta(key PRIMARY KEY, value)  -- dim, generation, next_id, free-form info (encoder, image size)
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY, label INTEGER NOT NULL, source TEXT, dataset TEXT,
    added_at REAL NOT NULL, vector BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS samples_source ON samples(source);
CREATE TABLE IF NOT EXISTS classes (label INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, action TEXT NOT NULL,
    sample_id INTEGER NOT NULL, label INTEGER, source TEXT, reason TEXT);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class Store:
    """Metadata, vectors and audit log of one memory. ``path=None`` keeps everything in RAM."""

    def __init__(self, path: str | Path | None, dim: int | None = None) -> None:
        self.path = None if path is None else Path(path)
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT) below.
        self.db = sqlite3.connect(":memory:" if path is None else str(path), isolation_level=None)
        self.db.execute("PRAGMA secure_delete = ON")
        self.db.execute("PRAGMA journal_mode = " + ("MEMORY" if path is None else "WAL"))
        self.db.execute("PRAGMA synchronous = FULL")
        self.db.executescript(SCHEMA)
        stored = self.get_meta("dim")
        if stored is None:
            if dim is None:
                raise ValueError(f"{path} is not a visual memory yet: give dim to create one.")
            with self.transaction():
                self._set_meta("dim", dim)
                self._set_meta("generation", 0)
                self._set_meta("next_id", 0)
        elif dim is not None and int(stored) != dim:
            raise ValueError(f"{path} holds {stored}-d vectors, not {dim}-d: use another folder or the right encoder.")
        self.dim = int(self.get_meta("dim"))

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # --- meta --------------------------------------------------------------------------------
    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def _set_meta(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def set_meta(self, key: str, value: Any) -> None:
        """Set one meta value in its own transaction."""
        with self.transaction():
            self._set_meta(key, value)

    def set_info(self, **info: Any) -> None:
        """Free-form facts about the memory (encoder spec, image size), kept under ``info.*``."""
        with self.transaction():
            for key, value in info.items():
                self._set_meta(f"info.{key}", value)

    def info(self) -> dict[str, Any]:
        rows = self.db.execute("SELECT key, value FROM meta WHERE key LIKE 'info.%'").fetchall()
        return {k[len("info."):]: json.loads(v) for k, v in rows}

    @property
    def generation(self) -> int:
        return int(self.get_meta("generation"))

    # --- writes --------------------------------------------------------------------------------
    def insert(
        self,
        vectors: np.ndarray,
        labels: np.ndarray,
        sources: Sequence[str | None],
        dataset: str | None,
        reason: str,
        class_names: dict[int, str],
        db: sqlite3.Connection,
    ) -> np.ndarray:
        """Write a batch inside the caller's transaction ``db``; returns the new ids ``[n]``."""
        start = int(self.get_meta("next_id"))
        ids = np.arange(start, start + len(labels), dtype=np.int64)
        now = time.time()
        for label, name in class_names.items():
            known = db.execute("SELECT name FROM classes WHERE label = ?", (label,)).fetchone()
            if known is not None and known[0] != name:
                raise ValueError(f"label {label} is already called {known[0]!r} in this memory, not {name!r}.")
            db.execute("INSERT OR IGNORE INTO classes VALUES (?, ?)", (label, name))
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        db.executemany(
            "INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?)",
            ((int(i), int(y), s, dataset, now, v.tobytes()) for i, y, s, v in zip(ids, labels, sources, vectors, strict=True)),
        )
        db.executemany(
            "INSERT INTO audit (time, action, sample_id, label, source, reason) VALUES (?, 'add', ?, ?, ?, ?)",
            ((now, int(i), int(y), s, reason) for i, y, s in zip(ids, labels, sources, strict=True)),
        )
        self._set_meta("next_id", start + len(labels))
        self._set_meta("generation", self.generation + 1)
        return ids

    def delete(self, ids: Sequence[int], reason: str, db: sqlite3.Connection) -> None:
        """Delete samples inside the caller's transaction, logging each removal with ``reason``."""
        now = time.time()
        rows = self.rows(ids)
        db.executemany(
            "INSERT INTO audit (time, action, sample_id, label, source, reason) VALUES (?, 'remove', ?, ?, ?, ?)",
            ((now, r["id"], r["label"], r["source"], reason) for r in rows),
        )
        db.executemany("DELETE FROM samples WHERE id = ?", ((int(i),) for i in ids))
        self._set_meta("generation", self.generation + 1)

    # --- reads ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]

    def missing(self, ids: Sequence[int]) -> list[int]:
        """The ``ids`` that are not (or no longer) in the memory."""
        present = set()
        for chunk in _chunks([int(i) for i in ids]):
            q = f"SELECT id FROM samples WHERE id IN ({','.join('?' * len(chunk))})"
            present.update(r[0] for r in self.db.execute(q, chunk))
        return [int(i) for i in ids if int(i) not in present]

    def ids_of_sources(self, sources: Sequence[str]) -> tuple[list[int], list[str]]:
        """Ids stored under ``sources`` and the sources that match nothing."""
        ids, unknown = [], []
        for source in sources:
            found = [r[0] for r in self.db.execute("SELECT id FROM samples WHERE source = ?", (source,))]
            ids += found
            if not found:
                unknown.append(source)
        return ids, unknown

    def rows(self, ids: Sequence[int]) -> list[dict[str, Any]]:
        """Metadata of ``ids`` (without vectors), in the order given."""
        found: dict[int, dict[str, Any]] = {}
        for chunk in _chunks([int(i) for i in ids]):
            q = ("SELECT s.id, s.label, c.name, s.source, s.dataset, s.added_at FROM samples s "
                 f"LEFT JOIN classes c ON c.label = s.label WHERE s.id IN ({','.join('?' * len(chunk))})")
            for r in self.db.execute(q, chunk):
                found[r[0]] = dict(zip(("id", "label", "class_name", "source", "dataset", "added_at"), r, strict=True))
        return [found[int(i)] for i in ids if int(i) in found]

    def class_names(self) -> dict[int, str]:
        return dict(self.db.execute("SELECT label, name FROM classes").fetchall())

    def all_samples(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every stored ``(ids [N], labels [N], vectors [N, dim])``, by id."""
        rows = self.db.execute("SELECT id, label, vector FROM samples ORDER BY id").fetchall()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        labels = np.array([r[1] for r in rows], dtype=np.int64)
        vectors = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32).reshape(len(rows), self.dim)
        return ids, labels, vectors

    def audit_log(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Audit rows, newest last (``limit``: only the last ``limit``)."""
        q = "SELECT seq, time, action, sample_id, label, source, reason FROM audit ORDER BY seq"
        rows = self.db.execute(q).fetchall()
        rows = rows[-limit:] if limit else rows
        keys = ("seq", "time", "action", "sample_id", "label", "source", "reason")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def backup_to(self, path: Path) -> None:
        """Copy the whole database into ``path`` (SQLite's online backup)."""
        target = sqlite3.connect(str(path))
        try:
            self.db.backup(target)
        finally:
            target.close()

    def close(self) -> None:
        self.db.close()


def _chunks(items: list[int], size: int = 900) -> Iterator[list[int]]:
    """SQLite limits the number of ``?`` parameters per statement."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
