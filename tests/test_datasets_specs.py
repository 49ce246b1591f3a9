"""The paper's data-set specs on tiny fixtures in their native layouts: class names, split sizes, sources."""

from pathlib import Path

import dataset_fixtures as fx
import numpy as np
import pytest
import torch
import torchvision

from procedural_perception.datasets.labelled import load_labelled
from procedural_perception.datasets.paper import absent_paper_datasets, paper_datasets
from procedural_perception.datasets.specs import flowers102 as flowers_spec
from procedural_perception.visual_memory import VisualMemory


def names(data):
    return [Path(s).name for s in data.sources]


def test_flowers102_reads_the_mat_files_through_torchvision(tmp_path, capsys):
    expected = fx.flowers102(tmp_path / "flowers-102")
    # torchvision alone refuses the fixture: its md5 check of the .mat files (the reason for the subclass)
    with pytest.raises(RuntimeError, match="not found or corrupted"):
        torchvision.datasets.Flowers102(tmp_path, split="train", download=False)
    for root in (tmp_path, tmp_path / "flowers-102"):  # torchvision's parent folder, or the folder itself
        train = load_labelled(f"flowers102:{root}:train")
        assert len(train.classes) == 102 and train.classes[0] == "pink primrose" and train.classes[101] == "blackberry lily"
        assert train.targets.tolist() == expected["train"][0]
        assert names(train) == [f"image_{i:05d}.jpg" for i in expected["train"][1]]
        assert all(Path(s).is_file() for s in train.sources)
    assert "imagelabels.mat differs from the published file" in capsys.readouterr().err
    test = load_labelled(f"flowers102:{tmp_path}:test")
    assert test.targets.tolist() == expected["test"][0] and len(test.skipped) == 1  # image 7 is listed, not on disk
    assert "image_00007.jpg" in test.skipped[0][0] and "not found" in test.skipped[0][1]
    assert len(load_labelled(f"flowers102:{tmp_path}:val")) == 2
    with pytest.raises(ValueError, match="train, val, test"):
        load_labelled(f"flowers102:{tmp_path}:trainval")


def test_flowers102_is_silent_when_the_files_are_the_published_ones(tmp_path, capsys, monkeypatch):
    fx.flowers102(tmp_path / "oxford_flowers")  # any folder name
    from torchvision.datasets.utils import calculate_md5

    folder = tmp_path / "oxford_flowers"
    published = {k: (n, calculate_md5(str(folder / n))) for k, (n, _) in flowers_spec.Flowers102._file_dict.items()
                 if k != "image"}
    monkeypatch.setattr(flowers_spec.NativeFlowers102, "_file_dict", {**flowers_spec.Flowers102._file_dict, **published})
    assert len(load_labelled(f"flowers102:{folder}:train")) == 2
    assert "differs" not in capsys.readouterr().err


def test_food101_through_torchvision(tmp_path):
    split = fx.food101(tmp_path / "food-101")
    train = load_labelled(f"food101:{tmp_path}:train")
    assert train.classes == ["apple_pie", "baby_back_ribs"]
    assert len(train) == 5 and sorted(np.bincount(train.targets).tolist()) == [2, 3]
    by_source = dict(zip(names(train), train.targets.tolist(), strict=True))
    assert by_source["11.jpg"] == 1 and by_source["1.jpg"] == 0
    test = load_labelled(f"food101:{tmp_path / 'food-101'}:test")
    assert len(test) == sum(len(v) for v in split["test"].values()) == 2
    assert all(s.startswith(str(tmp_path / "food-101" / "images")) for s in test.sources)


def test_cub_tables(tmp_path):
    fx.cub(tmp_path / "CUB_200_2011")
    train = load_labelled(f"cub:{tmp_path}:train")
    assert train.classes == ["Black footed Albatross", "Laysan Albatross", "Sooty Albatross"]
    assert train.targets.tolist() == [0, 1, 1] and names(train) == ["Black_footed_Albatross_0001.jpg",
                                                                     "Laysan_Albatross_0003.jpg", "Laysan_Albatross_0004.jpg"]
    test = load_labelled(f"cub:{tmp_path / 'CUB_200_2011'}:test")
    assert test.targets.tolist() == [0, 2] and test.classes == train.classes
    (tmp_path / "CUB_200_2011" / "images.txt").write_text("1 a.jpg\nnot a row\n")
    with pytest.raises(ValueError, match="line 2"):
        load_labelled(f"cub:{tmp_path}:train")


def test_celeba_identity_and_attributes(tmp_path, capsys):
    rows = fx.celeba(tmp_path / "celeba")
    with pytest.raises(RuntimeError, match="not found or corrupted"):  # torchvision's own md5 check
        torchvision.datasets.CelebA(tmp_path, split="train", target_type="identity", download=False)
    train = load_labelled(f"celeba:{tmp_path}:train")  # identity is the default target
    assert train.classes == ["3", "7", "9", "12"]  # every identity of the file, so splits share one index
    assert names(train) == ["000001.jpg", "000002.jpg"] and train.targets.tolist() == [1, 0]
    test = load_labelled(f"celeba:{tmp_path / 'celeba'}:test:identity")
    assert test.targets.tolist() == [0, 3] and test.classes == train.classes
    assert len(load_labelled(f"celeba:{tmp_path}:val")) == 2 and len(load_labelled(f"celeba:{tmp_path}:all")) == len(rows)
    assert "differs from the published file" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"multi-label \(3 labels.*attr=5_o_Clock_Shadow.*identity"):
        load_labelled(f"celeba:{tmp_path}:train:attr")
    smiling = load_labelled(f"celeba:{tmp_path}:train:attr=smiling")
    assert smiling.classes == ["no Smiling", "Smiling"] and smiling.targets.tolist() == [1, 1]
    young = load_labelled(f"celeba:{tmp_path}:all:attr=2")  # an index works too
    assert young.classes == ["no Young", "Young"] and young.targets.tolist() == [0, 1, 1, 0, 1, 0]
    with pytest.raises(ValueError, match="no label 'Grinning'"):
        load_labelled(f"celeba:{tmp_path}:train:attr=Grinning")


