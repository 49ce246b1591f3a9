"""Search backends: the exactness certificate, IVF removal == rebuild, one behavioural suite for
flat / IVF / Milvus (milvus-lite, for real), the audit refusing approximate answers."""

import numpy as np
import pytest
import torch

from procedural_perception.visual_memory import VisualMemory
from procedural_perception.visual_memory.backends import (
    EXACT_BACKENDS,
    ApproximateAnswerError,
    make_backend,
    require_exact,
)
from procedural_perception.visual_memory.backends.centroids import kmeans_centroids

DIM = 16


def unit(n, seed, dim=DIM, duplicates=0):
    g = np.random.default_rng(seed)
    centres = g.standard_normal((6, dim))
    x = centres[g.integers(0, 6, n)] + 0.6 * g.standard_normal((n, dim))
    if duplicates:
        x[-duplicates:] = x[:duplicates]  # exact duplicates: ties the id order must break
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def brute(memory, ids, queries, n):
    """Reference: exhaustive float64 search, ties by ascending id."""
    s = queries.astype(np.float64) @ memory.astype(np.float64).T
    order = np.lexsort((np.broadcast_to(ids, s.shape), -s), axis=1)[:, :n]
    return np.take_along_axis(s, order, 1), ids[order]


CENTROIDS = kmeans_centroids(unit(400, seed=9), 8)  # trained on other vectors than those stored


def backend(name, tmp_path, **extra):
    options = {"ivf": {"centroids": CENTROIDS, "nprobe": 3}, "milvus": {"folder": tmp_path}}.get(name, {})
    return make_backend(name, DIM, **{**options, **extra})


@pytest.mark.parametrize("name", ["flat", "ivf", "milvus", "scann"])
def test_backend_behaviour(name, tmp_path):
    x, ids = unit(120, seed=1, duplicates=10), np.arange(120, dtype=np.int64) * 3
    b = backend(name, tmp_path)
    b.add(x[:70], ids[:70])
    b.add(x[70:], ids[70:])
    assert len(b) == 120 and 9 in b and 10 not in b
    assert sorted(b.ids.tolist()) == sorted(ids.tolist())
    np.testing.assert_array_equal(b.vectors(ids[[5, 0, 99]]), x[[5, 0, 99]])
    with pytest.raises(ValueError, match="new and distinct"):
        b.add(x[:1], ids[:1])
    with pytest.raises(KeyError, match="not in the index"):
        b.remove([ids[0], 1])
    assert len(b) == 120  # nothing removed
    b.remove(ids[[0, 7, 119]])
    kept = np.setdiff1d(np.arange(120), [0, 7, 119])
    queries = np.concatenate([x[:10], unit(20, seed=2)])
    for n in (1, 5, 30):
        result = b.search(queries, n)
        assert result.scores.shape == (30, n) and result.ids.dtype == np.int64
        ref_s, ref_i = brute(x[kept], ids[kept], queries, n)
        rows = result.exact
        np.testing.assert_array_equal(result.ids[rows], ref_i[rows])  # certified rows are exact
        np.testing.assert_allclose(result.scores[rows], ref_s[rows], atol=1e-6)
        if b.claims_exact:
            assert rows.all()
        if name == "scann":  # never certified, but the neighbours it returns are rescored exactly
            assert not rows.any() and np.isinf(result.bound).all()
            sims = queries.astype(np.float64) @ x.astype(np.float64).T
            got = np.take_along_axis(sims, np.searchsorted(ids, result.ids), 1)
            np.testing.assert_allclose(result.scores, got, atol=1e-6)
    with pytest.raises(ValueError, match="must be in 1..117"):
        b.search(queries, 118)
    b.close()


@pytest.mark.parametrize("name", ["flat", "ivf", "milvus"])
def test_memory_persists_its_backend_across_reopen(name, tmp_path):
    x, y = unit(90, seed=3, duplicates=5), np.arange(90) % 4
    options = {"ivf": {"centroids": CENTROIDS, "nprobe": 8, "provenance": {"source": "test"}}}.get(name)
    with VisualMemory(DIM, path=tmp_path / "m", backend=name, backend_options=options) as mem:
        mem.add(x, y)
        mem.remove([4, 50], reason="test")
        mem.save()
        before = mem.query(x[:12], 7)
    with VisualMemory.load(tmp_path / "m") as again:
        assert again.index.name == name and len(again) == 88
        after = again.query(x[:12], 7)
        assert torch.equal(before[1], after[1]) and torch.allclose(before[0], after[0])
        with pytest.raises(KeyError, match="Unknown ids"):
            again.remove([4], reason="twice")
        again.add(x[:2], y[:2])
        assert again.index.search(x[:1], 1).ids[0, 0] in (0, 90)  # the duplicate: smallest id first
    if name == "ivf":
        with VisualMemory.load(tmp_path / "m") as again:
            assert again.store.get_meta("backend")["options"]["provenance"] == {"source": "test"}
            np.testing.assert_array_equal(again.index.centroids, CENTROIDS)


