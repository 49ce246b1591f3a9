"""Labelled real images: folder layout with bad files and odd modes, .npz, built-in sets."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from procedural_perception.datasets.labelled import FASHION_MNIST_DIR, load_labelled, to_rgb
from procedural_perception.evaluations.embedding import eval_transform


def write_folder(root):
    cats, dogs, empty = root / "cat", root / "dog", root / "zebra"
    for d in (cats, dogs, empty):
        d.mkdir(parents=True)
    Image.new("RGB", (20, 16), (200, 10, 10)).save(cats / "rgb.png")
    Image.new("L", (20, 16), 128).save(cats / "grey.jpg")
    Image.new("RGBA", (20, 16), (0, 0, 0, 0)).save(cats / "transparent.png")  # fully transparent -> white
    palette = Image.new("P", (20, 16), 0)
    palette.putpalette([0, 255, 0] * 256)
    palette.save(cats / "palette.gif")
    Image.fromarray(np.full((16, 20), 65535, dtype=np.uint16)).save(dogs / "sixteen.png")  # 16-bit white
    Image.new("CMYK", (20, 16), (0, 255, 255, 0)).save(dogs / "cmyk.jpg")  # red in CMYK
    (dogs / "sub").mkdir()
    Image.new("RGB", (20, 16), (0, 0, 255)).save(dogs / "sub" / "nested.bmp")
    (dogs / "zero.png").write_bytes(b"")
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    (dogs / "truncated.jpg").write_bytes(buffer.getvalue()[:300])
    (dogs / "notes.txt").write_text("not an image")
    (dogs / "fake.png").write_text("not a png either")
    return root


def test_folder_skips_bad_files_converts_modes_and_reports_empty_classes(tmp_path, capsys):
    data = load_labelled(str(write_folder(tmp_path / "imgs")))
    assert data.classes == ["cat", "dog", "zebra"]
    assert len(data) == 7 and sorted(np.bincount(data.targets).tolist()) == [3, 4]
    reasons = {p.split("/")[-1]: r for p, r in data.skipped}
    assert set(reasons) == {"zero.png", "truncated.jpg", "notes.txt", "fake.png", "zebra"}
    assert "0 bytes" in reasons["zero.png"] and "decode" in reasons["truncated.jpg"]
    assert "extension" in reasons["notes.txt"] and "empty class folder" in reasons["zebra"]
    assert "zebra" in capsys.readouterr().err
    by_name = {s.split("/")[-1]: i for i, s in enumerate(data.sources)}
    pixel = {name: data[i][0][:, 0, 0] for name, i in by_name.items()}
    assert all(data[i][0].shape == (3, 16, 20) and data[i][0].dtype == torch.float32 for i in range(len(data)))
    torch.testing.assert_close(pixel["transparent.png"], torch.ones(3))
    torch.testing.assert_close(pixel["sixteen.png"], torch.ones(3))
    torch.testing.assert_close(pixel["palette.gif"], torch.tensor([0.0, 1.0, 0.0]))
    assert pixel["cmyk.jpg"][0] > 0.9 and pixel["cmyk.jpg"][1] < 0.1
    assert torch.allclose(pixel["grey.jpg"], pixel["grey.jpg"][0].expand(3))
    assert data.targets[by_name["nested.bmp"]] == 1


def test_folder_strict_mode_and_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="strict mode"):
        load_labelled(str(write_folder(tmp_path / "imgs")), strict=True)
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(ValueError, match="ImageFolder layout"):
        load_labelled(str(tmp_path / "flat"))
    (tmp_path / "bad" / "c").mkdir(parents=True)
    (tmp_path / "bad" / "c" / "x.png").write_bytes(b"")
    with pytest.raises(ValueError, match="No readable images"):
        load_labelled(str(tmp_path / "bad"))
    with pytest.raises(ValueError, match="Unknown labelled data") as unknown:
        load_labelled("imagenet21k:/data")
    assert all(prefix in str(unknown.value) for prefix in ("flowers102", "celeba", "inat21", "<file>.npz", "<folder>"))
    with pytest.raises(ValueError, match=r"imagenet: expected imagenet:<root>:train\|val"):
        load_labelled("imagenet")


def test_transform_gets_a_pil_image(tmp_path):
    data = load_labelled("digits", transform=eval_transform(32))
    image, label = data[5]
    assert image.shape == (3, 32, 32) and label == int(data.targets[5])
    assert len(data) == 1797 and data.classes == [str(i) for i in range(10)]


def test_npz_medmnist_layout(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "custom.npz"  # not a published MedMNIST name: classes are numbered
    np.savez(path, train_images=rng.integers(0, 255, (12, 28, 28, 3), dtype=np.uint8),
             train_labels=rng.integers(0, 4, (12, 1)), test_images=rng.integers(0, 255, (5, 28, 28), dtype=np.uint8),
             test_labels=np.array([[0], [1], [2], [1], [0]]))
    train = load_labelled(f"{path}:train")
    assert len(train) == 12 and train[0][0].shape == (3, 28, 28) and train.sources[3] == f"{path}:train[3]"
    test = load_labelled(f"{path}:test")
    assert test.targets.tolist() == [0, 1, 2, 1, 0] and test.classes == ["0", "1", "2"]
    with pytest.raises(KeyError, match="val_images"):
        load_labelled(f"{path}:val")
    multi = tmp_path / "chest.npz"
    np.savez(multi, train_images=np.zeros((3, 8, 8), np.uint8), train_labels=np.zeros((3, 14)))
    with pytest.raises(ValueError, match="multi-label"):
        load_labelled(f"{multi}:train")


def test_built_in_sets():
    faces = load_labelled("lfw_subset")
    assert len(faces) == 200 and faces.classes == ["face", "non_face"] and faces.targets[:100].sum() == 0
    assert faces[0][0].shape == (3, 25, 25)
    assert FASHION_MNIST_DIR.exists(), "dataset-fashion-mnist is not installed: run `make system`"
    test = load_labelled("fashion_mnist:test")
    assert len(test) == 10000 and test.classes[9] == "Ankle boot" and test[0][0].shape == (3, 28, 28)
    small = test.subset(100, seed=1)
    assert len(small) == 100 and small.subset(100) is small
    assert small.sources == test.subset(100, seed=1).sources  # deterministic


def test_to_rgb_modes():
    assert to_rgb(Image.new("1", (2, 2), 1)).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(Image.new("LA", (2, 2), (0, 0))).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(Image.fromarray(np.full((2, 2), 0.5, np.float32), "F")).getpixel((0, 0)) == (128, 128, 128)
    assert to_rgb(Image.new("I", (2, 2), 65535)).getpixel((0, 0)) == (255, 255, 255)
