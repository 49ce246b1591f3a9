"""Milvus as the search engine of memories beyond one machine (pymilvus client).

The same client code talks to milvus-lite (a local engine from PyPI, used when ``uri`` is a file
path: the default is ``milvus.db`` inside the memory folder) and to a Milvus standalone server or
cluster (``uri="http://host:19530"``, plus ``token`` when authentication is on).

* **System of record**: the memory's SQLite store keeps vectors, labels, metadata and the audit
  log; Milvus holds only ``(id, vector)`` rows to search. On open the collection is reconciled with
  the store (rows the store lacks are deleted, rows Milvus lacks are inserted), so a crash between
  the two, or a collection dropped by an operator, heals itself. Labels stay out of Milvus so that
  forgetting has one place to audit and the cluster is a replaceable cache.
* **Stable ids**: the memory's int64 ids are the primary keys (``auto_id`` off). A cluster spreads
  rows over ``shards`` channels by a hash of the primary key, so a sample's shard follows from
  its id, and a removal is routed to the shard that holds it.
* **Consistency**: searches use ``Strong`` consistency, so a removal is visible to the very next
  search (no stale neighbours after a ``forget``).
* **Exactness**: a ``FLAT`` index (brute force) proposes candidates with their float32 scores; they
  are rescored in float64 and sorted by (score descending, id ascending), fetching deeper on near
  ties like :mod:`procedural_perception.visual_memory.index`, so answers equal the flat backend's.
  Milvus caps ``limit`` at 16,384: an answer that would need more candidates to settle a tie is
  returned uncertified (``exact=False``).

Deleted rows stay in Milvus's segment files until compaction; the bytes-on-disk guarantee after
``forget`` is the flat and IVF backends' (see README).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pymilvus import DataType, MilvusClient

from procedural_perception.visual_memory.backends.base import (
    Backend,
    KnownIds,
    SearchResult,
    float32_error,
    rescore_sorted,
)

LITE_FILE = "milvus.db"  # milvus-lite's data inside the memory folder
MAX_LIMIT = 16_384  # Milvus's largest top-k
BATCH = 5_000  # rows per insert/get call (keeps each gRPC message well under Milvus's 64 MB cap)
TIE_MARGIN = 8  # extra candidates per query so the n-th is usually certain in the first pass


class MilvusBackend(KnownIds, Backend):
    """A Milvus collection of ``(id, vector)`` rows with a FLAT inner-product index.

    ``uri``: a milvus-lite file path or ``http://host:19530`` (default: ``milvus.db`` in ``folder``,
    or a temporary folder for an in-RAM memory); ``collection``: its name (one per memory on a
    shared cluster); ``token``: ``"user:password"`` or an API key; ``shards``: channels a new
    collection's rows are hashed over (by id).
    """

    name: ClassVar[str] = "milvus"
    claims_exact: ClassVar[bool] = True

    def __init__(self, dim: int, uri: str | None = None, collection: str = "visual_memory", token: str = "",
                 shards: int = 1, folder: str | Path | None = None, device: str = "cpu") -> None:
        self.dim = dim
        self._scratch = None
        if uri is None:
            if folder is None:
                self._scratch = tempfile.TemporaryDirectory(prefix="milvus-lite-")
                folder = self._scratch.name
            uri = str(Path(folder) / LITE_FILE)
        self.uri, self.collection, self.shards = uri, collection, shards
        self.remote = uri.startswith(("http://", "https://", "tcp://", "grpc://"))
        if not self.remote:
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        self.client = MilvusClient(uri=uri, token=token)
        if not self.client.has_collection(collection):
            self._create()
        self._check_dim()
        self.client.load_collection(collection)
        self._ids = set(self._scan_ids())

    def _create(self) -> None:
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        index = self.client.prepare_index_params()
        index.add_index(field_name="vector", index_type="FLAT", metric_type="IP")
        self.client.create_collection(self.collection, schema=schema, index_params=index,
                                      consistency_level="Strong", num_shards=self.shards)

    def _check_dim(self) -> None:
        fields = self.client.describe_collection(self.collection)["fields"]
        dims = [int(f.get("params", {}).get("dim", -1)) for f in fields if f["name"] == "vector"]
        if dims != [self.dim]:
            raise ValueError(f"Milvus collection {self.collection!r} at {self.uri} holds vectors of dim {dims}, "
                             f"but this memory's are {self.dim}-d; give the memory its own collection name.")

    def _scan_ids(self) -> list[int]:
        iterator = self.client.query_iterator(self.collection, batch_size=BATCH, filter="id >= 0",
                                              output_fields=["id"], consistency_level="Strong")
        ids: list[int] = []
        while batch := iterator.next():
            ids.extend(int(r["id"]) for r in batch)
        iterator.close()
        return ids

    def options(self) -> dict[str, Any]:
        """A milvus-lite file is found again in the memory folder (an in-RAM memory's temporary one is
        rebuilt there from SQLite on the next open); a server's uri is recorded, its token is not."""
        in_folder = not self.remote and (self._scratch is not None or Path(self.uri).name == LITE_FILE)
        return {"collection": self.collection, "shards": self.shards, **({} if in_folder else {"uri": self.uri})}

    # --- editing ---------------------------------------------------------------------------------
    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        vectors, ids = self._check_add(vectors, ids)
        for start in range(0, len(ids), BATCH):
            part = slice(start, start + BATCH)
            rows = [{"id": i, "vector": v} for i, v in zip(ids[part].tolist(), vectors[part], strict=True)]
            self.client.insert(self.collection, rows)
        self._ids.update(ids.tolist())

    def remove(self, ids: np.ndarray) -> None:
        ids = [int(i) for i in np.asarray(ids, dtype=np.int64).reshape(-1)]
        missing = [i for i in ids if i not in self._ids]
        if missing:
            raise KeyError(f"ids not in the index: {missing[:20]}")
        for start in range(0, len(ids), BATCH):
            self.client.delete(self.collection, ids=ids[start : start + BATCH])
        self._ids.difference_update(ids)

    def reconcile(self, ids: np.ndarray, load: Callable[[], tuple[np.ndarray, np.ndarray]]) -> None:
        """Delete rows the store no longer has; insert the store's rows Milvus lacks."""
        wanted = set(np.asarray(ids).tolist())
        extra = sorted(self._ids - wanted)
        if extra:
            self.remove(np.array(extra))
        lacking = wanted - self._ids
        if lacking:
            stored_ids, vectors = load()
            keep = np.isin(stored_ids, np.fromiter(lacking, dtype=np.int64))
            self.add(vectors[keep], stored_ids[keep])

    # --- reading ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._ids)

    def vectors(self, ids: np.ndarray | None = None) -> np.ndarray:
        ids = self.ids if ids is None else np.asarray(ids, dtype=np.int64).reshape(-1)
        found: dict[int, np.ndarray] = {}
        for start in range(0, len(ids), BATCH):
            for r in self.client.get(self.collection, ids=ids[start : start + BATCH].tolist(), output_fields=["vector"]):
                found[int(r["id"])] = np.asarray(r["vector"], dtype=np.float32)
        missing = [int(i) for i in ids if int(i) not in found]
        if missing:
            raise KeyError(f"ids not in the index: {missing[:20]}")
        return np.stack([found[int(i)] for i in ids]) if len(ids) else np.zeros((0, self.dim), np.float32)

    def search(self, queries: np.ndarray, n: int) -> SearchResult:
        """Milvus FLAT candidates, rescored exactly; deeper where the n-th is a near tie."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        self._check_n(n)
        fetch = min(n + TIE_MARGIN, len(self), MAX_LIMIT)
        scores, ids, near = self._candidates(queries, fetch, n)
        while len(near) and fetch < min(len(self), MAX_LIMIT):
            fetch = min(2 * fetch, len(self), MAX_LIMIT)
            s, i, still = self._candidates(queries[near], fetch, n)
            scores[near], ids[near] = s[:, : scores.shape[1]], i[:, : ids.shape[1]]
            near = near[still]
        exact = np.ones(len(queries), dtype=bool)
        exact[near] = False  # still a near tie at Milvus's top-k cap
        scores, ids = scores[:, :n], ids[:, :n]
        return SearchResult(scores.astype(np.float32), ids, scores[:, -1].copy(), exact, self.name)

    def _candidates(self, queries: np.ndarray, fetch: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        hits = self.client.search(self.collection, data=list(queries), limit=fetch, output_fields=["vector"],
                                  search_params={"metric_type": "IP"}, consistency_level="Strong")
        found = np.full((len(queries), fetch), -1, dtype=np.int64)
        approx = np.full((len(queries), fetch), -np.inf)
        rows = np.zeros((len(queries), fetch, self.dim), dtype=np.float32)
        for q, row in enumerate(hits):
            for j, hit in enumerate(row):
                found[q, j], approx[q, j] = hit["id"], hit["distance"]
                rows[q, j] = hit["entity"]["vector"]
        scores, ids = rescore_sorted(queries, found, rows)
        full = fetch < len(self)  # Milvus left some rows out: is the n-th certainly above them?
        near = full & (scores[:, n - 1] <= approx[:, -1] + float32_error(self.dim))
        return scores, ids, np.nonzero(near)[0]

    def drop(self) -> None:
        """Delete the whole collection (for tests and for rebuilding a cluster copy)."""
        self.client.drop_collection(self.collection)
        self._ids.clear()

    def close(self) -> None:
        self.client.close()
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None
