"""Tiny copies of the paper's data sets in their native layouts (the files each real data set has).

Each writer returns what the test should expect. Images are 12 x 10 solid colours: small, valid
JPEGs, so the checks of the loaders run on real files.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def jpeg(path: Path, value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), (value, 255 - value, 40)).save(path, "JPEG")
    return path


def flowers102(folder: Path) -> dict:
    """Oxford Flowers-102: jpg/image_%05d.jpg, imagelabels.mat (1-based labels), setid.mat."""
    from scipy.io import savemat

    labels = [1, 1, 2, 2, 3, 102, 5]  # image ids 1..7
    for image_id in range(1, len(labels) + 1):
        jpeg(folder / "jpg" / f"image_{image_id:05d}.jpg", 20 * image_id)
    savemat(folder / "imagelabels.mat", {"labels": np.array([labels], dtype=np.uint8)})
    savemat(folder / "setid.mat", {"trnid": np.array([[1, 3]], dtype=np.uint16), "valid": np.array([[2, 4]], dtype=np.uint16),
                                   "tstid": np.array([[5, 6, 7]], dtype=np.uint16)})
    (folder / "jpg" / "image_00007.jpg").unlink()  # listed by setid.mat, missing on disk
    return {"train": ([0, 1], [1, 3]), "val": ([0, 1], [2, 4]), "test": ([2, 101], [5, 6])}


def food101(folder: Path) -> dict:
    """Food-101: images/<class>/<id>.jpg and meta/{train,test}.json (class -> ["<class>/<id>"])."""
    split = {"train": {"baby_back_ribs": ["baby_back_ribs/11", "baby_back_ribs/12"], "apple_pie": ["apple_pie/1", "apple_pie/2", "apple_pie/3"]},
             "test": {"apple_pie": ["apple_pie/4"], "baby_back_ribs": ["baby_back_ribs/13"]}}
    for table in split.values():
        for names in table.values():
            for i, name in enumerate(names):
                jpeg(folder / "images" / f"{name}.jpg", 30 * i)
    (folder / "meta").mkdir(parents=True)
    for name, table in split.items():
        (folder / "meta" / f"{name}.json").write_text(json.dumps(table))
    (folder / "meta" / "classes.txt").write_text("apple_pie\nbaby_back_ribs\n")
    return split


def cub(folder: Path) -> None:
    """CUB-200-2011: images/<NNN.Name>/..., images.txt, image_class_labels.txt, train_test_split.txt, classes.txt."""
    classes = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
    rows = [(1, 0, 1), (2, 0, 0), (3, 1, 1), (4, 1, 1), (5, 2, 0)]  # (image id, class index, is train)
    images, labels, splits = [], [], []
    for image_id, c, is_train in rows:
        relative = f"{classes[c]}/{classes[c].split('.')[1]}_{image_id:04d}.jpg"
        jpeg(folder / "images" / relative, 40 * image_id)
        images.append(f"{image_id} {relative}")
        labels.append(f"{image_id} {c + 1}")
        splits.append(f"{image_id} {is_train}")
    (folder / "images.txt").write_text("\n".join(images) + "\n")
    (folder / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (folder / "train_test_split.txt").write_text("\n".join(splits) + "\n")
    (folder / "classes.txt").write_text("\n".join(f"{i + 1} {c}" for i, c in enumerate(classes)) + "\n")


CELEBA_ATTRS = ["5_o_Clock_Shadow", "Smiling", "Young"]


def celeba(folder: Path) -> list[tuple[str, int, int, list[int]]]:
    """CelebA: img_align_celeba/*.jpg and the five text files torchvision reads. Every split has two or more
    images: torchvision 0.29's CelebA fails on a split of one (``iteration over a 0-d tensor``)."""
    rows = [("000001.jpg", 0, 7, [1, 1, -1]), ("000002.jpg", 0, 3, [-1, 1, 1]), ("000003.jpg", 1, 7, [-1, -1, 1]),
            ("000004.jpg", 1, 9, [1, -1, -1]), ("000005.jpg", 2, 3, [-1, 1, 1]), ("000006.jpg", 2, 12, [-1, -1, -1])]
    for name, *_ in rows:
        jpeg(folder / "img_align_celeba" / name)
    count = f"{len(rows)}\n"
    (folder / "list_eval_partition.txt").write_text("".join(f"{n} {s}\n" for n, s, _, _ in rows))
    (folder / "identity_CelebA.txt").write_text("".join(f"{n} {i}\n" for n, _, i, _ in rows))
    (folder / "list_attr_celeba.txt").write_text(
        count + " ".join(CELEBA_ATTRS) + " \n" + "".join(f"{n} " + " ".join(f"{a:2d}" for a in attrs) + "\n"
                                                           for n, _, _, attrs in rows))
    (folder / "list_bbox_celeba.txt").write_text(
        count + "image_id x_1 y_1 width height\n" + "".join(f"{n} 1 2 3 4\n" for n, *_ in rows))
    landmarks = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y"
    (folder / "list_landmarks_align_celeba.txt").write_text(
        count + landmarks + "\n" + "".join(f"{n} " + " ".join(["5"] * 10) + "\n" for n, *_ in rows))
    return rows


IMAGENET_SYNSETS = {"n01440764": ("tench", "Tinca tinca"), "n01443537": ("goldfish", "Carassius auratus"),
                    "n01484850": ("great white shark", "white shark", "man-eater")}
IMAGENET_VAL = ["n01443537", "n01440764", "n01484850", "n01443537"]  # labels of ILSVRC2012_val_00000001..4


def imagenet_train(folder: Path) -> None:
    for wnid in IMAGENET_SYNSETS:
        for i in range(2):
            jpeg(folder / wnid / f"{wnid}_{i}.JPEG", 50 * i)


def imagenet_torchvision(root: Path, sorted_val: bool) -> None:
    """torchvision's layout: meta.bin (as parse_devkit_archive writes it), train/<wnid>/, val/."""
    root.mkdir(parents=True)
    torch.save((IMAGENET_SYNSETS, IMAGENET_VAL), root / "meta.bin")
    imagenet_train(root / "train")
    for i, wnid in enumerate(IMAGENET_VAL, 1):
        jpeg(root / "val" / (wnid if sorted_val else "") / f"ILSVRC2012_val_{i:08d}.JPEG")


def imagenet_kaggle(root: Path) -> None:
    """Kaggle's layout: LOC_synset_mapping.txt, LOC_val_solution.csv, ILSVRC/Data/CLS-LOC/{train,val}."""
    data = root / "ILSVRC" / "Data" / "CLS-LOC"
    imagenet_train(data / "train")
    root.joinpath("LOC_synset_mapping.txt").write_text(
        "".join(f"{w} {', '.join(names)}\n" for w, names in IMAGENET_SYNSETS.items()))
    with (root / "LOC_val_solution.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ImageId", "PredictionString"])
        for i in reversed(range(1, len(IMAGENET_VAL) + 1)):  # the published file is not in id order
            wnid = IMAGENET_VAL[i - 1]
            writer.writerow([f"ILSVRC2012_val_{i:08d}", f"{wnid} 10 20 30 40 {wnid} 1 2 3 4 "])
            jpeg(data / "val" / f"ILSVRC2012_val_{i:08d}.JPEG")


INAT_SPECIES = ["00000_Animalia_Annelida_Clitellata_Haplotaxida_Lumbricidae_Lumbricus_terrestris",
                "00001_Animalia_Arthropoda_Insecta_Coleoptera_Cleridae_Trichodes_ornatus",
                "00002_Plantae_Tracheophyta_Magnoliopsida_Rosales_Rosaceae_Rosa_canina"]


def inat21(split_folder: Path, per_species: tuple[int, ...] = (2, 1, 3)) -> None:
    """iNat 2021: one folder per species, named with the id and the seven taxonomic ranks."""
    for species, count in zip(INAT_SPECIES, per_species, strict=True):
        for i in range(count):
            jpeg(split_folder / species / f"{i:04x}-photo.jpg", 60 * i)
