"""Visual memory benchmark (`make bench-memory`, QUICK=1 for the < 60 s version).

Rows (benchmarks/results/memory.json):

* exact top-k search throughput (queries/s) of the memory's faiss index against DINO's
  ``eval_knn`` (torch matmul + topk over chunks of 100 queries), same vectors, same threads, on
  memories of 60k and 1M random unit vectors of 384 dimensions;
* latency of removing one sample from a 1M memory: the index's swap-with-last removal against
  faiss ``IndexIDMap2.remove_ids`` (which shifts every later row), and the full
  ``VisualMemory.remove`` (SQLite transaction, audit row, index);
* the exact privacy audit against naive leave-one-out (remove each sample, re-classify every
  query) at N = 20k. Naive leave-one-out over all 20k samples would take hours, so it is timed on a
  subset of samples and its per-sample cost extrapolated (the row says so); its verdicts on that
  subset are checked against the audit, and a separate row checks that the two non-private sets
  are identical over *every* sample of a 1k memory for every rule and two k;
* the search backends side by side (flat, IVF at two nprobe, ScaNN, milvus-lite): queries/s,
  recall@10, certified fraction, remove-one latency, build time, bytes per vector at 1M and 10M
  (benchmarks/memory_backends.py).
"""

from __future__ import annotations

import os

# OpenMP threads that sleep instead of spinning while they wait: on a machine shared with other
# jobs, spinning threads steal the cores that do the work (both faiss and torch use OpenMP).
# Read when the OpenMP runtimes load, so it is set before faiss and torch are imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import statistics  # noqa: E402
import tempfile
import time
from collections.abc import Callable

import faiss  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402

from benchmarks.memory_backends import backend_rows  # noqa: E402
from procedural_perception.core.benchmark_rows import quick, row, write_rows  # noqa: E402
from procedural_perception.visual_memory import RULES, VisualMemory  # noqa: E402
from procedural_perception.visual_memory.index import FlatIndex  # noqa: E402
from procedural_perception.visual_memory.privacy import exact_audit  # noqa: E402
from procedural_perception.visual_memory.voting import predict  # noqa: E402

DIM = 384  # ViT-S/16 embedding width
DINO_CHUNK = 100  # eval_knn: 10,000 test images in 100 chunks
console = Console()


