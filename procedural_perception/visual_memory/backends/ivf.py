"""Approximate search on one machine: faiss IVF-Flat over fixed coarse centroids, exactly re-ranked.

Vectors are grouped into ``nlist`` lists, one per coarse centroid (the centroid of highest inner
product); a query scans only the ``nprobe`` lists whose centroids score highest. Within the scanned
lists the answer is exact: faiss proposes candidates, they are rescored in float64 from the stored
vectors and sorted by (score descending, id ascending), fetching deeper when the n-th is within
float32 error of what faiss left out (as :mod:`procedural_perception.visual_memory.index` does).
So an answer depends only on the centroids and on *which* vectors the scanned lists hold, never
on insertion order: after removing a sample, every answer equals an index rebuilt without it on
the same centroids.

Certificate. A vector ``x`` in list ``l`` scores ``q.x = q.c_l + q.(x - c_l) <= q.c_l + r_l`` for
a unit query, where ``r_l`` is the largest ``|x - c_l|`` in the list. The bound on everything not
returned is the maximum of that over the unscanned lists; when the n-th score beats it, the answer
is exact. (Radii are raised on add and kept on remove, so they stay upper bounds.) In 384-d the
radii are large, so most answers are uncertified unless ``nprobe`` is close to ``nlist``.

Removal is ``remove_ids`` through a hash-table direct map (``DirectMap.Hashtable``): it finds the
vector's list in O(1) and swaps the list's last entry into the hole, instead of scanning every list.

The centroids come from :func:`procedural_perception.visual_memory.backends.centroids.procedural_centroids`:
embeddings of procedural images, so the index structure holds nothing derived from real data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import faiss
import numpy as np

from procedural_perception.visual_memory.backends.base import (
    Backend,
    KnownIds,
    SearchResult,
    float32_error,
    rescore_sorted,
)

CENTROIDS_FILE = "ivf_centroids.npy"
DEFAULT_NPROBE = 8  # lists scanned per query; recall/speed trade-off (benchmarks/memory.py)
TIE_MARGIN = 8  # extra candidates per query so the n-th is usually certain in the first pass


class IVFBackend(KnownIds, Backend):
    """IVF-Flat over ``centroids [nlist, dim]`` (unit rows); ``nprobe`` lists scanned per query.

    ``centroids``: an array, or a ``.npy`` path (relative paths resolve inside ``folder``).
    ``provenance``: how the centroids were made (recorded in the memory's metadata).
    ``device``: accepted for a uniform factory signature; IVF searches on the CPU.
    """

    name: ClassVar[str] = "ivf"
    claims_exact: ClassVar[bool] = False

    def __init__(self, dim: int, centroids: np.ndarray | str | Path, nprobe: int = DEFAULT_NPROBE,
                 provenance: dict[str, Any] | None = None, folder: str | Path | None = None,
                 device: str = "cpu") -> None:
        if isinstance(centroids, (str, Path)):
            path = Path(centroids) if folder is None or Path(centroids).is_absolute() else Path(folder) / centroids
            if not path.exists():
                raise FileNotFoundError(f"IVF centroids {path} are missing; the memory cannot open its IVF index. "
                                        "Reopen it with backend='flat' (the vectors are in memory.sqlite).")
            centroids = np.load(path)
        centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        if centroids.ndim != 2 or centroids.shape[1] != dim or len(centroids) < 1:
            raise ValueError(f"centroids must have shape [nlist, {dim}], got {list(centroids.shape)}")
        if not 1 <= nprobe:
            raise ValueError(f"nprobe must be >= 1, got {nprobe}")
        self.dim = dim
        self.centroids = centroids
        self.nprobe = min(nprobe, len(centroids))
        self.provenance = dict(provenance or {})
        self.quantizer = faiss.IndexFlatIP(dim)
        self.quantizer.add(centroids)
        self.ivf = faiss.IndexIVFFlat(self.quantizer, dim, len(centroids), faiss.METRIC_INNER_PRODUCT)
        self.ivf.is_trained = True  # the centroids are given, not trained on the stored vectors
        self.ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
        self.radius = np.full(len(centroids), -np.inf)  # [nlist] bound on |x - c| in each list
        self._ids: set[int] = set()

    @property
    def nlist(self) -> int:
        return len(self.centroids)

    def options(self) -> dict[str, Any]:
        """What reopening needs (the centroids are saved beside the memory as ``CENTROIDS_FILE``)."""
        return {"centroids": CENTROIDS_FILE, "nprobe": self.nprobe, "provenance": self.provenance}

    def persist(self, folder: Path) -> None:
        """Save the centroids into the memory folder (they hold no real data)."""
        from procedural_perception.core.atomic import atomic_path

        with atomic_path(Path(folder) / CENTROIDS_FILE) as tmp, open(tmp, "wb") as f:
            np.save(f, self.centroids)

    # --- editing ---------------------------------------------------------------------------------
    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        vectors, ids = self._check_add(vectors, ids)
        if not len(ids):
            return
        _, lists = self.quantizer.search(vectors, 1)
        lists = lists[:, 0]
        gap = np.linalg.norm(vectors.astype(np.float64) - self.centroids[lists].astype(np.float64), axis=1)
        np.maximum.at(self.radius, lists, gap)
        self.ivf.add_core(len(ids), faiss.swig_ptr(vectors), faiss.swig_ptr(ids), faiss.swig_ptr(lists))
        self._ids.update(ids.tolist())

    def remove(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        missing = [int(i) for i in ids if int(i) not in self._ids]
        if missing:
            raise KeyError(f"ids not in the index: {missing[:20]}")
        self.ivf.remove_ids(faiss.IDSelectorArray(len(ids), faiss.swig_ptr(ids)))
        self._ids.difference_update(ids.tolist())

    # --- reading ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.ivf.ntotal

    def vectors(self, ids: np.ndarray | None = None) -> np.ndarray:
        ids = self.ids if ids is None else np.asarray(ids, dtype=np.int64).reshape(-1)
        if not len(ids):
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.ivf.reconstruct_batch(ids)

    def search(self, queries: np.ndarray, n: int, chunk: int = 256) -> SearchResult:
        """Exact top-``n`` within the ``nprobe`` best lists (more for a query whose lists hold
        fewer than ``n`` vectors), and the bound on all other lists. ``chunk``: queries per pass."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        self._check_n(n)
        parts = [self._search_part(queries[s : s + chunk], n) for s in range(0, len(queries), chunk)]
        scores, ids, outside = (np.concatenate([p[j] for p in parts]) for j in range(3))
        slack = float32_error(self.dim)
        exact = outside + slack < scores[:, -1]
        bound = np.maximum(outside, scores[:, -1])
        return SearchResult(scores.astype(np.float32), ids, bound, exact, self.name)

    def _search_part(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        scores = np.empty((len(queries), n))
        ids = np.empty((len(queries), n), dtype=np.int64)
        outside = np.empty(len(queries))
        rows, nprobe = np.arange(len(queries)), self.nprobe
        while len(rows):
            probe_scores, probes = self.quantizer.search(queries[rows], nprobe)
            s, i = self._exact_in_lists(queries[rows], probes, probe_scores, n)
            done = (i[:, -1] >= 0) | (nprobe >= self.nlist)  # n found, or every list scanned
            scores[rows[done]], ids[rows[done]] = s[done], i[done]
            outside[rows[done]] = self._outside_bound(queries[rows[done]], probes[done])
            rows, nprobe = rows[~done], min(2 * nprobe, self.nlist)
        return scores, ids, outside

    def _exact_in_lists(self, queries: np.ndarray, probes: np.ndarray, probe_scores: np.ndarray, n: int):
        """Exact top-``n`` (float64, ties by id) among the vectors of the lists ``probes``."""
        fetch = min(n + TIE_MARGIN, len(self))
        scores, ids, open_rows = self._scan(queries, probes, probe_scores, fetch, n)
        while len(open_rows) and fetch < len(self):
            fetch = min(2 * fetch, len(self))
            s, i, still = self._scan(queries[open_rows], probes[open_rows], probe_scores[open_rows], fetch, n)
            scores[open_rows], ids[open_rows] = s[:, : scores.shape[1]], i[:, : ids.shape[1]]
            open_rows = open_rows[still]
        return scores[:, :n], ids[:, :n]

    def _scan(self, queries: np.ndarray, probes: np.ndarray, probe_scores: np.ndarray, fetch: int, n: int):
        """faiss's top-``fetch`` in the probed lists, rescored and sorted; also the rows where the
        n-th is within float32 error of faiss's last candidate (a near tie: fetch deeper)."""
        self.ivf.nprobe = probes.shape[1]  # faiss checks the preassigned lists' width against it
        approx, found = self.ivf.search_preassigned(queries, fetch, probes, probe_scores)
        present = found >= 0
        rows = np.zeros((*found.shape, self.dim), dtype=np.float32)
        if present.any():
            rows[present] = self.ivf.reconstruct_batch(found[present])
        scores, ids = rescore_sorted(queries, found, rows)
        full = present.all(axis=1)  # fewer than `fetch` found: the probed lists were exhausted
        floor = np.where(full, approx[:, -1].astype(np.float64), -np.inf)
        near = full & (scores[:, n - 1] <= floor + float32_error(self.dim))
        return scores, ids, np.nonzero(near)[0]

    def _outside_bound(self, queries: np.ndarray, probes: np.ndarray) -> np.ndarray:
        """``[Q]``: max over unprobed lists of (q . c_l + r_l) (-inf when every list was probed)."""
        ceiling = queries.astype(np.float64) @ self.centroids.T.astype(np.float64) + self.radius[None, :]
        np.put_along_axis(ceiling, probes.clip(0), -np.inf, axis=1)
        return ceiling.max(axis=1)
