"""ScaNN (Google's approximate search, the library Geirhos et al. used) behind the backend interface.

ScaNN partitions the vectors with a tree, scores the ``leaves_to_search`` closest leaves with
anisotropic product quantisation, and re-orders the best ``reorder`` candidates exactly. Our ids
become ScaNN's string docids; ``add``/``remove`` after the first search use ScaNN's own mutation
(``upsert``/``delete``). Candidates are rescored in float64 and sorted by (score, id) like every
other backend, but nothing bounds what the quantised tree skipped: answers are never certified
(``bound = +inf``, ``exact = False``), so the audit refuses them and classification accepts them.

Unlike IVF here, ScaNN trains its tree and quantiser on the stored vectors themselves (it offers no
way to train elsewhere), so its structure derives from the memory's data until rebuilt.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar

import numpy as np
from scann.scann_ops.py import scann_ops_pybind

from procedural_perception.visual_memory.backends.base import Backend, SearchResult, rescore_sorted

REORDER = 100  # candidates re-scored exactly by ScaNN (its README's 1M-vector example)
AH_DIMS_PER_BLOCK = 2  # product-quantisation block size (ScaNN's recommendation for dot product)
AH_THRESHOLD = 0.2  # anisotropic quantisation threshold (ScaNN's recommendation for unit vectors)
TRAINING_SAMPLE = 100_000  # vectors the tree and quantiser train on (ScaNN's default for the quantiser)


class ScannBackend(Backend):
    """ScaNN tree + asymmetric hashing over ``dim``-d vectors.

    ``leaves``: tree leaves (default ~sqrt(N) at build); ``leaves_to_search``: leaves scored per
    query (default leaves / 20, ScaNN README's 2000 / 100).
    """

    name: ClassVar[str] = "scann"
    claims_exact: ClassVar[bool] = False

    def __init__(self, dim: int, leaves: int | None = None, leaves_to_search: int | None = None,
                 folder: Path | None = None, device: str = "cpu") -> None:
        self.dim = dim
        self.leaves, self.leaves_to_search = leaves, leaves_to_search
        self._rows = np.empty((0, dim), dtype=np.float32)  # stored vectors by slot
        self._slot_ids = np.empty(0, dtype=np.int64)
        self._slot_of: dict[int, int] = {}
        self._searcher = None

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, item: int) -> bool:
        return int(item) in self._slot_of

    @property
    def ids(self) -> np.ndarray:
        return self._slot_ids[: len(self)].copy()

    def vectors(self, ids: np.ndarray | None = None) -> np.ndarray:
        if ids is None:
            return self._rows[: len(self)].copy()
        return self._rows[[self._slot_of[int(i)] for i in np.asarray(ids).reshape(-1)]].copy()

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        vectors, ids = self._check_add(vectors, ids)
        start = len(self)
        self._rows = np.concatenate([self._rows[:start], vectors])
        self._slot_ids = np.concatenate([self._slot_ids[:start], ids])
        self._slot_of.update(zip(ids.tolist(), range(start, start + len(ids)), strict=True))
        if self._searcher is not None:
            self._searcher.upsert([str(i) for i in ids.tolist()], vectors, batch_size=1024)

    def remove(self, ids: np.ndarray) -> None:
        ids = [int(i) for i in np.asarray(ids, dtype=np.int64).reshape(-1)]
        missing = [i for i in ids if i not in self._slot_of]
        if missing:
            raise KeyError(f"ids not in the index: {missing[:20]}")
        for item in ids:  # swap the last slot into the hole
            slot, last = self._slot_of.pop(item), len(self)
            if slot != last:
                self._rows[slot] = self._rows[last]
                moved = int(self._slot_ids[last])
                self._slot_ids[slot], self._slot_of[moved] = moved, slot
        self._rows, self._slot_ids = self._rows[: len(self)], self._slot_ids[: len(self)]
        if self._searcher is not None:
            self._searcher.delete([str(i) for i in ids])

    def build(self) -> None:
        """Train the tree and quantiser on the stored vectors (done by the first search)."""
        n = len(self)
        leaves = self.leaves or max(1, min(n, int(round(math.sqrt(n)))))
        to_search = self.leaves_to_search or max(1, leaves // 20)
        builder = scann_ops_pybind.builder(self._rows[:n], 10, "dot_product")
        builder = builder.tree(num_leaves=leaves, num_leaves_to_search=min(to_search, leaves),
                               training_sample_size=min(n, TRAINING_SAMPLE))
        builder = builder.score_ah(AH_DIMS_PER_BLOCK, anisotropic_quantization_threshold=AH_THRESHOLD)
        self._searcher = builder.reorder(REORDER).build(docids=[str(i) for i in self._slot_ids[:n].tolist()])

    def search(self, queries: np.ndarray, n: int) -> SearchResult:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        self._check_n(n)
        if self._searcher is None:
            self.build()
        docids, _ = self._searcher.search_batched(queries, final_num_neighbors=max(n, REORDER))
        found = np.full((len(queries), max(n, REORDER)), -1, dtype=np.int64)
        for q, row in enumerate(docids):
            found[q, : len(row)] = [int(d) for d in row]
        rows = np.zeros((*found.shape, self.dim), dtype=np.float32)
        present = found >= 0
        rows[present] = self._rows[[self._slot_of[int(i)] for i in found[present]]]
        scores, ids = rescore_sorted(queries, found, rows)
        scores, ids = scores[:, :n], ids[:, :n]
        unknown = np.full(len(queries), np.inf)
        return SearchResult(scores.astype(np.float32), ids, unknown, np.zeros(len(queries), bool), self.name)
