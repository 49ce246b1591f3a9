"""Forgetting without trace, forgotten samples staying forgotten, and a memory that knows its encoder.

The erasure test scans the raw bytes of every file in the memory folder (database, write-ahead log,
shared memory, index snapshot, anything else) after ``forget``. ``BACKENDS`` maps a backend name to
a factory ``(dim, folder) -> VisualMemory``; other exact or approximate backends join by adding
an entry.
"""

import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch

from procedural_perception.visual_memory import VisualMemory
from procedural_perception.visual_memory.encoder_identity import (
    EncoderMismatchError,
    check_encoder,
    encoder_identity,
    weights_sha256,
)
from procedural_perception.visual_memory.store import DamagedMemoryError


def ivf(dim, folder):
    centroids = np.random.default_rng(7).normal(size=(4, dim)).astype(np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    return VisualMemory(dim, path=folder, device="cpu", backend="ivf", backend_options={"centroids": centroids})


# Milvus is not here: deleted rows stay in its segment files until compaction (backends/milvus.py).
BACKENDS = {"flat": lambda dim, folder: VisualMemory(dim, path=folder, device="cpu"), "ivf": ivf}


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """Raw content of every file under ``folder`` (recursively), by relative name."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def traces(folder: Path, needles: dict[str, bytes]) -> list[str]:
    """``what in which file`` for every needle found in any file of ``folder``."""
    return [f"{what} in {name}" for name, data in folder_bytes(folder).items()
            for what, needle in needles.items() if needle in data]


def secret_sample(rng, dim):
    vector = rng.normal(size=(1, dim)).astype(np.float32)
    stored = (vector / np.linalg.norm(vector)).astype(np.float32)  # what the memory stores
    return vector, stored


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize("how", ["source", "id"])
def test_nothing_of_a_forgotten_sample_remains_in_any_file(tmp_path, backend, how):
    dim, rng = 16, np.random.default_rng(0)
    folder = tmp_path / "m"
    memory = BACKENDS[backend](dim, folder)
    reader = VisualMemory.load(folder, device="cpu")  # another handle open throughout, as a classify service
    memory.add(rng.normal(size=(40, dim)), rng.integers(0, 3, 40), class_names=["cat", "dog", "owl"],
               sources=[f"/data/public/{i}.png" for i in range(40)], dataset="public-set")
    memory.save()
    vector, stored = secret_sample(rng, dim)
    source = "/data/private/Ünïcode-holiday-photo-7f3a.png"
    [secret_id] = memory.add(vector, [3], class_names={3: "rare-class-zebrafinch"}, sources=[source],
                             dataset="private-set-2f9c", reason="user upload")
    memory.add(rng.normal(size=(20, dim)), rng.integers(0, 3, 20), sources=[f"/data/late/{i}.png" for i in range(20)])
    memory.save()  # the snapshot now holds the secret vector too
    needles = {"vector": stored.tobytes(), "source": source.encode("utf-8"),
               "dataset": b"private-set-2f9c", "class name": b"rare-class-zebrafinch"}
    assert traces(folder, needles), "the scan must see the sample before it is forgotten"
    assert reader.query(stored, 1)[1].item() == secret_id
    if how == "source":
        memory.forget_sources([source], reason="owner asked")
    else:
        memory.remove([secret_id], reason="owner asked")
    memory.save()
    assert traces(folder, needles) == []
    assert int(secret_id) not in reader.query(stored, 5)[1][0].tolist()  # the open reader re-checked the generation
    log = memory.audit_log()
    assert [r["action"] for r in log if r["sample_id"] == secret_id] == ["add", "remove"]
    assert {r["source_hash"] for r in log if r["sample_id"] == secret_id} == {memory.store.keyed_hash(source)}
    assert memory.store.erased_sources([source, "/data/public/1.png"]) == {source}
    assert len(memory) == 60 and VisualMemory.load(folder, device="cpu").ids.tolist() == memory.ids.tolist()
    reader.close()


def test_keyed_hash_is_per_memory_and_answers_was_this_file_erased(tmp_path):
    a, b = VisualMemory(4, path=tmp_path / "a"), VisualMemory(4, path=tmp_path / "b")
    h = a.store.keyed_hash("x.png")
    assert h != b.store.keyed_hash("x.png") and h == VisualMemory.load(tmp_path / "a").store.keyed_hash("x.png")
    assert len(h) == 64 and "x.png" not in h


def test_adding_is_idempotent_and_forgotten_sources_stay_forgotten(tmp_path):
    dim, rng = 8, np.random.default_rng(1)
    x = rng.normal(size=(10, dim))
    sources = [f"s{i}.png" for i in range(10)]
    memory = VisualMemory(dim, path=tmp_path / "m")
    assert len(memory.add(x, np.zeros(10, int), sources=sources)) == 10
    again = memory.add(x, np.zeros(10, int), sources=sources)
    assert len(again) == 0 and memory.last_add.present == sources and len(memory) == 10
    twice = memory.add(np.ones((2, dim)), [1, 1], sources=["new.png", "new.png"])  # repeated within one batch
    assert len(twice) == 1 and memory.last_add.present == ["new.png"]
    memory.forget_sources(["s3.png"], reason="withdrawn")
    refused = memory.add(x, np.zeros(10, int), sources=sources)
    assert len(refused) == 0 and memory.last_add.erased == ["s3.png"] and len(memory) == 10
    assert "s3.png" not in {r["source"] for r in memory.metadata(memory.ids)}
    back = memory.add(x[3:4], [0], sources=["s3.png"], reason="owner re-uploaded it", allow_erased=True)
    assert len(back) == 1 and memory.last_add.readded_erased == ["s3.png"]
    assert memory.audit_log()[-1]["action"] == "add_erased" and memory.audit_log()[-1]["reason"] == "owner re-uploaded it"
    assert len(memory.add(np.ones((3, dim)), [2, 2, 2])) == 3  # samples without a source are never deduplicated


def test_old_memories_are_migrated_to_keyed_hashes(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    db = sqlite3.connect(folder / "memory.sqlite")
    db.executescript("""
        CREATE TABLE samples (id INTEGER PRIMARY KEY, label INTEGER NOT NULL, source TEXT, dataset TEXT,
            added_at REAL NOT NULL, vector BLOB NOT NULL);
        CREATE TABLE classes (label INTEGER PRIMARY KEY, name TEXT NOT NULL);
        CREATE TABLE audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, action TEXT NOT NULL,
            sample_id INTEGER NOT NULL, label INTEGER, source TEXT, reason TEXT);
        CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'append-only'); END;
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('dim', '2'), ('generation', '2'), ('next_id', '2');
        INSERT INTO samples VALUES (1, 0, 'kept-file.png', NULL, 0, X'0000803F00000000');
        INSERT INTO audit (time, action, sample_id, label, source, reason) VALUES
            (0, 'add', 0, 0, 'old-forgotten-file.png', 'b'), (0, 'add', 1, 0, 'kept-file.png', 'b'),
            (1, 'remove', 0, 0, 'old-forgotten-file.png', 'gone');
    """)
    db.close()
    memory = VisualMemory.load(folder)
    assert traces(folder, {"source": b"old-forgotten-file.png"}) == []
    assert memory.store.erased_sources(["old-forgotten-file.png", "kept-file.png"]) == {"old-forgotten-file.png"}
    assert memory.audit_log()[1]["source_hash"] == memory.store.keyed_hash("kept-file.png")
    assert len(memory.add(np.ones((1, 2)), [0], sources=["old-forgotten-file.png"])) == 0


def test_damaged_database_is_named_with_the_recovery_command_and_left_untouched(tmp_path):
    folder = tmp_path / "m"
    VisualMemory(4, path=folder).add(np.ones((3, 4)), [0, 1, 2])
    db = folder / "memory.sqlite"
    damaged = b"this is no database" + db.read_bytes()[19:]
    db.write_bytes(damaged)
    with pytest.raises(DamagedMemoryError, match=r"memory\.sqlite.*\.recover.*check") as err:
        VisualMemory.load(folder)
    assert str(db) in str(err.value) and "Nothing was written" in str(err.value)
    assert db.read_bytes() == damaged


def test_encoder_identity_names_both_weights():
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    assert weights_sha256(a) == weights_sha256(a) != weights_sha256(b)
    stored = encoder_identity("rgb", a, 32, None)
    check_encoder(stored, encoder_identity("rgb", a, 32, None), "m")
    with pytest.raises(EncoderMismatchError, match=stored["encoder_sha256"][:16]) as err:
        check_encoder(stored, encoder_identity("rgb", b, 32, None), "m")
    assert weights_sha256(b)[:16] in str(err.value)
    with pytest.raises(EncoderMismatchError, match="image size 64"):
        check_encoder(stored, encoder_identity("rgb", a, 64, None), "m")


def said(capsys) -> str:
    """Printed output with Rich's line wrapping undone."""
    return " ".join(capsys.readouterr().out.split())


