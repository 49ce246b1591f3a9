"""VisualMemory: search, exact unlearning, audit log, persistence, crash safety, pruning, GPU routing."""

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from procedural_perception.visual_memory import RULES, VisualMemory
from procedural_perception.visual_memory.index import GPU_MAX_K, TIE_MARGIN, FlatIndex
from procedural_perception.visual_memory.pruning import hard_prune, soft_prune_weights, wrong_counts

ROOT = Path(__file__).resolve().parents[1]


def data(n=60, dim=8, classes=4, seed=0, duplicates=10):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g)
    labels = torch.randint(0, classes, (n,), generator=g)
    x = centres[labels] + torch.randn(n, dim, generator=g)
    if duplicates:
        x[-duplicates:] = x[:duplicates]  # exact duplicates: similarity ties
    return x, labels


def test_add_query_labels_and_stable_ids():
    x, y = data()
    mem = VisualMemory(8)
    ids = mem.add(x[:30], y[:30], class_names=["a", "b", "c", "d"], sources=[f"img{i}.png" for i in range(30)])
    ids2 = mem.add(x[30:], y[30:])
    assert ids.tolist() == list(range(30)) and ids2.tolist() == list(range(30, 60)) and len(mem) == 60
    sims, nbr = mem.query(x[:5], 4)
    assert sims.shape == (5, 4) and nbr.dtype == torch.int64
    assert torch.equal(mem.labels_of(nbr), y[nbr])
    expected = torch.nn.functional.normalize(x[:5], dim=1) @ torch.nn.functional.normalize(x, dim=1).T
    torch.testing.assert_close(sims, expected.gather(1, nbr), atol=1e-5, rtol=0)
    mem.remove([3, 7], reason="test")
    assert len(mem) == 58 and 3 not in mem.ids.tolist()
    assert mem.labels_of(torch.tensor([3, 4])).tolist() == [-1, int(y[4])]
    new = mem.add(x[:1], y[:1])
    assert new.tolist() == [60]  # ids are never reused
    row = mem.metadata([0])[0]
    assert row["class_name"] == "abcd"[int(y[0])] and row["source"] == "img0.png" and row["label"] == int(y[0])


def test_search_order_and_ties_are_exact():
    group = 3 * TIE_MARGIN  # a tie group longer than the extra candidates fetched in the first pass
    x, _ = data(n=group + 40, duplicates=0)
    x[:group] = x[0]
    vectors = torch.nn.functional.normalize(x, dim=1).numpy()
    ids = np.arange(len(x), dtype=np.int64) * 10
    order = np.random.default_rng(0).permutation(len(x))  # slot order differs from id order
    index = FlatIndex(8, "cpu")
    index.add(vectors[order], ids[order])
    index.remove([50])  # a member of the tie group; the last slot moves into its place
    tied = [i for i in ids[:group] if i != 50]
    for k in (1, 4, group - 1, group + 5):
        sims, found = index.search(vectors[:3], k)
        for q in range(3):  # the whole group ties at the top: smallest ids first, ascending
            assert found[q, : min(k, group - 1)].tolist() == tied[:k]
        assert (np.diff(sims, axis=1) <= 0).all()
    exact = vectors[group:] @ vectors.T
    exact[:, 5] = -np.inf  # id 50 removed
    sims, found = index.search(vectors[group:], 6)
    np.testing.assert_allclose(sims, -np.sort(-exact, axis=1)[:, :6], atol=1e-5)
    assert set(found.ravel().tolist()) <= set(ids.tolist()) - {50}


@pytest.mark.parametrize("rule", RULES)
def test_remove_equals_memory_built_without(rule):
    x, y = data(n=80, seed=1)
    queries = torch.cat([x[:10], data(n=30, seed=2)[0]])  # includes exact matches (ties)
    forget = [0, 5, 11, 40, 71, 75]
    full = VisualMemory(8)
    full.add(x, y)
    full.remove(forget, reason="unlearning test")
    keep = [i for i in range(80) if i not in forget]
    fresh = VisualMemory(8)
    fresh.add(x[keep], y[keep])
    for k in (1, 4, 10, 30):
        assert torch.equal(full.classify(queries, k, rule), fresh.classify(queries, k, rule)), (rule, k)


