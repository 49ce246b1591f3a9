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
otherwise the index is rebuilt from the stored vectors. A removal deletes the stale snapshot,
so a forgotten vector does not stay on disk in it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
from procedural_perception.visual_memory.privacy import AuditReport, exact_audit
from procedural_perception.visual_memory.store import Store
from procedural_perception.visual_memory.voting import (
    DEFAULT_POWER,
    DEFAULT_TEMPERATURE,
    PAPER_K,
    PAPER_RULE,
    predict,
)

DB_FILE = "memory.sqlite"
INDEX_FILE = "index.faiss"  # the flat backend's snapshot (backends/flat.py)


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
        self.index = self._open_index(backend, backend_options)

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", backend: str | None = None,
             backend_options: dict[str, Any] | None = None) -> VisualMemory:
        return cls(path=path, device=device, backend=backend, backend_options=backend_options)

    # --- persistence -----------------------------------------------------------------------------
    def _open_index(self, name: str | None, options: dict[str, Any] | None) -> Backend:
        rows = self.store.db.execute("SELECT id, label FROM samples ORDER BY id").fetchall()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        self._set_labels(ids, np.array([r[1] for r in rows], dtype=np.int64))
        recorded = self.store.get_meta("backend")
        if name is None and recorded is not None:
            name, options = recorded["name"], {**recorded.get("options", {}), **(options or {})}
        name = name or DEFAULT_BACKEND
        index = make_backend(name, self.dim, device=self.device, folder=self.path, **(options or {}))
        if recorded is None:  # a new memory (or one from before backends): record how to reopen it
            if self.path is not None:
                index.persist(self.path)
            self.store.set_meta("backend", {"name": name, "options": index.options()})
        fresh = self.path is not None and self.store.get_meta("index_generation") == self.store.generation
        if fresh and index.load_snapshot(self.path):
            if np.array_equal(np.sort(index.ids), ids):
                return index
            # a snapshot with other ids: start over from the database
            index = make_backend(name, self.dim, device=self.device, folder=self.path, **(options or {}))
        index.reconcile(ids, lambda: self._stored_vectors())
        return index

    def _stored_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        stored_ids, _, vectors = self.store.all_samples()
        return stored_ids, vectors

    def save(self, path: str | Path | None = None) -> Path:
        """Write the memory to ``path`` (default: its own folder) atomically; returns the folder.

        The database is already durable after every add/remove; saving also writes the index
        snapshot so the next open skips rebuilding the index.
        """
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("This memory lives in RAM: give save() a folder.")
        target.mkdir(parents=True, exist_ok=True)
        generation = self.store.generation
        if self.path is None or target.resolve() != self.path.resolve():
            with atomic_path(target / DB_FILE) as tmp:
                self.store.backup_to(tmp)
                copy = Store(tmp)
                copy.set_meta("index_generation", generation)
                copy.close()
        if self.path is None or target.resolve() != self.path.resolve():
            self.index.persist(target)
        self.index.write_snapshot(target)
        if self.path is not None and target.resolve() == self.path.resolve():
            self.store.set_meta("index_generation", generation)
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
    ) -> np.ndarray:
        """Add ``embeddings [N, D]`` with ``labels [N]``; returns their new stable ids ``[N]``.

        ``class_names``: names indexed by label (a dataset's ``classes``) or a ``{label: name}``
        mapping; ``sources``: one path/URI per sample (used by ``forget`` and attribution).
        The whole batch lands, or (on any error or crash) none of it.
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
                ids = self.store.insert(vectors, labels, sources, dataset, reason, names, db)
                self.index.add(vectors, ids)
                added = ids
        except BaseException:
            if added is not None:  # the commit itself failed after the index took the rows
                self.index.remove(added)
            raise
        self._set_labels(ids, labels)
        return ids

    def remove(self, ids: Sequence[int] | np.ndarray | torch.Tensor, reason: str) -> int:
        """Remove ``ids`` for ``reason`` (recorded in the audit log); returns how many.

        Unknown ids raise ``KeyError`` listing them, and nothing is removed.
        """
        ids = [int(i) for i in np.asarray(torch.as_tensor(ids).cpu()).reshape(-1)]
        if not reason:
            raise ValueError("Give a reason for the removal; it is recorded in the audit log.")
        if len(set(ids)) != len(ids):
            raise ValueError("ids to remove contain duplicates")
        missing = self.store.missing(ids)
        if missing:
            raise KeyError(f"Unknown ids (not in this memory, or already removed): {missing}. Nothing was removed.")
        vectors = self.index.vectors(ids)
        removed = False
        try:
            with self.store.transaction() as db:
                self.store.delete(ids, reason, db)
                self.index.remove(ids)
                removed = True
        except BaseException:
            if removed:  # the commit failed: put the rows back so index and database agree
                self.index.add(vectors, ids)
            raise
        self._labels_by_id[ids] = -1
        if self.path is not None:
            for name in self.index.snapshot_files:  # they still hold the removed vectors
                (self.path / name).unlink(missing_ok=True)
        return len(ids)

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
        and ``ids [Q, k]`` (int64), ordered by similarity descending then id ascending."""
        result = self.search(embeddings, k)
        return torch.from_numpy(result.scores), torch.from_numpy(result.ids)

    def search(self, embeddings: torch.Tensor | np.ndarray, k: int) -> SearchResult:
        """Top-``k`` of ``embeddings [Q, D]`` with the backend's certificate (``result.exact [Q]``:
        the row provably equals an exhaustive search; ``result.bound [Q]``: nothing left out scores
        higher). :meth:`query` returns the same neighbours as tensors."""
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


def _normalised(embeddings: torch.Tensor | np.ndarray, dim: int) -> np.ndarray:
    """``[N, dim]`` float32 rows scaled to unit length (cosine similarity = inner product)."""
    x = torch.as_tensor(embeddings).detach().to("cpu", torch.float32)
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"expected embeddings of shape [N, {dim}], got {list(x.shape)}")
    return torch.nn.functional.normalize(x, dim=1).numpy()


def _gather_weights(sample_weights: np.ndarray | None, ids: torch.Tensor) -> torch.Tensor | None:
    return None if sample_weights is None else torch.as_tensor(np.asarray(sample_weights))[ids]
