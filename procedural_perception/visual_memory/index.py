"""Exact cosine-similarity search over L2-normalised vectors under stable int64 ids (faiss).

CPU: a ``faiss.IndexFlatIP`` (exhaustive inner product through BLAS) whose rows ("slots") map to
ids through an array. Removal moves the last row into the freed slot (``O(dim)``: ~0.02 ms at
1M x 384), where faiss's ``IndexIDMap2.remove_ids`` shifts every later row (``O(N)``: ~100 ms);
results stay exact because they never depend on slot order:

* faiss proposes candidates (a few more than k); their similarities are recomputed in float64 from
  the stored rows, so a similarity depends on the two vectors only, not on their slots (BLAS
  rounding does depend on position);
* neighbours are sorted by (similarity descending, id ascending), and when the k-th is within
  faiss's float32 error of what faiss left out (near or exact ties), more candidates are fetched
  until the answer is certain. The result equals an exact float64 search with id tie-breaking.

Saved files are a standard ``faiss.IndexIDMap2(IndexFlatIP)`` holding the ids.

GPU (when faiss-gpu is installed and GPUs are visible; faiss-cpu and faiss-gpu must not be
installed together, or faiss sees no GPU): a ``GpuIndexFlatIP`` copy of the CPU rows, sharded over
the node's GPUs (``index_cpu_to_all_gpus``), or on this process's GPU (``LOCAL_RANK``) under DDP so
ranks do not crowd one device. The CPU index stays the master copy: GPU indexes cannot remove rows
and ``GpuIndexFlat`` takes no ids, so after an add or a removal the GPU copy is rebuilt from the
CPU rows at the next search (one upload per edit batch), and slots map to ids through the same
array. Candidates found on the GPU are rescored on the CPU like any others, so GPU and CPU
searches return identical neighbours (the error bound assumes float32 arithmetic; do not enable
TF32 for faiss). faiss GPU search is capped at k = 2048; a larger k (or k plus the extra
candidates) falls back to the CPU index.
"""

from __future__ import annotations

from collections.abc import Callable

import faiss
import numpy as np

from procedural_perception.core.distributed import local_rank, rank_and_world

GPU_MAX_K = 2048  # faiss's limit for k (and nprobe) in GPU search
# Extra candidates fetched per search so that the k-th neighbour is usually certain in the first
# pass; rows where it is within float32 error of the last candidate are searched again, deeper.
TIE_MARGIN = 8
# faiss 1.15 computes inner products with BLAS only above a work threshold (default 128,000) and
# otherwise with a per-query loop that measured 6x slower at 100 queries x 1M x 384-d and never
# faster down to one query (benchmarks/memory.py). BLAS from the first query on:
BLAS_THRESHOLD = 1


def gpu_count() -> int:
    """GPUs faiss can use (0 with faiss-cpu, or with faiss-cpu and faiss-gpu both installed)."""
    return faiss.get_num_gpus() if hasattr(faiss, "StandardGpuResources") else 0