def test_unknown_ids_remove_nothing_and_audit_log_is_append_only(tmp_path):
    x, y = data()
    mem = VisualMemory(8, path=tmp_path / "m")
    mem.add(x, y, sources=[f"s{i}" for i in range(60)], dataset="toy", reason="initial build")
    with pytest.raises(KeyError, match=r"\[999\].*Nothing was removed"):
        mem.remove([1, 999], reason="x")
    assert len(mem) == 60 and len(mem.audit_log()) == 60
    mem.remove([1, 2], reason="user request #12")
    mem.forget_sources(["s9"], reason="GDPR")
    with pytest.raises(KeyError, match="nope"):
        mem.forget_sources(["s10", "nope"], reason="x")
    log = mem.audit_log()
    assert [(r["action"], r["sample_id"], r["reason"]) for r in log[-3:]] == [
        ("remove", 1, "user request #12"), ("remove", 2, "user request #12"), ("remove", 9, "GDPR")]
    assert len(mem) == 57
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        mem.store.db.execute("DELETE FROM audit")
    with pytest.raises(ValueError, match="reason"):
        mem.remove([3], reason="")


def test_save_load_roundtrip_and_stale_snapshot(tmp_path):
    x, y = data()
    mem = VisualMemory(8)
    mem.add(x, y, class_names={0: "a", 1: "b", 2: "c", 3: "d"})
    mem.set_info(encoder="rgb", image_size=32)
    mem.save(tmp_path / "m")
    back = VisualMemory.load(tmp_path / "m")
    assert len(back) == 60 and back.info() == {"encoder": "rgb", "image_size": 32}
    assert torch.equal(back.classify(x, 5), mem.classify(x, 5))
    back.remove([0], reason="r")  # deletes the snapshot that still holds sample 0
    assert not (tmp_path / "m" / "index.faiss").exists()
    again = VisualMemory.load(tmp_path / "m")  # rebuilt from the database
    assert len(again) == 59 and torch.equal(again.classify(x, 5), back.classify(x, 5))
    again.save()
    assert (tmp_path / "m" / "index.faiss").exists() and len(VisualMemory.load(tmp_path / "m")) == 59
    with pytest.raises(FileNotFoundError, match="build one first"):
        VisualMemory.load(tmp_path / "empty")
    with pytest.raises(ValueError, match="8-d"):
        VisualMemory(16, path=tmp_path / "m")


CRASH = """
import os, signal, sys
import numpy as np
sys.path.insert(0, {root!r})
from procedural_perception.visual_memory import VisualMemory
from procedural_perception.visual_memory import store
mem = VisualMemory(4, path=sys.argv[1])
rng = np.random.default_rng(0)
mem.add(rng.normal(size=(10, 4)), np.zeros(10, int), sources=[f"a{{i}}" for i in range(10)])
mem.save()
if sys.argv[2] == "inside":  # die with the batch written but not committed
    insert = store.Store.insert
    def dying(self, *args, **kwargs):
        insert(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)
    store.Store.insert = dying
mem.add(rng.normal(size=(50, 4)), np.ones(50, int))
os.kill(os.getpid(), signal.SIGKILL)  # "after": committed, index snapshot not refreshed
"""


@pytest.mark.parametrize("moment, expected", [("inside", 10), ("after", 60)])
def test_killed_mid_add_leaves_whole_batches(tmp_path, moment, expected):
    script = tmp_path / "crash.py"
    script.write_text(CRASH.format(root=str(ROOT)))
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "m"), moment], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    mem = VisualMemory.load(tmp_path / "m")
    assert len(mem) == expected == len(mem.store)
    assert len(mem.audit_log()) == expected
    assert sorted(mem.ids.tolist()) == list(range(expected))
    assert mem.add(np.ones((1, 4)), [2]).tolist() == [expected]  # ids continue after the batch that landed


def test_attribution_explains_the_prediction():
    x, y = data()
    mem = VisualMemory(8)
    mem.add(x, y, class_names=["a", "b", "c", "d"], sources=[f"s{i}" for i in range(60)])
    for rule in RULES:
        result = mem.attribute(x[20], k=7, rule=rule)
        assert result.prediction == mem.classify(x[20:21], 7, rule).item()
        assert sum(n["share"] for n in result.neighbours) == pytest.approx(1.0)
        assert result.class_shares[result.prediction] == max(result.class_shares.values())
        assert result.class_shares[result.prediction] == pytest.approx(sum(n["share"] for n in result.deciding()))
        assert result.neighbours[0]["source"].startswith("s") and result.neighbours[0]["class_name"] in "abcd"