def unit_vectors(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def clustered(n: int, q: int, classes: int = 10, seed: int = 0, noise: float = 5.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Memory vectors, their labels and queries around ``classes`` centres. ``noise`` (per dimension,
    centres ~ N(0, 1)) is high enough that classes overlap, so some predictions hinge on single
    samples (non-private ones exist) while most queries are still classified correctly."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, DIM)).astype(np.float32)
    labels = rng.integers(0, classes, n)
    memory = centres[labels] + noise * rng.standard_normal((n, DIM)).astype(np.float32)
    queries = centres[rng.integers(0, classes, q)] + noise * rng.standard_normal((q, DIM)).astype(np.float32)
    for x in (memory, queries):
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    return memory, labels, queries


def timed(fn: Callable[[], object], repeat: int = 1) -> float:
    """Best wall time of ``repeat`` runs, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def timed_pair(first: Callable[[], object], second: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Best wall times of two competitors run alternately, so a change in machine load (other jobs
    on shared cores) hits both alike."""
    times = [(timed(first), timed(second)) for _ in range(repeat)]
    return min(t[0] for t in times), min(t[1] for t in times)


def torch_knn(memory: torch.Tensor, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """DINO eval_knn's search: similarity of a chunk of queries to the whole memory, then topk."""
    sims, ids = [], []
    for start in range(0, len(queries), DINO_CHUNK):
        s, i = torch.mm(queries[start : start + DINO_CHUNK], memory.T).topk(k, dim=1)
        sims.append(s)
        ids.append(i)
    return torch.cat(sims), torch.cat(ids)


def search_rows(memory: np.ndarray, q: int, k: int, repeat: int) -> list[dict]:
    n = len(memory)
    queries = unit_vectors(q, seed=2)
    index = FlatIndex(DIM, "cpu")
    index.add(memory, np.arange(n))
    index.search(queries[:50], k)  # warm up the thread pools
    mem_t, q_t = torch.from_numpy(memory), torch.from_numpy(queries)
    torch_knn(mem_t, q_t[:50], k)
    result: dict[str, tuple] = {}
    t_faiss, t_torch = timed_pair(lambda: result.update(faiss=index.search(queries, k)),
                                  lambda: result.update(torch=torch_knn(mem_t, q_t, k)), repeat)
    ids_faiss, ids_torch = result["faiss"][1], result["torch"][1]
    agreement = np.mean([len(set(a) & set(b)) / k for a, b in zip(ids_faiss, ids_torch.numpy(), strict=True)])
    label = f"{n // 1000}k" if n < 1_000_000 else f"{n // 1_000_000}M"
    return [row(f"search {label} x {DIM}-d, {q} queries, k={k}", q / t_faiss, "queries/s",
                baseline=f"torch matmul+topk, chunks of {DINO_CHUNK} (DINO eval_knn)", baseline_value=q / t_torch,
                neighbour_agreement=float(agreement), threads=faiss.omp_get_max_threads())]


def removal_rows(vectors: np.ndarray, memory_n: int, repeats: int) -> list[dict]:
    n = len(vectors)
    rng = np.random.default_rng(0)
    index = FlatIndex(DIM, "cpu")
    index.add(vectors, np.arange(n))
    ours = []
    for item in rng.choice(n, repeats, replace=False):
        start = time.perf_counter()
        index.remove([int(item)])
        ours.append(time.perf_counter() - start)
    idmap = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
    idmap.add_with_ids(vectors, np.arange(n, dtype=np.int64))
    theirs = []
    for item in rng.choice(n, 3, replace=False):
        start = time.perf_counter()
        idmap.remove_ids(np.array([item], dtype=np.int64))
        theirs.append(time.perf_counter() - start)
    del idmap
    label = f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k"
    rows = [row(f"remove 1 sample from {label} x {DIM}-d index (median of {repeats})", 1000 * statistics.median(ours),
                "ms", baseline="faiss IndexIDMap2.remove_ids (median of 3)",
                baseline_value=1000 * statistics.median(theirs), higher_is_better=False)]
    with tempfile.TemporaryDirectory() as folder:
        memory = VisualMemory(DIM, path=folder)
        for start in range(0, memory_n, 100_000):
            part = vectors[start : min(start + 100_000, memory_n)]
            memory.add(part, np.zeros(len(part), dtype=np.int64))
        times = []
        for item in rng.choice(memory_n, repeats, replace=False):
            start = time.perf_counter()
            memory.remove([int(item)], reason="benchmark")
            times.append(time.perf_counter() - start)
        memory.close()
    label = f"{memory_n // 1_000_000}M" if memory_n >= 1_000_000 else f"{memory_n // 1000}k"
    rows.append(row(f"VisualMemory.remove 1 sample, {label} on disk (SQLite commit + audit row + index; median of {repeats})",
                    1000 * statistics.median(times), "ms"))
    return rows


def naive_leave_one_out(index: FlatIndex, labels: np.ndarray, queries: np.ndarray, samples, k: int, rules,
                        classes: int) -> dict[str, set]:
    """Remove each sample in turn, re-classify every query with every rule, put the sample back."""
    vectors = index.vectors(np.asarray(samples))
    table = torch.from_numpy(labels)

    def classify() -> dict[str, torch.Tensor]:
        sims, ids = index.search(queries, k)
        sims_t, labels_t = torch.from_numpy(sims), table[torch.from_numpy(ids)]
        return {rule: predict(sims_t, labels_t, classes, rule, k) for rule in rules}

    before = classify()
    changed = {rule: set() for rule in rules}
    for sample, vector in zip(samples, vectors, strict=True):
        index.remove([int(sample)])
        after = classify()
        index.add(vector[None], np.array([sample]))
        for rule in rules:
            if not torch.equal(after[rule], before[rule]):
                changed[rule].add(int(sample))
    return changed


def audit(index: FlatIndex, labels: np.ndarray, queries: np.ndarray, k: int, rule: str, classes: int):
    sims, ids = index.search(queries, k + 1)
    ids_t = torch.from_numpy(ids)
    return exact_audit(torch.from_numpy(sims), ids_t, torch.from_numpy(labels)[ids_t], classes, k, rule, len(index))


def privacy_rows(n: int, q: int, naive_samples: int, check_n: int, check_q: int) -> list[dict]:
    k, rule, classes = 20, "dino", 10
    memory, labels, queries = clustered(n, q)
    index = FlatIndex(DIM, "cpu")
    index.add(memory, np.arange(n))
    found = {}
    t_exact = timed(lambda: found.update(report=audit(index, labels, queries, k, rule, classes)))
    report = found["report"]
    rng = np.random.default_rng(0)
    flagged = set(report.non_private_ids.tolist())
    # Half the timed samples flagged by the audit, half drawn at random: both verdicts get checked.
    picks = list(rng.choice(sorted(flagged), min(naive_samples // 2, len(flagged)), replace=False)) if flagged else []
    picks += [int(i) for i in rng.choice(n, naive_samples - len(picks), replace=False) if int(i) not in picks]
    start = time.perf_counter()
    naive = naive_leave_one_out(index, labels, queries, picks, k, [rule], classes)[rule]
    per_sample = (time.perf_counter() - start) / len(picks)
    subset_agrees = naive == {int(i) for i in picks if int(i) in flagged}
    rows = [row(f"privacy audit N={n // 1000}k, {q} queries, k={k}, {rule} vote", t_exact, "s",
                baseline=f"naive leave-one-out: {per_sample:.3f} s/sample timed on {len(picks)} samples x {n}",
                baseline_value=per_sample * n, higher_is_better=False,
                non_private=report.count, naive_agrees_on_timed_samples=bool(subset_agrees))]

    small, small_labels, small_queries = clustered(check_n, check_q, seed=5)
    check = FlatIndex(DIM, "cpu")
    check.add(small, np.arange(check_n))
    identical = True
    for k_small in (5, 20):
        naive_sets = naive_leave_one_out(check, small_labels, small_queries, list(range(check_n)), k_small, RULES, classes)
        for r in RULES:
            exact_set = set(audit(check, small_labels, small_queries, k_small, r, classes).non_private_ids.tolist())
            identical &= exact_set == naive_sets[r]
    rows.append(row(f"exact audit == naive leave-one-out over all samples (N={check_n}, {check_q} queries, "
                    f"{len(RULES)} rules x k in (5, 20))", float(identical), "1 = identical sets"))
    return rows


def main() -> None:
    threads = torch.get_num_threads()
    faiss.omp_set_num_threads(threads)
    fast = quick()
    rows = []
    console.print(f"[bold]visual memory benchmark[/bold] ({'QUICK' if fast else 'full'}, {threads} threads)")
    repeat = 1 if fast else 2
    # QUICK checks the mechanics (under a minute): the largest memory is 250k instead of 1M.
    million = unit_vectors(250_000 if fast else 1_000_000, seed=1)
    rows += search_rows(million[:60_000], 1000 if fast else 10_000, 200, repeat)
    rows += search_rows(million[:60_000], 1000 if fast else 10_000, 20, repeat)
    rows += search_rows(million, 100 if fast else 2000, 200, repeat)
    rows += removal_rows(million, 60_000 if fast else 1_000_000, 10 if fast else 25)
    del million
    rows += privacy_rows(20_000, 500 if fast else 2000, 4 if fast else 40, 300 if fast else 1000, 100 if fast else 200)
    console.print("search backends")
    rows += backend_rows(fast)
    write_rows("memory", rows)


if __name__ == "__main__":
    main()