def checked_additions(vectors: np.ndarray, ids: np.ndarray, dim: int,
                      stored: Callable[[int], bool]) -> tuple[np.ndarray, np.ndarray]:
    """``vectors [n, dim]`` as contiguous float32 and ``ids [n]`` as int64, or a ValueError saying what is
    wrong (shape, count, or ids that repeat or are ``stored`` already). Every index and backend checks
    additions with this."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ValueError(f"expected vectors of shape [n, {dim}], got {list(vectors.shape)}")
    if vectors.shape[0] != ids.shape[0]:
        raise ValueError(f"{vectors.shape[0]} vectors but {ids.shape[0]} ids")
    if len(np.unique(ids)) != len(ids) or any(stored(int(i)) for i in ids):
        raise ValueError("ids must be new and distinct")
    return vectors, ids


class FlatIndex:
    """Exact inner-product index over ``dim``-d float32 vectors with int64 ids.

    ``device``: ``"cpu"``, ``"gpu"`` (error when no GPU is usable) or ``"auto"`` (GPU when usable).
    """

    def __init__(self, dim: int, device: str = "auto") -> None:
        if device not in ("auto", "cpu", "gpu"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'gpu', got {device!r}")
        if device == "gpu" and gpu_count() == 0:
            raise RuntimeError(
                "device='gpu' but faiss sees no GPU: install faiss-gpu (and uninstall faiss-cpu, "
                "with both installed faiss reports 0 GPUs) or use device='cpu'."
            )
        self.dim = dim
        self.use_gpu = device != "cpu" and gpu_count() > 0
        self.cpu = faiss.IndexFlatIP(dim)
        self._slot_ids = np.empty(0, dtype=np.int64)
        self._slot_of: dict[int, int] = {}
        self._gpu = None
        self._gpu_stale = True
        self._gpu_resources: list = []

    def __len__(self) -> int:
        return self.cpu.ntotal

    @property
    def ids(self) -> np.ndarray:
        """``[N]`` ids in slot order (a copy)."""
        return self._slot_ids[: len(self)].copy()

    def __contains__(self, item: int) -> bool:
        return int(item) in self._slot_of

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Append ``vectors [n, dim]`` (float32, L2-normalised by the caller) under new ``ids [n]``."""
        vectors, ids = checked_additions(vectors, ids, self.dim, self._slot_of.__contains__)
        start = len(self)
        self.cpu.add(vectors)
        self._slot_ids = np.concatenate([self._slot_ids[:start], ids])
        self._slot_of.update(zip(ids.tolist(), range(start, start + len(ids)), strict=True))
        # A sharded GPU copy would spread appended rows over its shards and lose the slot order:
        # rebuild it from the CPU rows at the next search instead.
        self._gpu_stale = True

    def remove(self, ids: np.ndarray) -> None:
        """Remove ``ids`` (all must be present); each removal moves the last row into the hole."""
        ids = [int(i) for i in np.asarray(ids, dtype=np.int64).reshape(-1)]
        missing = [i for i in ids if i not in self._slot_of]
        if missing:
            raise KeyError(f"ids not in the index: {missing[:20]}")
        code_size = self.cpu.code_size
        for item in ids:
            slot = self._slot_of.pop(item)
            last = len(self) - 1
            if slot != last:
                rows = faiss.rev_swig_ptr(self.cpu.codes.data(), (last + 1) * code_size)
                rows[slot * code_size : (slot + 1) * code_size] = rows[last * code_size : (last + 1) * code_size]
                moved = int(self._slot_ids[last])
                self._slot_ids[slot] = moved
                self._slot_of[moved] = slot
            # Shrinking a std::vector keeps its buffer: no reallocation, no copy of the other rows.
            self.cpu.codes.resize(last * code_size)
            self.cpu.ntotal = last
        self._slot_ids = self._slot_ids[: len(self)]
        self._gpu_stale = True

    def vectors(self, ids: np.ndarray | None = None) -> np.ndarray:
        """``[n, dim]`` stored vectors of ``ids`` (default: all, in slot order)."""
        rows = faiss.rev_swig_ptr(self.cpu.get_xb(), len(self) * self.dim).reshape(len(self), self.dim)
        if ids is None:
            return rows.copy()
        return rows[[self._slot_of[int(i)] for i in np.asarray(ids).reshape(-1)]].copy()

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` neighbours of ``queries [Q, dim]``.

        Returns ``similarities [Q, k]`` (float32) and ``ids [Q, k]`` (int64), sorted by (similarity
        descending, id ascending). faiss proposes candidates; their similarities are then recomputed
        in float64 from the stored rows, so a similarity depends only on the two vectors, never on
        the row's position (BLAS rounds differently at different positions; without this, removing
        a sample could reorder near-tied neighbours of a memory that otherwise equals one built
        without it).
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        n = len(self)
        if not 1 <= k <= n:
            raise ValueError(f"k must be in 1..{n} (the memory size), got {k}")
        fetch = min(k + TIE_MARGIN, n)
        sims, ids, floor = self._candidates(queries, fetch)
        # Complete when the k-th rescored similarity beats anything faiss left out by more than
        # faiss's float32 error; otherwise (near or exact ties) fetch more candidates for that row.
        open_rows = np.nonzero(sims[:, k - 1] <= floor + self._error)[0] if fetch < n else np.empty(0, np.int64)
        while len(open_rows):
            fetch = min(2 * fetch, n)
            more_sims, more_ids, more_floor = self._candidates(queries[open_rows], fetch)
            sims[open_rows], ids[open_rows] = more_sims[:, : sims.shape[1]], more_ids[:, : sims.shape[1]]
            if fetch == n:
                break
            open_rows = open_rows[more_sims[:, k - 1] <= more_floor + self._error]
        return sims[:, :k].astype(np.float32), ids[:, :k]

    @property
    def _error(self) -> float:
        """Bound on |float32 inner product - exact| for unit vectors: dim * 2^-23 (2x the
        classical n * u bound of a length-n dot product, covering norms slightly off 1)."""
        return self.dim * 2.0**-23

    def _candidates(self, queries: np.ndarray, fetch: int, chunk: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """faiss's top-``fetch`` per query, rescored in float64 and sorted by (-similarity, id);
        also the lowest faiss similarity per query (everything not returned scored at most that)."""
        approx, slots = self._raw_search(queries, fetch)
        rows = faiss.rev_swig_ptr(self.cpu.get_xb(), len(self) * self.dim).reshape(len(self), self.dim)
        exact = np.empty(approx.shape, dtype=np.float64)
        for start in range(0, len(queries), chunk):
            part = slice(start, start + chunk)
            # float32 x float32 products are exact in float64; one fixed summation order per pair.
            exact[part] = (queries[part, None, :].astype(np.float64) * rows[slots[part]]).sum(axis=2)
        ids = self._slot_ids[slots]
        order = np.lexsort((ids, -exact), axis=1)
        return np.take_along_axis(exact, order, 1), np.take_along_axis(ids, order, 1), approx[:, -1].astype(np.float64)

    def _raw_search(self, queries: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        if self.use_gpu and fetch <= GPU_MAX_K:
            return self._gpu_index().search(queries, fetch)
        previous = faiss.cvar.distance_compute_blas_threshold
        faiss.cvar.distance_compute_blas_threshold = BLAS_THRESHOLD
        try:
            return self.cpu.search(queries, fetch)
        finally:
            faiss.cvar.distance_compute_blas_threshold = previous

    def _gpu_index(self):
        """The GPU copy of the CPU rows, rebuilt after removals (GPU indexes cannot remove)."""
        if self._gpu is None or self._gpu_stale:
            _, world = rank_and_world()
            if world > 1:  # one GPU per DDP process: the process's local rank
                res = faiss.StandardGpuResources()
                self._gpu_resources = [res]
                self._gpu = faiss.index_cpu_to_gpu(res, local_rank() % gpu_count(), self.cpu)
            else:  # one process: split the rows over every GPU of the node
                options = faiss.GpuMultipleClonerOptions()
                options.shard = True
                self._gpu = faiss.index_cpu_to_all_gpus(self.cpu, co=options)
            self._gpu_stale = False
        return self._gpu

    def to_idmap(self) -> faiss.IndexIDMap2:
        """A standard ``IndexIDMap2(IndexFlatIP)`` copy holding the ids (for ``faiss.write_index``)."""
        out = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        out.add_with_ids(self.vectors(), self._slot_ids[: len(self)])
        return out

    @classmethod
    def from_idmap(cls, index: faiss.Index, device: str = "auto") -> FlatIndex:
        """Inverse of :meth:`to_idmap` (e.g. after ``faiss.read_index``)."""
        # Keep `index` referenced while reading through downcast views: they do not own the memory.
        idmap = faiss.downcast_index(index)
        if not isinstance(idmap, faiss.IndexIDMap2):
            raise ValueError(f"expected an IndexIDMap2 over IndexFlatIP, got {type(idmap).__name__}")
        flat = faiss.downcast_index(idmap.index)
        n, dim = idmap.ntotal, idmap.d
        out = cls(dim, device)
        vectors = faiss.rev_swig_ptr(flat.get_xb(), n * dim).reshape(n, dim).copy() if n else np.zeros((0, dim))
        out.add(vectors, faiss.vector_to_array(idmap.id_map))
        del flat, idmap
        return out