def test_pruning_counts_and_weights():
    x, y = data(n=50, duplicates=0)
    mem = VisualMemory(8)
    mem.add(x, y)
    k = 5
    counts = wrong_counts(mem, k)
    xn = torch.nn.functional.normalize(x, dim=1)
    sims = xn @ xn.T
    sims.fill_diagonal_(-2)
    brute = np.zeros(50, dtype=np.int64)
    for q in range(50):
        order = sorted(range(50), key=lambda i: (-float(sims[q, i]), i))[:k]
        for i in order:
            brute[i] += int(y[i] != y[q])
    np.testing.assert_array_equal(counts, brute)
    weights = soft_prune_weights(counts)
    np.testing.assert_allclose(weights, 1.75 / (1 + brute))
    assert mem.classify(x, k, "rank", sample_weights=weights).shape == (50,)
    threshold = max(int(counts.max()), 1)
    removed = hard_prune(mem, counts, threshold=threshold)
    assert set(removed.tolist()) == set(np.nonzero(brute >= threshold)[0].tolist()) and len(mem) == 50 - len(removed)
    assert "hard pruning" in mem.audit_log()[-1]["reason"]


def test_gpu_routing_and_cpu_fallback(monkeypatch):
    index = FlatIndex(4, "auto")
    assert index.use_gpu is False  # no faiss-gpu here: searches run on the CPU index
    with pytest.raises(RuntimeError, match="faiss-gpu"):
        monkeypatch.setattr("procedural_perception.visual_memory.index.gpu_count", lambda: 0)
        FlatIndex(4, "gpu")
    vectors = np.random.default_rng(0).normal(size=(GPU_MAX_K + 50, 4)).astype(np.float32)
    index.add(vectors, np.arange(len(vectors)))
    calls = []

    class FakeGpu:  # records what would have been searched on the GPU
        def search(self, queries, fetch):
            calls.append(fetch)
            return index.cpu.search(queries, fetch)

    index.use_gpu = True
    monkeypatch.setattr(index, "_gpu_index", lambda: FakeGpu())
    small = index.search(vectors[:3], 10)
    big = index.search(vectors[:3], GPU_MAX_K + 1)  # above faiss's GPU k limit: CPU
    assert calls == [10 + TIE_MARGIN]
    index.use_gpu = False
    assert np.array_equal(small[1], index.search(vectors[:3], 10)[1])
    assert np.array_equal(big[1], index.search(vectors[:3], GPU_MAX_K + 1)[1])
    index.remove([0])
    assert index._gpu_stale  # the GPU copy is rebuilt from the CPU master after a removal


def test_memory_command_build_classify_forget_audit(tmp_path, capsys):
    from procedural_perception.cli.memory import main

    folder = str(tmp_path / "m")
    assert main(["build", "--encoder", "rgb", "--data", "digits", "--out", folder, "--image-size", "16",
                 "--limit", "200", "--device", "cpu"]) == 0
    assert len(VisualMemory.load(folder)) == 200
    assert main(["classify", folder, "--data", "digits", "--limit", "20", "--show", "1", "--k", "5"]) == 0
    assert "top-1" in capsys.readouterr().out
    assert main(["forget", folder, "--ids", "3", "99999", "--reason", "test"]) == 2
    assert "99999" in capsys.readouterr().out and len(VisualMemory.load(folder)) == 200
    assert main(["forget", folder, "--sources", VisualMemory.load(folder).metadata([5])[0]["source"],
                 "--reason", "owner request"]) == 0
    memory = VisualMemory.load(folder)
    assert len(memory) == 199 and memory.audit_log()[-1]["reason"] == "owner request"
    memory.close()
    assert main(["audit", folder, "--queries", "digits", "--limit", "50", "--k", "5"]) == 0
    assert "non-private" in capsys.readouterr().out
    assert main(["build", "--encoder", "random_vit", "--data", "digits", "--out", folder]) == 2  # other encoder
