"""Integrity check of a memory folder: the vectors, metadata, audit log and index snapshot agree.

Run after a crash, a copy between machines, or whenever in doubt (``make memory ARGS="check
<memory>"``). Checked:

* SQLite's own ``quick_check`` (page structure);
* every vector is ``dim`` finite float32 values, and ``next_id`` is above every stored id;
* the audit log explains the samples: each stored id's latest audit row is an add whose keyed
  source hash matches the stored source, each removed id's latest row is a removal, and every
  removed source is on the erasure list;
* the index snapshot, when it claims the current generation, holds exactly the stored ids and
  vectors.

Repaired (with ``repair=True``): a stale or damaged snapshot is rewritten from the database, index
snapshots a killed save left half-written are deleted, and the write-ahead log is checkpointed.
Problems in the database itself are reported, never "fixed" by deleting rows.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from procedural_perception.visual_memory.backends import DEFAULT_BACKEND, make_backend
from procedural_perception.visual_memory.backends.registry import backend_class
from procedural_perception.visual_memory.memory import DB_FILE, INDEX_FILE, VisualMemory
from procedural_perception.visual_memory.store import ADD_ACTIONS, Store, recovery_hint


@dataclass
class IntegrityReport:
    """Outcome of :func:`check_memory`: ``problems`` left (empty: consistent) and ``repaired`` actions."""

    folder: Path
    samples: int = 0
    generation: int = 0
    problems: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_memory(folder: str | Path, repair: bool = True) -> IntegrityReport:
    """Check (and with ``repair`` fix the derived files of) the memory in ``folder``."""
    folder = Path(folder)
    if not (folder / DB_FILE).exists():
        raise FileNotFoundError(f"No visual memory in {folder} (no {DB_FILE}).")
    store = Store(folder / DB_FILE)
    report = IntegrityReport(folder)
    try:
        try:
            verdict = [r[0] for r in store.db.execute("PRAGMA quick_check").fetchall()]
        except sqlite3.DatabaseError as err:  # a page so damaged that the check itself cannot read it
            verdict = [f"{err}. {recovery_hint(folder / DB_FILE)}"]
        if verdict != ["ok"]:
            report.problems += [f"sqlite: {v}" for v in verdict[:10]]
            return report
        with store.snapshot():
            report.generation = store.generation
            report.samples = len(store)
            report.problems += _sample_problems(store) + _audit_problems(store)
            snapshot_ok = _snapshot_matches(folder, store)
            names = sorted({*backend_class(_recorded(store)["name"]).snapshot_files, INDEX_FILE})
    finally:
        store.close()
    leftovers = sorted(p for name in names for p in folder.glob(f".{name}.*.tmp"))
    if repair and report.ok:
        with VisualMemory.load(folder, device="cpu") as memory:
            if leftovers:
                memory._drop_snapshots()
                report.repaired.append(f"deleted {len(leftovers)} half-written index snapshot(s) of a killed save")
            if not snapshot_ok:
                memory.save()
                report.repaired.append(f"rewrote the stale index snapshot ({', '.join(names)}) from the database")
            wal = folder / f"{DB_FILE}-wal"
            if wal.exists() and wal.stat().st_size and memory.store.checkpoint():
                report.repaired.append("checkpointed the write-ahead log into the database")
    elif leftovers or not snapshot_ok:
        report.problems.append(f"stale index snapshot or leftovers in {folder} (run check with repair)")
    return report


def _sample_problems(store: Store) -> list[str]:
    problems = []
    bad = store.db.execute("SELECT id FROM samples WHERE length(vector) != ?", (4 * store.dim,)).fetchall()
    if bad:
        problems.append(f"{len(bad)} vectors are not {store.dim} float32 values (ids {[r[0] for r in bad[:10]]})")
        return problems
    ids, _, vectors = store.all_samples()
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        problems.append(f"{int((~finite).sum())} vectors hold NaN/Inf (ids {ids[~finite][:10].tolist()})")
    if len(ids) and int(store.get_meta("next_id")) <= int(ids.max()):
        problems.append(f"next_id {store.get_meta('next_id')} is not above the largest id {int(ids.max())}")
    return problems


def _audit_problems(store: Store) -> list[str]:
    latest = dict(store.db.execute(
        "SELECT sample_id, action FROM audit WHERE seq IN (SELECT MAX(seq) FROM audit GROUP BY sample_id)").fetchall())
    stored = dict(store.db.execute("SELECT id, source FROM samples").fetchall())
    problems = []
    unexplained = [i for i in stored if latest.get(i) not in ADD_ACTIONS]
    if unexplained:
        problems.append(f"{len(unexplained)} stored samples have no add as their latest audit row: {unexplained[:10]}")
    lingering = [i for i, action in latest.items() if action == "remove" and i in stored]
    if lingering:
        problems.append(f"{len(lingering)} samples logged as removed are still stored: {lingering[:10]}")
    vanished = [i for i, action in latest.items() if action in ADD_ACTIONS and i not in stored]
    if vanished:
        problems.append(f"{len(vanished)} samples are gone without a removal in the audit log: {vanished[:10]}")
    hashes = dict(store.db.execute(
        f"SELECT sample_id, source_hash FROM audit WHERE action IN {ADD_ACTIONS} AND sample_id IN "
        "(SELECT id FROM samples)").fetchall())
    wrong = [i for i, source in stored.items() if hashes.get(i) != store.keyed_hash(source)]
    if wrong:
        problems.append(f"{len(wrong)} samples' sources do not match the hashes the audit log recorded: {wrong[:10]}")
    unlisted = store.db.execute("SELECT COUNT(*) FROM audit WHERE action = 'remove' AND source_hash IS NOT NULL AND "
                                "source_hash NOT IN (SELECT source_hash FROM erased)").fetchone()[0]
    if unlisted:
        problems.append(f"{unlisted} removed sources are missing from the erasure list")
    return problems


def _recorded(store: Store) -> dict:
    """The backend the memory was built with (memories from before backends: the default)."""
    return store.get_meta("backend") or {"name": DEFAULT_BACKEND, "options": {}}


def _snapshot_matches(folder: Path, store: Store) -> bool:
    """True when there is no snapshot, or it is stale-and-marked-so, or it equals the database.

    A snapshot marked with the current generation must hold exactly the stored rows. The snapshot
    is read by the memory's own backend (backends without snapshot files have nothing to check;
    a persistent engine is reconciled with the database whenever the memory opens)."""
    recorded = _recorded(store)
    files = backend_class(recorded["name"]).snapshot_files
    if not any((folder / name).exists() for name in files):
        return True
    if store.get_meta("index_generation") != store.generation:
        return False  # ignored on open, but rewrite it so the next open is fast
    try:
        index = make_backend(recorded["name"], store.dim, device="cpu", folder=folder, **recorded.get("options", {}))
    except (RuntimeError, ValueError, OSError):
        return False
    try:
        if not index.load_snapshot(folder):
            return False
        ids, _, vectors = store.all_samples()
        if not np.array_equal(np.sort(index.ids), ids):
            return False
        return bool(np.array_equal(index.vectors(ids), vectors))
    except (RuntimeError, ValueError, OSError):
        return False
    finally:
        index.close()
