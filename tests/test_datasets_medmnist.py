"""MedMNIST .npz files: class names from the medmnist package, multi-label modes, damaged files."""

import importlib.util

import numpy as np
import pytest

from procedural_perception.datasets.labelled import load_labelled


def write_npz(path, labels_by_split, channels=1):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, labels in labels_by_split.items():
        labels = np.asarray(labels)
        shape = (len(labels), 8, 8) + ((3,) if channels == 3 else ())
        arrays[f"{split}_images"] = rng.integers(0, 255, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = labels.reshape(len(labels), -1)
    np.savez(path, **arrays)
    return path


def test_medmnist_is_installed_for_the_class_names():
    assert importlib.util.find_spec("medmnist") is not None, "pip install medmnist (a dependency of the project)"


def test_class_names_come_from_medmnist_info(tmp_path):
    path = write_npz(tmp_path / "bloodmnist_224.npz", {"train": [0, 7, 3], "test": [1, 1]}, channels=3)
    train = load_labelled(f"{path}:train")
    assert len(train.classes) == 8 and train.classes[0] == "basophil" and train.classes[7] == "platelet"
    assert train.targets.tolist() == [0, 7, 3] and train.sources == [f"{path}:train[{i}]" for i in range(3)]
    test = load_labelled(f"{path}:test")
    assert test.classes == train.classes  # every class named even when a split lacks it
    renamed = write_npz(tmp_path / "my_blood.npz", {"train": [0, 7, 3]})
    assert load_labelled(f"{renamed}:train").classes == [str(i) for i in range(8)]


def test_a_multi_label_set_is_refused_without_a_mode(tmp_path):
    labels = np.zeros((5, 14), np.int64)
    labels[0, 12] = 1  # pleural only
    labels[1, [0, 12]] = 1  # two findings
    labels[3, 2] = 1  # effusion only
    path = write_npz(tmp_path / "chestmnist.npz", {"train": labels})
    with pytest.raises(ValueError, match=r"multi-label \(14 labels.*:train:label=atelectasis.*:train:exclusive"):
        load_labelled(f"{path}:train")
    pleural = load_labelled(f"{path}:train:label=pleural")
    assert pleural.classes == ["no pleural", "pleural"] and pleural.targets.tolist() == [1, 1, 0, 0, 0]
    assert load_labelled(f"{path}:train:label=2").targets.tolist() == [0, 0, 0, 1, 0]  # by index
    exclusive = load_labelled(f"{path}:train:exclusive")
    assert exclusive.classes[12] == "pleural" and exclusive.targets.tolist() == [12, 2]
    assert exclusive.sources == [f"{path}:train[0]", f"{path}:train[3]"]  # rows of the file, for forget
    assert len(exclusive.skipped) == 3 and "2 positive labels" in dict(exclusive.skipped)[f"{path}:train[1]"]
    with pytest.raises(ValueError, match="no label 'fracture'"):
        load_labelled(f"{path}:train:label=fracture")
    single = write_npz(tmp_path / "pathmnist.npz", {"train": [0, 1]})
    with pytest.raises(ValueError, match="single-label"):
        load_labelled(f"{single}:train:exclusive")


def test_damaged_npz_files_are_refused_with_what_is_wrong(tmp_path):
    missing = tmp_path / "missing_keys.npz"
    np.savez(missing, train_images=np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(KeyError, match="no train_images/train_labels.*keys: train_images"):
        load_labelled(f"{missing}:train")
    (tmp_path / "truncated.npz").write_bytes(missing.read_bytes()[:40])
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_labelled(f"{tmp_path / 'truncated.npz'}:train")
    mismatched = tmp_path / "mismatched.npz"
    np.savez(mismatched, train_images=np.zeros((3, 8, 8), np.uint8), train_labels=np.zeros((2, 1)))
    with pytest.raises(ValueError, match="3 images but 2 label rows"):
        load_labelled(f"{mismatched}:train")
    negative = tmp_path / "negative.npz"
    np.savez(negative, train_images=np.zeros((2, 8, 8), np.uint8), train_labels=np.array([[0], [-1]]))
    with pytest.raises(ValueError, match="non-negative integers"):
        load_labelled(f"{negative}:train")
    pickled = tmp_path / "objects.npz"
    np.savez(pickled, train_images=np.array([None, None], dtype=object), train_labels=np.zeros((2, 1)))
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_labelled(f"{pickled}:train")
    volume = tmp_path / "organmnist3d.npz"
    np.savez(volume, train_images=np.zeros((2, 8, 8, 8), np.uint8), train_labels=np.zeros((2, 1)))
    with pytest.raises(ValueError, match="3-D volumes"):
        load_labelled(f"{volume}:train")
