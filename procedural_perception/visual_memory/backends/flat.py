"""The exact default backend: :class:`~procedural_perception.visual_memory.index.FlatIndex`
(faiss flat inner product, float64 rescoring, CPU or GPU) behind the backend interface.

It searches every vector, so its certificate is trivial: nothing left out scores above the n-th
returned score (ties broken by id), and every answer is exact. The snapshot is the memory
folder's ``index.faiss`` (a standard ``IndexIDMap2(IndexFlatIP)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import faiss
import numpy as np

from procedural_perception.core.atomic import atomic_path
from procedural_perception.visual_memory.backends.base import Backend, SearchResult
from procedural_perception.visual_memory.index import FlatIndex

INDEX_FILE = "index.faiss"


class FlatBackend(Backend):
    """Exhaustive exact search over ``dim``-d vectors; ``device``: ``"auto"``, ``"cpu"`` or ``"gpu"``."""

    name: ClassVar[str] = "flat"
    claims_exact: ClassVar[bool] = True
    snapshot_files: ClassVar[tuple[str, ...]] = (INDEX_FILE,)

    def __init__(self, dim: int, device: str = "auto", folder: Path | None = None) -> None:
        self.dim = dim
        self.device = device
        self.index = FlatIndex(dim, device)

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        self.index.add(vectors, ids)

    def remove(self, ids: np.ndarray) -> None:
        self.index.remove(ids)

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, item: int) -> bool:
        return item in self.index

    @property
    def ids(self) -> np.ndarray:
        return self.index.ids

    def vectors(self, ids: np.ndarray | None = None) -> np.ndarray:
        return self.index.vectors(ids)

    def search(self, queries: np.ndarray, n: int) -> SearchResult:
        scores, ids = self.index.search(queries, n)
        bound = scores[:, -1].astype(np.float64)
        return SearchResult(scores, ids, bound, np.ones(len(scores), dtype=bool), self.name)

    def write_snapshot(self, folder: Path) -> None:
        with atomic_path(Path(folder) / INDEX_FILE) as tmp:
            faiss.write_index(self.index.to_idmap(), str(tmp))

    def load_snapshot(self, folder: Path) -> bool:
        snapshot = Path(folder) / INDEX_FILE
        if not snapshot.exists():
            return False
        self.index = FlatIndex.from_idmap(faiss.read_index(str(snapshot)), self.device)
        return True
