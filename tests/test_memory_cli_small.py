"""`make memory` on a few-shot memory (2 classes x 6 images): k values above the memory size are used
as its size with one warning line, several k and per-class accuracy in `classify`, `export` to
.npz / .safetensors, and `build` at the encoder's own input size."""

import json

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open

import procedural_perception.cli.memory as memory_cli
from lightning_modules.encoders import build_encoder
from procedural_perception.visual_memory import VisualMemory


def _folder(root, seed):
    rng = np.random.default_rng(seed)
    for name, colour in (("cats", (200, 60, 60)), ("dogs", (60, 60, 200))):
        (root / name).mkdir(parents=True)
        for i in range(6):
            pixels = np.clip(np.array(colour) + rng.normal(0, 30, (20, 20, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return str(root)


def _text(capsys) -> str:
    """The printed text with Rich's line wrapping undone."""
    return " ".join(capsys.readouterr().out.split())


@pytest.fixture
def small_memory(tmp_path, capsys):
    folder = str(tmp_path / "memory")
    assert memory_cli.main(["build", "--encoder", "rgb", "--data", _folder(tmp_path / "mem", 0), "--out", folder,
                            "--image-size", "16", "--device", "cpu"]) == 0
    capsys.readouterr()
    return folder, _folder(tmp_path / "query", 1)


def test_classify_with_the_default_k_uses_the_memory_size_with_one_warning(small_memory, capsys):
    folder, query = small_memory
    assert memory_cli.main(["classify", folder, "--data", query, "--show", "0", "--device", "cpu"]) == 0
    out = _text(capsys)
    assert out.count("warning:") == 1
    assert "the memory holds 12 samples: k = 20 exceeds it and is evaluated at k = 12; kept k = 12" in out
    assert "top-1 100.00% over 12 images (dino vote, k = 12)" in out
    assert "per-class top-1 (dino vote, k = 12)" in out
    assert "cats │ 6 │ 100.00" in out and "dogs │ 6 │ 100.00" in out


def test_classify_reports_every_k_given(small_memory, capsys):
    folder, query = small_memory
    assert memory_cli.main(["classify", folder, "--data", query, "--show", "0", "--k", "3,5", "--device", "cpu"]) == 0
    out = _text(capsys)
    assert "warning" not in out
    assert "(dino vote, k = 3)" in out and "(dino vote, k = 5)" in out and "per-class top-1 (dino vote, k = 5)" in out


def test_a_bad_k_list_is_a_usage_error(small_memory, capsys):
    folder, query = small_memory
    with pytest.raises(SystemExit):
        memory_cli.main(["classify", folder, "--data", query, "--k", "5,zero"])
    assert "expected k values separated by commas" in capsys.readouterr().err


def test_audit_above_the_memory_size_runs_at_its_size(small_memory, capsys):
    folder, query = small_memory
    assert memory_cli.main(["audit", folder, "--queries", query, "--device", "cpu"]) == 0
    out = _text(capsys)
    assert out.count("warning:") == 1 and "k = 20 exceeds it and is used as k = 12" in out
    assert "(dino vote, k = 12)" in out


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_export_writes_what_the_memory_holds(small_memory, tmp_path, capsys, suffix):
    folder, _ = small_memory
    memory = VisualMemory.load(folder)
    memory.remove([3], reason="test")  # ids stay the memory's own after a removal
    memory.save()
    ids, labels, vectors = memory.store.all_samples()
    sources = [row["source"] for row in memory.metadata(ids.tolist())]
    memory.close()
    out = tmp_path / f"exported{suffix}"
    assert memory_cli.main(["export", folder, "--out", str(out)]) == 0
    if suffix == ".npz":
        data = np.load(out)  # no pickle needed
        got = {k: data[k] for k in ("embeddings", "labels", "ids")}
        names, got_sources = data["class_names"].tolist(), data["sources"].tolist()
        info = json.loads(str(data["info"]))
    else:
        with safe_open(out, "np") as f:
            got = {k: f.get_tensor(k) for k in ("embeddings", "labels", "ids")}
            meta = f.metadata()
        names, got_sources, info = (json.loads(meta[k]) for k in ("class_names", "sources", "info"))
    assert got["embeddings"].dtype == np.float32 and got["embeddings"].shape == (11, vectors.shape[1])
    assert np.array_equal(got["embeddings"], vectors) and np.array_equal(got["labels"], labels)
    assert got["ids"].tolist() == [0, 1, 2, *range(4, 12)]
    assert names == ["cats", "dogs"] and got_sources == sources and info["encoder"] == "rgb"


def test_export_to_an_unknown_format_names_the_suffixes(small_memory, tmp_path, capsys):
    folder, _ = small_memory
    assert memory_cli.main(["export", folder, "--out", str(tmp_path / "m.csv")]) == 2
    assert "must end in .npz or .safetensors" in _text(capsys)
    assert not (tmp_path / "m.csv").exists()


def test_build_embeds_at_the_encoders_own_size_by_default(tmp_path, monkeypatch):
    def encoder_trained_at_32(spec):
        encoder = build_encoder(spec)
        encoder.image_size = 32  # as a 64 px / 32 px checkpoint records its training size
        return encoder

    monkeypatch.setattr(memory_cli, "build_encoder", encoder_trained_at_32)
    folder = tmp_path / "memory"
    assert memory_cli.main(["build", "--encoder", "rgb", "--data", _folder(tmp_path / "mem", 0), "--out", str(folder),
                            "--device", "cpu"]) == 0
    assert VisualMemory.load(folder).info()["image_size"] == 32