def test_milvus_reconciles_with_the_store(tmp_path):
    """SQLite is the system of record: rows deleted behind Milvus's back come back on open, and
    rows the store does not have are dropped."""
    x, y = unit(50, seed=4), np.arange(50) % 3
    with VisualMemory(DIM, path=tmp_path / "m", backend="milvus") as mem:
        mem.add(x, y)
        mem.index.client.delete(mem.index.collection, ids=[1, 2])
        mem.index.client.insert(mem.index.collection, [{"id": 999, "vector": x[0]}])
    with VisualMemory.load(tmp_path / "m") as again:
        assert sorted(again.index.ids.tolist()) == list(range(50))
        ref = VisualMemory(DIM)
        ref.add(x, y)
        assert torch.equal(again.query(x[:5], 6)[1], ref.query(x[:5], 6)[1])


def test_flat_certificate_is_the_nth_score():
    x = unit(60, seed=5)
    b = make_backend("flat", DIM, device="cpu")
    b.add(x, np.arange(60))
    r = b.search(x[:8], 5)
    assert r.all_exact and np.array_equal(r.bound, r.scores[:, -1].astype(np.float64))


def test_ivf_bound_holds_and_full_probe_is_exact():
    x, ids = unit(300, seed=6), np.arange(300, dtype=np.int64)
    queries = unit(40, seed=7)
    for nprobe in (1, 2, 8):
        b = make_backend("ivf", DIM, centroids=CENTROIDS, nprobe=nprobe)
        b.add(x, ids)
        r = b.search(queries, 10)
        s = queries.astype(np.float64) @ x.astype(np.float64).T
        for q in range(len(queries)):  # the bound really bounds everything not returned
            left_out = np.setdiff1d(ids, r.ids[q])
            assert s[q, left_out].max() <= r.bound[q] + 1e-9
        ref_s, ref_i = brute(x, ids, queries, 10)
        np.testing.assert_array_equal(r.ids[r.exact], ref_i[r.exact])
        if nprobe == 8:  # every list scanned: exact by construction
            assert r.all_exact and np.array_equal(r.ids, ref_i)
        if nprobe == 1:
            assert not r.all_exact  # some queries' neighbours may sit in unscanned lists
            with pytest.raises(ApproximateAnswerError, match="could not certify"):
                require_exact(r, "The unlearning check")


def test_ivf_removal_equals_rebuild_on_the_same_centroids():
    x = unit(200, seed=8, duplicates=20)
    ids = np.random.default_rng(0).permutation(200).astype(np.int64) + 100
    queries = np.concatenate([x[:15], unit(25, seed=10)])
    full = make_backend("ivf", DIM, centroids=CENTROIDS, nprobe=2)
    full.add(x, ids)
    gone = ids[[0, 3, 150, 199]]
    full.remove(gone)
    keep = ~np.isin(ids, gone)
    rebuilt = make_backend("ivf", DIM, centroids=CENTROIDS, nprobe=2)
    order = np.random.default_rng(1).permutation(np.count_nonzero(keep))
    rebuilt.add(x[keep][order], ids[keep][order])  # another insertion order, too
    for n in (1, 8, 25):
        a, b = full.search(queries, n), rebuilt.search(queries, n)
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.exact, b.exact)


def test_audit_refuses_approximate_answers_classification_accepts_them():
    x, y = unit(300, seed=11), np.arange(300) % 5
    mem = VisualMemory(DIM, backend="ivf", backend_options={"centroids": CENTROIDS, "nprobe": 1})
    mem.add(x, y)
    queries = unit(40, seed=12)
    assert not mem.search(queries, 11).all_exact
    with pytest.raises(ApproximateAnswerError, match="privacy audit needs exact neighbours.*flat"):
        mem.audit(queries, k=10)
    assert mem.classify(queries, k=10).shape == (40,)
    exact = VisualMemory(DIM, backend="ivf", backend_options={"centroids": CENTROIDS, "nprobe": 8})
    exact.add(x, y)
    flat = VisualMemory(DIM)
    flat.add(x, y)
    a, b = exact.audit(queries, k=10), flat.audit(queries, k=10)  # every list scanned: certified
    assert np.array_equal(a.non_private_ids, b.non_private_ids)


def test_registry():
    assert set(EXACT_BACKENDS) <= {"flat", "milvus"}
    with pytest.raises(ValueError, match="Unknown memory backend 'nope'"):
        make_backend("nope", DIM)


def test_scann_edits_after_build_use_its_mutation():
    x = unit(200, seed=13)
    b = make_backend("scann", DIM, leaves=8, leaves_to_search=8)
    b.add(x[:150], np.arange(150))
    assert b.search(x[:3], 1).ids[:, 0].tolist() == [0, 1, 2]  # builds the tree
    b.remove([1])
    b.add(x[150:], np.arange(150, 200))
    r = b.search(x[[1, 2, 160]], 3)
    assert 1 not in r.ids and r.ids[1, 0] == 2 and r.ids[2, 0] == 160 and not r.all_exact


def test_unlearning_check_needs_certified_answers():
    from procedural_perception.visual_memory.unlearning import answers_equal

    x, y = unit(300, seed=14), np.arange(300) % 4
    queries = unit(30, seed=15)
    for nprobe, certified in ((8, True), (1, False)):
        forgot = VisualMemory(DIM, backend="ivf", backend_options={"centroids": CENTROIDS, "nprobe": nprobe})
        exact = VisualMemory(DIM)  # the flat backend, same ids after the same removal
        for memory in (forgot, exact):
            memory.add(x, y)
            memory.remove([3, 77], reason="test")
        if certified:
            assert answers_equal(forgot, exact, queries, 10)
        else:
            with pytest.raises(ApproximateAnswerError, match="unlearning-equality check"):
                answers_equal(forgot, exact, queries, 10)
