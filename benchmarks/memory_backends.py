"""Search backends side by side (rows of `make bench-memory`): flat (exact), IVF at two nprobe,
ScaNN and milvus-lite, on the same vectors and queries in one run.

Per backend and memory size: queries/s and recall@k against the flat backend's exact answer,
the fraction of answers the backend certified exact, remove-one latency, build time and bytes per
vector; each row's baseline is the flat backend measured in the same run. Anchor: Geirhos et al.
report ~500-600 queries/s at 1M with ScaNN.

Vectors are synthetic but shaped like embeddings: unit vectors around ``CLUSTERS`` centres of
unequal popularity, so neighbourhoods are clustered as with real features (uniform random unit
vectors would have no neighbour structure and make every partitioned index look bad). IVF's coarse
centroids are k-means centroids of a separate sample of the same distribution, the stand-in for
embeddings of procedural images (never the stored vectors).

Sizes: 1M x 384 (ViT-S width) and 10M x 32 (10M x 384 would need 15 GB; the machine is shared, so
the 10M rows use a narrower width to keep peak RAM under ~8 GB). milvus-lite, a pure-Python local
engine for tests and single machines, inserts ~1.3k rows/s here (1M rows would take ~13 min), so its
rows use 100k vectors and say so; a Milvus cluster is the engine for larger memories.
"""

from __future__ import annotations

import os

# Sleeping, not spinning, OpenMP threads on shared cores (see benchmarks/memory.py); before faiss loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

import faiss  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402

from procedural_perception.core.benchmark_rows import RESULTS_DIR, quick, row, write_rows  # noqa: E402
from procedural_perception.visual_memory.backends import make_backend  # noqa: E402
from procedural_perception.visual_memory.backends.centroids import kmeans_centroids  # noqa: E402

CLUSTERS = 2000  # embedding "concepts" the synthetic vectors gather around
INTRINSIC = 24  # dimensions of the within-cluster variation (features vary along few directions)
SPREAD = 0.8  # within-cluster deviation relative to the (unit-variance) centres
ISOTROPIC = 0.15  # small full-rank noise on top
K = 10  # neighbours asked for; recall@10
CHUNK = 1_000_000  # vectors generated and added per step (bounds peak RAM)
console = Console()
ANCHOR = "Geirhos et al. (ScaNN): ~500-600 queries/s at 1M"


def realistic_chunks(n: int, dim: int, seed: int, chunk: int = CHUNK):
    """``[<=chunk, dim]`` unit vectors, ``n`` in all: a mixture of ``CLUSTERS`` Gaussians with
    Zipf-like weights whose spread lies mostly in an ``INTRINSIC``-d subspace (deterministic)."""
    shape = np.random.default_rng(12345 + dim)
    centres = shape.standard_normal((CLUSTERS, dim)).astype(np.float32)
    basis = shape.standard_normal((INTRINSIC, dim)).astype(np.float32) * np.float32(np.sqrt(dim / INTRINSIC))
    weights = 1.0 / np.arange(1, CLUSTERS + 1) ** 0.5
    weights /= weights.sum()
    rng = np.random.default_rng(seed)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        part = centres[rng.choice(CLUSTERS, m, p=weights)]
        part += SPREAD * rng.standard_normal((m, INTRINSIC), dtype=np.float32) @ basis
        part += ISOTROPIC * rng.standard_normal((m, dim), dtype=np.float32)
        part /= np.linalg.norm(part, axis=1, keepdims=True)
        yield part


def realistic(n: int, dim: int, seed: int) -> np.ndarray:
    return np.concatenate(list(realistic_chunks(n, dim, seed)))


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def _bytes_per_vector(name: str, backend, n: int) -> float:
    if name in ("flat", "ivf"):
        index = backend.index.to_idmap() if name == "flat" else backend.ivf
        return len(faiss.serialize_index(index)) / n
    if name == "scann":
        with tempfile.TemporaryDirectory() as folder:
            backend._searcher.serialize(folder)
            return (_folder_bytes(Path(folder)) + backend._rows.nbytes) / n
    return _folder_bytes(Path(backend.uri)) / n  # milvus-lite: its folder on disk


def measure(name: str, options: dict, n: int, dim: int, queries: np.ndarray, truth: np.ndarray | None,
            removals: int, folder: Path, nprobes: Sequence[int] = ()) -> list[dict]:
    """Build (add ``n`` vectors chunk by chunk + first search), timed searches (IVF: once per
    ``nprobes`` on the same index), recall against ``truth``, removals. The vectors are regenerated
    per backend so only one copy is ever held."""
    start = time.perf_counter()
    backend = make_backend(name, dim, **({"folder": folder} if name == "milvus" else {}), **options)
    added = 0
    for part in realistic_chunks(n, dim, seed=1):
        backend.add(part, np.arange(added, added + len(part)))
        added += len(part)
    backend.search(queries[:1], K)  # ScaNN trains its tree here; others warm their thread pools
    build = time.perf_counter() - start
    bytes_per = _bytes_per_vector(name, backend, n)
    out = []
    for nprobe in nprobes or [None]:
        if nprobe is not None:
            backend.nprobe = nprobe
        start = time.perf_counter()
        result = backend.search(queries, K)
        qps = len(queries) / (time.perf_counter() - start)
        recall = 1.0 if truth is None else float(np.mean([len(set(a) & set(b)) / K
                                                           for a, b in zip(result.ids, truth, strict=True)]))
        out.append({"qps": qps, "recall": recall, "certified": float(np.mean(result.exact)), "build": build,
                    "bytes": bytes_per, "ids": result.ids})
    times = []
    for item in np.random.default_rng(1).choice(n, removals, replace=False):
        t = time.perf_counter()
        backend.remove([int(item)])
        times.append(time.perf_counter() - t)
    for o in out:
        o["remove_ms"] = 1000 * statistics.median(times)
    backend.close()
    del backend
    return out


