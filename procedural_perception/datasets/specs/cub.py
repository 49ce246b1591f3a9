"""CUB-200-2011 (no torchvision class): ``cub:<root>:train|test``.

Native layout of ``CUB_200_2011/``: ``images/<NNN.Class_name>/<file>.jpg``, ``images.txt``
(``<image id> <relative path>``), ``image_class_labels.txt`` (``<image id> <class id>``, 1-based),
``train_test_split.txt`` (``<image id> <1 = train, 0 = test>``; 5,994 / 5,794 images) and
``classes.txt`` (``<class id> <NNN.Class_name>``). ``<root>`` is that folder or its parent.
Class names drop the number and the underscores: ``001.Black_footed_Albatross`` ->
``Black footed Albatross``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from procedural_perception.datasets.image_files import printable
from procedural_perception.datasets.labelled_images import LabelledImages, labelled_files
from procedural_perception.datasets.specs.base import LabelledSpec, choose, existing_folder, parts

USAGE = "cub:<root>:train|test"
TABLES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")
LAYOUT = "CUB_200_2011/ with images/, " + ", ".join(TABLES)


def id_table(path: Path) -> dict[int, str]:
    """``<id> <value>`` lines -> ``{id: value}``; a malformed line is an error naming file and line."""
    table = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        key, _, value = line.strip().partition(" ")
        if not key.isdigit() or not value.strip():
            raise ValueError(f"cub: {path} line {number} is not '<id> <value>': {line[:80]!r}")
        table[int(key)] = value.strip()
    return table


def class_name(folder_name: str) -> str:
    return folder_name.split(".", 1)[-1].replace("_", " ")


def load_cub(argument: str, transform: Callable | None, strict: bool, report: Path | None) -> LabelledImages:
    root, split = parts(argument, USAGE, 2)
    split = choose(split, ("train", "test"), "cub split", USAGE)
    folder = existing_folder(root, ("CUB_200_2011",), "cub", LAYOUT)
    missing = [n for n in (*TABLES, "images") if not (folder / n).exists()]
    if missing:
        raise FileNotFoundError(f"cub: {folder} lacks {', '.join(missing)}; expected {LAYOUT}.")
    images, labels, is_train, classes = (id_table(folder / n) for n in TABLES)
    class_ids = sorted(classes)
    index = {c: i for i, c in enumerate(class_ids)}
    wanted = "1" if split == "train" else "0"
    files, targets, skipped = [], [], []
    for image_id, relative in sorted(images.items()):
        if is_train.get(image_id) not in ("0", "1") or not labels.get(image_id, "").isdigit() \
                or int(labels[image_id]) not in index:
            skipped.append((f"{folder / 'images' / relative}", f"image id {image_id} lacks a valid class or split row"))
            continue
        if is_train[image_id] == wanted:
            files.append(folder / "images" / relative)
            targets.append(index[int(labels[image_id])])
    return labelled_files(f"cub:{printable(folder)}:{split}", [class_name(classes[c]) for c in class_ids], files,
                          targets, transform, strict, skipped, report)


SPEC = LabelledSpec("cub", f"{USAGE}  (CUB_200_2011: images.txt, image_class_labels.txt, train_test_split.txt)",
                    load_cub)