def tiny_checkpoint(path, seed):
    """A DINO checkpoint of a tiny ViT as Lightning writes one; ``seed`` picks its weights."""
    import lightning

    from lightning_modules.dino import DINO

    torch.manual_seed(seed)
    module = DINO(arch="vit_tiny_patch16_224", embed_dim=32, depth=1, num_heads=2, out_dim=64, head_hidden_dim=32,
                  head_bottleneck_dim=16, global_crop_size=64, local_crop_size=32, n_local_crops=2)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "pytorch-lightning_version": lightning.__version__}, path)


@pytest.mark.slow
def test_memory_command_knows_its_encoder_and_rebuilds_idempotently(tmp_path, capsys, monkeypatch):
    from procedural_perception.cli.memory import main

    (tmp_path / "run").mkdir()
    tiny_checkpoint(tmp_path / "run" / "last.ckpt", seed=0)
    monkeypatch.chdir(tmp_path / "run")
    build = ["build", "--encoder", "last.ckpt", "--data", "digits", "--out", str(tmp_path / "m"), "--image-size", "64",
             "--limit", "40", "--device", "cpu"]
    assert main(build) == 0
    memory = VisualMemory.load(tmp_path / "m")
    assert memory.info()["encoder"] == str((tmp_path / "run" / "last.ckpt").resolve()) and len(memory) == 40
    forgotten = memory.metadata([7])[0]["source"]
    memory.close()
    assert main(build) == 0 and "added 0 samples" in said(capsys)  # re-running adds nothing
    assert main(["forget", str(tmp_path / "m"), "--sources", forgotten, "--reason", "owner"]) == 0
    assert traces(tmp_path / "m", {"source": forgotten.encode()}) == []
    assert main(build) == 0 and "refused 1 forgotten" in said(capsys)
    assert len(VisualMemory.load(tmp_path / "m")) == 39
    monkeypatch.chdir(tmp_path)  # classify from another folder: the stored path is absolute
    query = ["classify", str(tmp_path / "m"), "--data", "digits", "--limit", "5", "--show", "0", "--k", "3"]
    assert main(query) == 0
    tiny_checkpoint(tmp_path / "run" / "last.ckpt", seed=1)  # a resumed run rewrote last.ckpt
    capsys.readouterr()
    assert main(query) == 2
    out = said(capsys)
    assert "last.ckpt" in out and "weights sha256" in out and "cannot be mixed" in out
    assert main(build[:2] + [str(tmp_path / "run" / "last.ckpt")] + build[3:]) == 2
    assert "cannot be mixed" in said(capsys)
