"""VisualMemory: labelled embeddings you can search, vote with, explain, audit and edit.

Knowledge lives here, outside the network: adding a sample teaches a class, removing one is exact
unlearning (every later prediction equals that of a memory built without it). The memory knows
vectors, ids, labels and metadata, nothing about training.

On disk a memory is a folder::

    memory.sqlite   samples (vectors included), class names, audit log   (source of truth)
    index.faiss     snapshot of the faiss index (IndexIDMap2(IndexFlatIP)), written by save()
    ivf_centroids.npy  coarse centroids of an IVF memory (from procedural images, no real data)

The search engine is a backend (:mod:`procedural_perception.visual_memory.backends`): ``flat``
(exact, the default), ``ivf``, ``milvus`` or ``scann``; the memory records which (meta
``backend``), and SQLite stays the system of record every backend is rebuilt or reconciled from.

Every add/remove is one SQLite transaction, so a crash leaves whole batches in or out. The
snapshot is used on open only when it carries the database's generation and the same ids;
otherwise the index is rebuilt from the stored vectors. A removal deletes the stale snapshot
files of the backend (``Backend.snapshot_files``, and any a killed save left half-written) under
the write lock, and checkpoints the write-ahead log, so no file of the folder keeps a forgotten
vector or source (store.py; Milvus's own segment files keep deleted rows until compaction).

Several processes may share one folder (a training callback adding, a ``classify`` service, a
``forget`` request): writes take SQLite's single write lock, and every process re-checks the
database's generation before each query (one indexed read) and, when another process changed it,
applies the committed difference to its backend first (``Backend.add``/``remove``). So a reader never answers from a
half-applied batch, and never returns a sample whose removal had committed when the query began.

Adding is idempotent: a sample whose source is already stored is skipped (``last_add`` counts it),
and a source that was forgotten (its keyed hash is on the erasure list) is refused unless the
caller passes ``allow_erased=True``, which the audit log records as ``add_erased``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from procedural_perception.core.atomic import atomic_path
from procedural_perception.visual_memory.attribution import Attribution, attribute
from procedural_perception.visual_memory.backends import (
    DEFAULT_BACKEND,
    Backend,
    SearchResult,
    make_backend,
    require_exact,
)
from procedural_perception.visual_memory.backends.flat import INDEX_FILE  # the default backend's snapshot
from procedural_perception.visual_memory.privacy import AuditReport, exact_audit
from procedural_perception.visual_memory.store import DamagedMemoryError, Store, recovery_hint
from procedural_perception.visual_memory.voting import (
    DEFAULT_POWER,
    DEFAULT_TEMPERATURE,
    PAPER_K,
    PAPER_RULE,
    predict,
)

DB_FILE = "memory.sqlite"


@dataclass
class AddReport:
    """What one :meth:`VisualMemory.add` did: ids added, sources skipped as already stored (or
    repeated within the batch), sources refused because they were forgotten before."""

    ids: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    present: list[str] = field(default_factory=list)
    erased: list[str] = field(default_factory=list)
    readded_erased: list[str] = field(default_factory=list)


class VisualMemory:
    """A searchable, editable memory of ``dim``-d L2-normalised embeddings with labels.

    ``path``: a folder to persist to (created, or opened when it already holds a memory;
    ``dim`` may then be omitted); ``None`` keeps everything in RAM (``save(path)`` writes it out).
    ``device``: ``"auto"`` searches on GPU when faiss-gpu sees one, ``"cpu"``/``"gpu"`` force it.
    ``backend``: search engine by name (default: the one the memory was built with, else ``flat``);
    ``backend_options``: its options (ivf: ``centroids``, ``nprobe``; milvus: ``uri``, ...).
    A new memory records both; reopening with another backend uses it for this session only.
    """

    def __init__(self, dim: int | None = None, path: str | Path | None = None, device: str = "auto",
                 backend: str | None = None, backend_options: dict[str, Any] | None = None) -> None:
        self.path = None if path is None else Path(path)
        if self.path is not None:
            if self.path.exists() and not self.path.is_dir():
                raise NotADirectoryError(f"{self.path} is a file; a visual memory is a folder.")
            if dim is None and not (self.path / DB_FILE).exists():
                raise FileNotFoundError(f"No visual memory in {self.path} (no {DB_FILE}); build one first.")
            self.path.mkdir(parents=True, exist_ok=True)
        self.store = Store(None if self.path is None else self.path / DB_FILE, dim)
        self.dim = self.store.dim
        self.device = device
        self._labels_by_id = np.empty(0, dtype=np.int64)  # dense: ids are never reused
        self.last_add = AddReport()
        try:
            with self.store.snapshot():
                self._generation = self.store.generation
                self.index = self._open_index(backend, backend_options)
        except sqlite3.DatabaseError as err:  # pages past the first are damaged
            self.store.close()
            file = self.store.path
            raise DamagedMemoryError(f"{file} is damaged ({err}). " + recovery_hint(file)) from err
        if self.store.get_meta("backend") is None:  # a new memory (or one from before backends)
            self._record_backend()

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", backend: str | None = None,
             backend_options: dict[str, Any] | None = None) -> VisualMemory:
        return cls(path=path, device=device, backend=backend, backend_options=backend_options)

    # --- persistence -----------------------------------------------------------------------------
    def _open_index(self, name: str | None, options: dict[str, Any] | None) -> Backend:
        """The backend holding the stored samples: its snapshot when current, else rebuilt (or, for
        a persistent engine, reconciled) from the database. Call inside a store snapshot."""
        ids, labels = self.store.ids_and_labels()
        self._set_labels(ids, labels)
        recorded = self.store.get_meta("backend")
        if name is None and recorded is not None:
            name, options = recorded["name"], {**recorded.get("options", {}), **(options or {})}
        name = name or DEFAULT_BACKEND
        index = make_backend(name, self.dim, device=self.device, folder=self.path, **(options or {}))
        fresh = self.path is not None and self.store.get_meta("index_generation") == self.store.generation
        if fresh and self._load_snapshot(index):
            if np.array_equal(np.sort(index.ids), ids):
                return index
            # a snapshot with other ids: start over from the database
            index = make_backend(name, self.dim, device=self.device, folder=self.path, **(options or {}))
        index.reconcile(ids, lambda: self._stored_vectors())
        return index

    def _stored_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        stored_ids, _, vectors = self.store.all_samples()
        return stored_ids, vectors

    def _load_snapshot(self, index: Backend) -> bool:
        """Fill ``index`` from its snapshot; a damaged snapshot is only a cache (``False``: rebuild)."""
        try:
            return index.load_snapshot(self.path)
        except (RuntimeError, ValueError, OSError):
            return False

    def _record_backend(self) -> None:
        """Record how to reopen this memory's backend (once; another process may have done it)."""
        if self.path is not None:
            self.index.persist(self.path)
        with self.store.transaction():
            if self.store.get_meta("backend") is None:
                self.store._set_meta("backend", {"name": self.index.name, "options": self.index.options()})

    def save(self, path: str | Path | None = None) -> Path:
        """Write the memory to ``path`` (default: its own folder) atomically; returns the folder.

        The database is already durable after every add/remove; saving also writes the index
        snapshot so the next open skips rebuilding the index.
        """
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("This memory lives in RAM: give save() a folder.")
        target.mkdir(parents=True, exist_ok=True)
        if self.path is not None and target.resolve() == self.path.resolve():
            # Under the write lock: no removal can commit between syncing and writing, so the
            # snapshot never brings back a vector another process just forgot.
            with self.store.transaction():
                self._sync()
                self.index.write_snapshot(target)
                self.store._set_meta("index_generation", self.store.generation)
            return target
        self.refresh()
        generation = self._generation  # the index's state; a later commit makes the copy rebuild it
        with atomic_path(target / DB_FILE) as tmp:
            self.store.backup_to(tmp)
            copy = Store(tmp)
            copy.set_meta("index_generation", generation)
            copy.close()
        self.index.persist(target)
        self.index.write_snapshot(target)
        return target

    def close(self) -> None:
        self.index.close()
        self.store.close()

    def __enter__(self) -> VisualMemory:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- editing ---------------------------------------------------------------------------------
    def add(
        self,
        embeddings: torch.Tensor | np.ndarray,
        labels: torch.Tensor | np.ndarray | Sequence[int],
        class_names: Sequence[str] | Mapping[int, str] | None = None,
        sources: Sequence[str | None] | None = None,
        dataset: str | None = None,
        reason: str = "added",
        allow_erased: bool = False,
    ) -> np.ndarray:
        """Add ``embeddings [N, D]`` with ``labels [N]``; returns the new stable ids ``[n <= N]``.

        ``class_names``: names indexed by label (a dataset's ``classes``) or a ``{label: name}``
        mapping; ``sources``: one path/URI per sample (used by ``forget`` and attribution).
        Samples whose source is already stored are skipped; forgotten sources are refused unless
        ``allow_erased`` (``last_add`` lists both). The whole batch lands, or (on any error or
        crash) none of it.
        """
        vectors = _normalised(embeddings, self.dim)
        labels = np.asarray(torch.as_tensor(labels).cpu(), dtype=np.int64).reshape(-1)
        if labels.shape[0] != vectors.shape[0]:
            raise ValueError(f"{vectors.shape[0]} embeddings but {labels.shape[0]} labels")
        if len(labels) and labels.min() < 0:
            raise ValueError("labels must be non-negative class indices")
        sources = [None] * len(labels) if sources is None else [None if s is None else str(s) for s in sources]
        if len(sources) != len(labels):
            raise ValueError(f"{len(labels)} samples but {len(sources)} sources")
        names = dict(class_names) if isinstance(class_names, Mapping) else dict(enumerate(class_names or []))
        added = None
        try:
            with self.store.transaction() as db:
                self._sync()
                keep, report = self._admissible(sources, allow_erased)
                ids = self.store.insert(vectors[keep], labels[keep], [sources[i] for i in keep], dataset, reason, names,
                                        db, frozenset(report.readded_erased))
                self.index.add(vectors[keep], ids)
                added = ids
                self._generation = self.store.generation
        except BaseException:
            if added is not None:  # the commit itself failed after the index took the rows
                self.index.remove(added)
                self._generation = -1  # re-read from the database at the next use
            raise
        self._set_labels(ids, labels[keep])
        report.ids = ids
        self.last_add = report
        return ids

    def _admissible(self, sources: list[str | None], allow_erased: bool) -> tuple[list[int], AddReport]:
        """Positions of the batch to store: new sources (first occurrence) and, with
        ``allow_erased``, forgotten ones; the report lists what was skipped or refused."""
        present = self.store.present_sources(sources)
        erased = self.store.erased_sources(sources) - present
        report, keep, seen = AddReport(), [], set()
        for i, source in enumerate(sources):
            if source is not None and (source in present or source in seen):
                report.present.append(source)
            elif source in erased and not allow_erased:
                report.erased.append(source)
            else:
                keep.append(i)
                if source in erased:
                    report.readded_erased.append(source)
            if source is not None:
                seen.add(source)
        return keep, report

    def remove(self, ids: Sequence[int] | np.ndarray | torch.Tensor, reason: str) -> int:
        """Remove ``ids`` for ``reason`` (recorded in the audit log); returns how many.

        Unknown ids raise ``KeyError`` listing them, and nothing is removed. After the commit the
        write-ahead log is checkpointed, so no file of the folder keeps the removed rows.
        """
        ids = [int(i) for i in np.asarray(torch.as_tensor(ids).cpu()).reshape(-1)]
        if not reason:
            raise ValueError("Give a reason for the removal; it is recorded in the audit log.")
        if len(set(ids)) != len(ids):
            raise ValueError("ids to remove contain duplicates")
        removed = None
        try:
            with self.store.transaction() as db:
                self._sync()
                missing = self.store.missing(ids)
                if missing:
                    raise KeyError(f"Unknown ids (not in this memory, or already removed): {missing}. Nothing was removed.")
                vectors = self.index.vectors(ids)
                self.store.delete(ids, reason, db)
                self.index.remove(ids)
                removed = ids
                self._generation = self.store.generation
                self._drop_snapshots()
        except BaseException:
            if removed is not None:  # the commit failed: put the rows back so index and database agree
                self.index.add(vectors, removed)
                self._generation = -1
            raise
        self._labels_by_id[ids] = -1
        self.store.checkpoint()
        return len(ids)

    def _drop_snapshots(self) -> None:
        """Delete the snapshot files (and any a killed save left half-written): they hold vectors.

        Besides this backend's own, the flat backend's ``index.faiss`` goes too: a session that
        reopened the memory with the default backend may have saved one."""
        if self.path is not None:
            for name in snapshot_files(self.index):
                (self.path / name).unlink(missing_ok=True)
                for leftover in self.path.glob(f".{name}.*.tmp"):
                    leftover.unlink(missing_ok=True)

    def _sync(self) -> None:
        """Bring the index up to the database's committed state when another process changed it
        (call inside a store transaction or snapshot). Cost: one meta read when nothing changed."""
        generation = self.store.generation
        if generation == self._generation:
            return
        ids, labels = self.store.ids_and_labels()
        indexed = self.index.ids
        gone = np.setdiff1d(indexed, ids)
        if len(gone):
            self.index.remove(gone)
            self._labels_by_id[gone] = -1
        new = np.setdiff1d(ids, indexed)
        if len(new):
            self.index.add(self.store.vectors_of(new.tolist()), new)
        self._set_labels(ids, labels)
        self._generation = generation

    def refresh(self) -> None:
        """Apply what other processes committed since this object last looked (see module doc)."""
        with self.store.snapshot():
            self._sync()

    def forget_sources(self, sources: Sequence[str], reason: str) -> list[int]:
        """Remove every sample stored under ``sources``; unknown sources raise, removing nothing."""
        ids, unknown = self.store.ids_of_sources(sources)
        if unknown:
            raise KeyError(f"Unknown sources (nothing stored under them): {unknown}. Nothing was removed.")
        self.remove(ids, reason)
        return ids

    # --- reading ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.index)

    @property
    def ids(self) -> np.ndarray:
        """Ids currently stored, ascending."""
        return np.sort(self.index.ids)

    @property
    def num_classes(self) -> int:
        names = self.store.class_names()
        return max([*names.keys(), int(self._labels_by_id.max(initial=-1))], default=-1) + 1

    def class_names(self) -> dict[int, str]:
        return self.store.class_names()

    def labels_of(self, ids: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Labels of ``ids`` (any shape); ``-1`` for ids not in the memory."""
        ids = torch.as_tensor(ids, dtype=torch.long)
        table = torch.from_numpy(self._labels_by_id)
        inside = (ids >= 0) & (ids < len(table))
        return torch.where(inside, table[ids.clamp(0, max(len(table) - 1, 0))], -1) if len(table) else torch.full_like(ids, -1)

    def metadata(self, ids: Sequence[int]) -> list[dict[str, Any]]:
        """Stored rows (id, label, class_name, source, dataset, added_at) of ``ids``."""
        return self.store.rows([int(i) for i in ids])

    def audit_log(self, limit: int | None = None) -> list[dict[str, Any]]:
        return self.store.audit_log(limit)

    def set_info(self, **info: Any) -> None:
        """Record how the memory was built (encoder spec, image size, ...)."""
        self.store.set_info(**info)

    def info(self) -> dict[str, Any]:
        return self.store.info()

    # --- using it --------------------------------------------------------------------------------
    def query(self, embeddings: torch.Tensor | np.ndarray, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` neighbours of ``embeddings [Q, D]``: ``similarities [Q, k]`` (cosine, float32)
        and ``ids [Q, k]`` (int64), ordered by similarity descending then id ascending. Answers
        reflect every add/remove committed (by any process) before the call."""
        result = self.search(embeddings, k)
        return torch.from_numpy(result.scores), torch.from_numpy(result.ids)

    def search(self, embeddings: torch.Tensor | np.ndarray, k: int) -> SearchResult:
        """Top-``k`` of ``embeddings [Q, D]`` with the backend's certificate (``result.exact [Q]``:
        the row provably equals an exhaustive search; ``result.bound [Q]``: nothing left out scores
        higher). :meth:`query` returns the same neighbours as tensors. Like :meth:`query`, it first
        applies what other processes committed (:meth:`refresh`)."""
        self.refresh()
        return self.index.search(_normalised(embeddings, self.dim), k)

    def classify(
        self,
        embeddings: torch.Tensor | np.ndarray,
        k: int = PAPER_K,
        rule: str = PAPER_RULE,
        temperature: float = DEFAULT_TEMPERATURE,
        power: float = DEFAULT_POWER,
        sample_weights: np.ndarray | None = None,
    ) -> torch.Tensor:
        """Predicted labels ``[Q]`` of ``embeddings [Q, D]`` by ``rule`` over the top ``k``.

        ``sample_weights``: optional per-id vote factor, indexed by id (soft pruning).
        """
        sims, ids = self.query(embeddings, k)
        return predict(sims, self.labels_of(ids), self.num_classes, rule, k, temperature, power,
                       _gather_weights(sample_weights, ids))

    def attribute(
        self,
        embedding: torch.Tensor | np.ndarray,
        k: int = PAPER_K,
        rule: str = PAPER_RULE,
        temperature: float = DEFAULT_TEMPERATURE,
        power: float = DEFAULT_POWER,
        sample_weights: np.ndarray | None = None,
    ) -> Attribution:
        """The prediction for one ``embedding [D]`` and the neighbours (with metadata) behind it."""
        sims, ids = self.query(torch.as_tensor(embedding).reshape(1, -1), k)
        weights = _gather_weights(sample_weights, ids)
        result = attribute(sims[0], ids[0], self.labels_of(ids[0]), self.num_classes, rule, temperature, power,
                           None if weights is None else weights[0])
        meta = {m["id"]: m for m in self.metadata(ids[0].tolist())}
        for n in result.neighbours:
            row = meta.get(n["id"], {})
            n.update(class_name=row.get("class_name"), source=row.get("source"), dataset=row.get("dataset"))
        return result

    def audit(
        self,
        query_embeddings: torch.Tensor | np.ndarray,
        k: int = PAPER_K,
        rule: str = PAPER_RULE,
        temperature: float = DEFAULT_TEMPERATURE,
        power: float = DEFAULT_POWER,
    ) -> AuditReport:
        """Exact privacy audit against ``query_embeddings [Q, D]`` (see :mod:`procedural_perception.visual_memory.privacy`)."""
        self.refresh()
        width = min(k + 1, len(self))
        result = require_exact(self.search(query_embeddings, width), "The privacy audit")
        sims, ids = torch.from_numpy(result.scores), torch.from_numpy(result.ids)
        return exact_audit(sims, ids, self.labels_of(ids), self.num_classes, k, rule, len(self), temperature, power)

    def _set_labels(self, ids: np.ndarray, labels: np.ndarray) -> None:
        if len(ids) == 0:
            return
        size = int(ids.max()) + 1
        if size > len(self._labels_by_id):
            grown = np.full(max(size, 2 * len(self._labels_by_id)), -1, dtype=np.int64)
            grown[: len(self._labels_by_id)] = self._labels_by_id
            self._labels_by_id = grown
        self._labels_by_id[ids] = labels


def snapshot_files(index: Backend) -> list[str]:
    """Names of the files in a memory folder that may hold vectors outside the database."""
    return sorted({*index.snapshot_files, INDEX_FILE})


def _normalised(embeddings: torch.Tensor | np.ndarray, dim: int) -> np.ndarray:
    """``[N, dim]`` float32 rows scaled to unit length (cosine similarity = inner product)."""
    x = torch.as_tensor(embeddings).detach().to("cpu", torch.float32)
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"expected embeddings of shape [N, {dim}], got {list(x.shape)}")
    return torch.nn.functional.normalize(x, dim=1).numpy()


def _gather_weights(sample_weights: np.ndarray | None, ids: torch.Tensor) -> torch.Tensor | None:
    return None if sample_weights is None else torch.as_tensor(np.asarray(sample_weights))[ids]