@pytest.mark.parametrize("sorted_val", [True, False])
def test_imagenet_torchvision_layout(tmp_path, sorted_val):
    root = tmp_path / "imagenet"
    fx.imagenet_torchvision(root, sorted_val)
    train = load_labelled(f"imagenet:{root}:train")
    assert train.classes == ["tench, Tinca tinca", "goldfish, Carassius auratus", "great white shark, white shark, man-eater"]
    assert len(train) == 6 and train.targets.tolist() == [0, 0, 1, 1, 2, 2]
    val = load_labelled(f"imagenet:{root}:val")
    by_name = dict(zip(names(val), val.targets.tolist(), strict=True))
    assert by_name == {f"ILSVRC2012_val_{i:08d}.JPEG": [1, 0, 2, 1][i - 1] for i in range(1, 5)}
    if sorted_val:  # torchvision's own class reads the same fixture to the same labels
        reference = torchvision.datasets.ImageNet(str(root), split="val")
        assert sorted((Path(p).name, t) for p, t in reference.samples) == sorted(by_name.items())


def test_imagenet_kaggle_layout(tmp_path):
    root = tmp_path / "imagenet-object-localization-challenge"
    fx.imagenet_kaggle(root)
    train = load_labelled(f"imagenet:{root}:train")
    assert train.classes[0] == "tench, Tinca tinca" and len(train) == 6
    val = load_labelled(f"imagenet:{root}:val")
    assert names(val) == [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, 5)]
    assert val.targets.tolist() == [1, 0, 2, 1]
    with pytest.raises(ValueError, match="train, val"):
        load_labelled(f"imagenet:{root}:test")


def test_imagenet_plain_folders_and_a_missing_split(tmp_path, capsys):
    fx.imagenet_train(tmp_path / "in" / "train")
    train = load_labelled(f"imagenet:{tmp_path / 'in'}:train")
    assert train.classes == sorted(fx.IMAGENET_SYNSETS) and "WordNet ids" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="val not found"):
        load_labelled(f"imagenet:{tmp_path / 'in'}:val")


def test_inat21_species_and_higher_ranks(tmp_path):
    fx.inat21(tmp_path / "train_mini")
    fx.inat21(tmp_path / "2021_valid", per_species=(1, 1, 1))  # torchvision's folder name is found too
    species = load_labelled(f"inat21:{tmp_path}:train_mini")
    assert species.classes == ["Lumbricus terrestris", "Trichodes ornatus", "Rosa canina"]
    assert species.targets.tolist() == [0, 0, 1, 2, 2, 2] and len(species) == 6
    kingdom = load_labelled(f"inat21:{tmp_path}:train_mini:kingdom")
    assert kingdom.classes == ["Animalia", "Plantae"] and kingdom.targets.tolist() == [0, 0, 0, 1, 1, 1]
    assert kingdom.sources == species.sources  # same images, other labels
    phylum = load_labelled(f"inat21:{tmp_path}:val:phylum")
    assert phylum.classes == ["Annelida", "Arthropoda", "Tracheophyta"] and phylum.targets.tolist() == [0, 1, 2]
    reference = torchvision.datasets.INaturalist(str(tmp_path), version="2021_valid", target_type="phylum")
    assert sorted(reference[i][1] for i in range(len(reference))) == phylum.targets.tolist()
    with pytest.raises(ValueError, match="species, genus, family"):
        load_labelled(f"inat21:{tmp_path}:val:subspecies")


def test_sources_are_what_forget_removes(tmp_path):
    fx.cub(tmp_path / "CUB_200_2011")
    data = load_labelled(f"cub:{tmp_path}:train")
    memory = VisualMemory(4)
    memory.add(torch.randn(len(data), 4), data.targets, class_names=data.classes, sources=data.sources, dataset="cub")
    assert memory.forget_sources([data.sources[1]], "owner asked") and len(memory) == len(data) - 1


def test_paper_datasets_lists_the_present_and_names_the_absent(tmp_path):
    fx.flowers102(tmp_path / "flowers-102")
    fx.cub(tmp_path / "CUB_200_2011")
    (tmp_path / "medmnist").mkdir()
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "medmnist" / "bloodmnist.npz", **{f"{s}_{k}": v for s in ("train", "test") for k, v in
                                                           (("images", rng.integers(0, 255, (4, 8, 8, 3), dtype=np.uint8)),
                                                            ("labels", np.array([[0], [3], [7], [1]])))})
    found = paper_datasets(tmp_path)
    assert [name for name, _, _ in found] == ["flowers102", "cub", "bloodmnist"]
    for _, memory_spec, query_spec in found:
        assert len(load_labelled(memory_spec)) > 0 and len(load_labelled(query_spec)) > 0
    absent = dict(absent_paper_datasets(tmp_path))
    assert set(absent) == {"food101", "imagenet", "pathmnist", "dermamnist", "octmnist", "pneumoniamnist",
                           "breastmnist", "tissuemnist", "organamnist", "organcmnist", "organsmnist"}
    assert "meta/train.json" in absent["food101"] and "pathmnist.npz" in absent["pathmnist"]
    assert all("\n" not in reason for reason in absent.values())