def size_rows(n: int, dim: int, q: int, nlist: int, nprobes: tuple[int, int], removals: int,
              milvus_n: int | None, scann: bool = True) -> list[dict]:
    """Every backend at ``n`` x ``dim`` (milvus-lite at ``milvus_n``, or not at all)."""
    queries = realistic(q, dim, seed=2)
    label = f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k"
    console.print(f"  {label} x {dim}-d: IVF centroids")
    centroids = kmeans_centroids(realistic(min(max(40 * nlist, 20_000), 200_000), dim, seed=3), nlist)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        console.print(f"  {label} x {dim}-d: flat")
        flat = measure("flat", {"device": "cpu"}, n, dim, queries, None, removals, Path(folder))[0]
        rows += _rows(f"flat (exact), {label} x {dim}-d", flat, flat)
        console.print(f"  {label} x {dim}-d: IVF")
        ivf = measure("ivf", {"centroids": centroids}, n, dim, queries, flat["ids"], removals, Path(folder), nprobes)
        for nprobe, got in zip(nprobes, ivf, strict=True):
            rows += _rows(f"IVF-Flat nlist={nlist} nprobe={nprobe}, {label} x {dim}-d", got, flat)
        if scann:
            console.print(f"  {label} x {dim}-d: ScaNN")
            got = measure("scann", {}, n, dim, queries, flat["ids"], removals, Path(folder))[0]
            rows += _rows(f"ScaNN (leaves ~sqrt(N), search 1/20, AH 2-d blocks, reorder 100), {label} x {dim}-d",
                          got, flat)
        if milvus_n:
            console.print(f"  milvus-lite, {milvus_n} x {dim}-d")
            small_q = queries[: min(q, 100)]
            exact = measure("flat", {"device": "cpu"}, milvus_n, dim, small_q, None, removals, Path(folder))[0]
            got = measure("milvus", {}, milvus_n, dim, small_q, exact["ids"], removals, Path(folder) / "milvus")[0]
            rows += _rows(f"milvus-lite FLAT, {milvus_n // 1000}k x {dim}-d (1M inserts would take ~13 min)", got, exact)
    return rows


def _rows(title: str, got: dict, flat: dict) -> list[dict]:
    base = "flat (exact), same vectors, same run"
    return [dict(r, section="backends") for r in [
        row(f"search {title}, k={K}", got["qps"], "queries/s", base, flat["qps"], recall_at_k=got["recall"],
            certified_exact=got["certified"], anchor=ANCHOR),
        row(f"recall@{K} {title}", got["recall"], "fraction", base, 1.0),
        row(f"build {title}", got["build"], "s", base, flat["build"], higher_is_better=False),
        row(f"remove 1 {title} (median)", got["remove_ms"], "ms", base, flat["remove_ms"], higher_is_better=False),
        row(f"bytes per vector {title}", got["bytes"], "bytes", base, flat["bytes"], higher_is_better=False),
    ]]


def backend_rows(fast: bool, sizes: Sequence[tuple] | None = None, on_rows=None) -> list[dict]:
    """Rows for every size in ``sizes`` (default: QUICK or full); ``on_rows(rows)`` after each size."""
    if sizes is None:
        sizes = QUICK_SIZES if fast else FULL_SIZES
    rows: list[dict] = []
    for size in sizes:
        rows += size_rows(*size)
        if on_rows is not None:
            on_rows(rows)
    return rows


# (n, dim, queries, nlist, nprobes, removals, milvus-lite n, ScaNN)
QUICK_SIZES = [(20_000, 128, 200, 64, (4, 16), 3, 2_000, True)]
FULL_SIZES = [(1_000_000, 384, 500, 1024, (8, 64), 10, 100_000, True),
              (10_000_000, 32, 500, 4096, (8, 64), 10, None, True)]


def main() -> None:
    """Only the backend rows, merged into benchmarks/results/memory.json (replacing earlier backend
    rows, keeping the other sections): ``python -m benchmarks.memory_backends [--sizes ...]``."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--sizes", nargs="*", default=None,
                        help="n:dim:queries:nlist:nprobe1,nprobe2:milvus_n:scann(0/1), e.g. 1000000:384:500:1024:8,64:100000:1")
    args = parser.parse_args()
    sizes = None
    if args.sizes:
        sizes = []
        for spec in args.sizes:
            n, dim, q, nlist, probes, milvus_n, scann = spec.split(":")
            sizes.append((int(n), int(dim), int(q), int(nlist), tuple(int(p) for p in probes.split(",")), 10,
                          int(milvus_n) or None, scann == "1"))
    path = RESULTS_DIR / "memory.json"
    kept = [r for r in json.loads(path.read_text()) if r.get("section") != "backends"] if path.exists() else []
    backend_rows(quick(), sizes, on_rows=lambda rows: write_rows("memory", kept + rows))


if __name__ == "__main__":
    main()
