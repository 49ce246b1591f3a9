"""SQLite store of a visual memory: samples (vector, label, source, dataset, time), class names,
an append-only audit log, the erasure list and a generation counter.

The database is the memory's source of truth. Each ``add`` or ``remove`` is one transaction that
writes the samples *and* their audit rows and bumps the generation, so a process killed in the
middle leaves either the whole batch or none of it; one process writes at a time (``BEGIN
IMMEDIATE``; others wait up to ``BUSY_TIMEOUT_S``). Vectors live in the database too, so the faiss
index can always be rebuilt from it; a saved index snapshot is only trusted when it carries the
database's current generation.

Forgetting leaves no trace (REFERENCE.md section 11): ``secure_delete`` zeroes the removed rows in
the main file, :meth:`Store.checkpoint` copies the write-ahead log into it and truncates the log
(``wal_checkpoint(TRUNCATE)``), and the audit log and erasure list never hold a source, only its
keyed hash (HMAC-SHA256 under a random per-memory key kept in ``meta``): "was this file erased?" is
answered by hashing it, while the log alone does not reveal which files were stored.

Tables::

    samples(id INTEGER PRIMARY KEY, label, source, dataset, added_at, vector BLOB float32[dim])
    classes(label INTEGER PRIMARY KEY, name)      -- a name leaves with the last sample of its label
    audit(seq, time, action 'add'|'add_erased'|'remove', sample_id, label, source_hash, reason)
                                                  -- no UPDATE/DELETE
    erased(source_hash PRIMARY KEY, time)         -- sources removed once: refused on re-add
    meta(key PRIMARY KEY, value)  -- dim, generation, next_id, hmac_key, info.* (encoder, image size)
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import secrets
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

# How long a writer waits for another process's write transaction before giving up. Batches of a
# build commit in well under a second; a minute covers a slow disk without hanging forever.
BUSY_TIMEOUT_S = 60.0
# wal_checkpoint(TRUNCATE) needs a moment without readers. Each try waits at most CHECKPOINT_WAIT_MS
# for them (with the full busy timeout, a steady stream of readers held a removal for a minute);
# after CHECKPOINT_TRIES a removal returns and the log keeps old pages until the next checkpoint.
CHECKPOINT_TRIES, CHECKPOINT_WAIT_MS = 10, 100

SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY, label INTEGER NOT NULL, source TEXT, dataset TEXT,
    added_at REAL NOT NULL, vector BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS samples_source ON samples(source);
CREATE TABLE IF NOT EXISTS classes (label INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, action TEXT NOT NULL,
    sample_id INTEGER NOT NULL, label INTEGER, source_hash TEXT, reason TEXT);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TABLE IF NOT EXISTS erased (source_hash TEXT PRIMARY KEY, time REAL NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
ADD_ACTIONS = ("add", "add_erased")


class DamagedMemoryError(ValueError):
    """The SQLite file of a memory cannot be read; nothing was written to it."""


def recovery_hint(path: Path | None) -> str:
    """The commands that get a usable memory back from a damaged file (shown in error messages)."""
    return (f"Nothing was written to it. Recover the readable rows with `sqlite3 {path} .recover | sqlite3 "
            f"{path}.recovered` (then move the recovered file into a new memory folder as memory.sqlite and run "
            f"`make memory ARGS=\"check <that folder>\"`), or rebuild with `make memory ARGS=\"build ... --out "
            f"<new folder>\"`.")


# SQLite's result codes for a file whose pages cannot be read (a torn write, a bit flip, a zeroed page).
DAMAGE_CODES = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def damaged(path: Path | None, err: sqlite3.DatabaseError) -> DamagedMemoryError:
    """The clear error for a damaged memory file (the raw SQLite message kept in parentheses)."""
    return DamagedMemoryError(f"{path} is damaged or not a visual memory database ({err}). " + recovery_hint(path))


def _reports_damage(method):
    """Turn SQLite's "disk image is malformed" raised *after* opening (damage in a page the open did not
    read) into :class:`DamagedMemoryError`; busy, locked and constraint errors pass through unchanged."""
    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as err:
            if self.path is None or getattr(err, "sqlite_errorcode", None) not in DAMAGE_CODES:
                raise
            raise damaged(self.path, err) from err
    return guarded


class Store:
    """Metadata, vectors and audit log of one memory. ``path=None`` keeps everything in RAM."""

    def __init__(self, path: str | Path | None, dim: int | None = None) -> None:
        self.path = None if path is None else Path(path)
        try:
            self._open(dim)
        except sqlite3.DatabaseError as err:
            if self.path is None:
                raise
            self.db.close()
            raise damaged(self.path, err) from err

    def _open(self, dim: int | None) -> None:
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT) below.
        self.db = sqlite3.connect(":memory:" if self.path is None else str(self.path), isolation_level=None,
                                  timeout=BUSY_TIMEOUT_S)
        self.db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # unreadable files fail here, unwritten
        self.db.execute("PRAGMA secure_delete = ON")
        self.db.execute("PRAGMA journal_mode = " + ("MEMORY" if self.path is None else "WAL"))
        self.db.execute("PRAGMA synchronous = FULL")
        self.db.executescript(SCHEMA)  # statement by statement; only missing tables are written
        stored = self.get_meta("dim")
        if stored is None:
            if dim is None:
                raise ValueError(f"{self.path} is not a visual memory yet: give dim to create one.")
            with self.transaction():
                if self.get_meta("dim") is None:  # another process may have created it meanwhile
                    self._set_meta("dim", dim)
                    self._set_meta("generation", 0)
                    self._set_meta("next_id", 0)
            stored = self.get_meta("dim")
        if dim is not None and int(stored) != dim:
            raise ValueError(f"{self.path} holds {stored}-d vectors, not {dim}-d: use another folder or the right encoder.")
        self.dim = int(stored)
        if self.get_meta("hmac_key") is None:  # memories made before keyed hashes: migrate once
            self._migrate_to_keyed_hashes()
        self._key = bytes.fromhex(self.get_meta("hmac_key"))

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: takes the database's single write lock now (waits for other writers)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every read inside sees one committed state (inside a write: that one)."""
        if self.db.in_transaction:
            yield self.db
            return
        self.db.execute("BEGIN")
        try:
            yield self.db
        finally:
            self.db.execute("COMMIT")

    def _migrate_to_keyed_hashes(self) -> None:
        """Older memories logged sources in clear: replace them by keyed hashes (and list the erased)."""
        with self.transaction() as db:
            if self.get_meta("hmac_key") is not None:
                return
            self._set_meta("hmac_key", secrets.token_hex(32))
            self._key = bytes.fromhex(self.get_meta("hmac_key"))
            columns = [r[1] for r in db.execute("PRAGMA table_info(audit)")]
            if "source" in columns:
                db.execute("DROP TRIGGER audit_no_update")
                db.execute("ALTER TABLE audit RENAME COLUMN source TO source_hash")
                db.create_function("keyed_hash", 1, self.keyed_hash, deterministic=True)
                db.execute("UPDATE audit SET source_hash = keyed_hash(source_hash) WHERE source_hash IS NOT NULL")
                db.execute("CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit "
                           "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END")
                db.execute("INSERT OR IGNORE INTO erased SELECT source_hash, MAX(time) FROM audit "
                           "WHERE action = 'remove' AND source_hash IS NOT NULL GROUP BY source_hash")
        self.checkpoint()

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

    def keyed_hash(self, source: str | None) -> str | None:
        """HMAC-SHA256 of ``source`` under this memory's key (hex), ``None`` for no source."""
        return None if source is None else hmac.new(self._key, source.encode("utf-8"), hashlib.sha256).hexdigest()

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
        erased_ok: frozenset[str] = frozenset(),
    ) -> np.ndarray:
        """Write a batch inside the caller's transaction ``db``; returns the new ids ``[n]``.

        ``erased_ok``: sources on the erasure list the caller deliberately adds again (logged as
        ``add_erased``)."""
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
            "INSERT INTO audit (time, action, sample_id, label, source_hash, reason) VALUES (?, ?, ?, ?, ?, ?)",
            ((now, "add_erased" if s in erased_ok else "add", int(i), int(y), self.keyed_hash(s), reason)
             for i, y, s in zip(ids, labels, sources, strict=True)),
        )
        self._set_meta("next_id", start + len(labels))
        self._set_meta("generation", self.generation + 1)
        return ids

    def delete(self, ids: Sequence[int], reason: str, db: sqlite3.Connection) -> None:
        """Delete samples inside the caller's transaction, logging each removal with ``reason``;
        their sources go on the erasure list, and a class name whose last sample left goes too."""
        now = time.time()
        rows = self.rows(ids)
        hashes = [self.keyed_hash(r["source"]) for r in rows]
        db.executemany(
            "INSERT INTO audit (time, action, sample_id, label, source_hash, reason) VALUES (?, 'remove', ?, ?, ?, ?)",
            ((now, r["id"], r["label"], h, reason) for r, h in zip(rows, hashes, strict=True)),
        )
        db.executemany("INSERT OR IGNORE INTO erased VALUES (?, ?)", ((h, now) for h in hashes if h is not None))
        db.executemany("DELETE FROM samples WHERE id = ?", ((int(i),) for i in ids))
        for label in {r["label"] for r in rows}:
            db.execute("DELETE FROM classes WHERE label = ? AND NOT EXISTS (SELECT 1 FROM samples WHERE label = ?)",
                       (label, label))
        self._set_meta("generation", self.generation + 1)

    def checkpoint(self) -> bool:
        """Copy the write-ahead log into the main file and truncate it to 0 bytes, so deleted rows
        (zeroed in the main file by ``secure_delete``) leave no copy in ``memory.sqlite-wal``.

        Returns False when readers kept the log busy through every try (the next checkpoint of
        any writer or reader, or ``check``, finishes the job)."""
        if self.path is None:
            return True
        self.db.execute(f"PRAGMA busy_timeout = {CHECKPOINT_WAIT_MS}")
        try:
            for attempt in range(CHECKPOINT_TRIES):
                busy, _, _ = self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                if not busy:
                    return True
                time.sleep(0.01 * (attempt + 1))
            return False
        finally:
            self.db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")

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

    def present_sources(self, sources: Sequence[str | None]) -> set[str]:
        """The ``sources`` already stored (by at least one sample)."""
        found = set()
        for source in {s for s in sources if s is not None}:
            if self.db.execute("SELECT 1 FROM samples WHERE source = ? LIMIT 1", (source,)).fetchone():
                found.add(source)
        return found

    def erased_sources(self, sources: Sequence[str | None]) -> set[str]:
        """The ``sources`` whose keyed hash is on the erasure list."""
        return {s for s in {s for s in sources if s is not None}
                if self.db.execute("SELECT 1 FROM erased WHERE source_hash = ?", (self.keyed_hash(s),)).fetchone()}

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

    def ids_and_labels(self) -> tuple[np.ndarray, np.ndarray]:
        """Every stored ``(ids [N], labels [N])``, by id."""
        rows = self.db.execute("SELECT id, label FROM samples ORDER BY id").fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64), np.array([r[1] for r in rows], dtype=np.int64)

    def vectors_of(self, ids: Sequence[int]) -> np.ndarray:
        """Stored vectors ``[n, dim]`` of ``ids`` (all present), in the order given."""
        found: dict[int, bytes] = {}
        for chunk in _chunks([int(i) for i in ids]):
            q = f"SELECT id, vector FROM samples WHERE id IN ({','.join('?' * len(chunk))})"
            found.update(self.db.execute(q, chunk).fetchall())
        return np.frombuffer(b"".join(found[int(i)] for i in ids), dtype=np.float32).reshape(len(ids), self.dim)

    def all_samples(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every stored ``(ids [N], labels [N], vectors [N, dim])``, by id."""
        rows = self.db.execute("SELECT id, label, vector FROM samples ORDER BY id").fetchall()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        labels = np.array([r[1] for r in rows], dtype=np.int64)
        vectors = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32).reshape(len(rows), self.dim)
        return ids, labels, vectors

    def audit_log(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Audit rows, newest last (``limit``: only the last ``limit``)."""
        q = "SELECT seq, time, action, sample_id, label, source_hash, reason FROM audit ORDER BY seq"
        rows = self.db.execute(q).fetchall()
        rows = rows[-limit:] if limit else rows
        keys = ("seq", "time", "action", "sample_id", "label", "source_hash", "reason")
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


# Every reading or writing method (not the context managers, whose bodies run in the caller).
for _name in ("get_meta", "set_meta", "set_info", "info", "keyed_hash", "insert", "delete", "checkpoint", "__len__",
              "missing", "ids_of_sources", "present_sources", "erased_sources", "rows", "class_names",
              "ids_and_labels", "vectors_of", "all_samples", "audit_log", "backup_to"):
    setattr(Store, _name, _reports_damage(getattr(Store, _name)))


def _chunks(items: list[int], size: int = 900) -> Iterator[list[int]]:
    """SQLite limits the number of ``?`` parameters per statement."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
