"""ImageNet-1k (ILSVRC 2012): ``imagenet:<root>:train|val`` in the three layouts users hold.

* **torchvision's** (``torchvision.datasets.ImageNet``): ``meta.bin`` (written by torchvision's
  ``parse_devkit_archive`` from ``ILSVRC2012_devkit_t12.tar.gz``: the class names of every WordNet
  id and the ids of the 50,000 validation images), ``train/<wnid>/*.JPEG``, and ``val/<wnid>/*.JPEG``
  or a flat ``val/`` of ``ILSVRC2012_val_*.JPEG`` labelled by ``meta.bin`` in file-name order.
* **Kaggle's** (ImageNet Object Localization Challenge): ``LOC_synset_mapping.txt``
  (``<wnid> <names>``), ``LOC_val_solution.csv`` (``ImageId,PredictionString``, whose first word is
  the wnid) and ``ILSVRC/Data/CLS-LOC/{train/<wnid>/,val/}``.
* **Plain ImageFolder**: ``train/<wnid>/`` and ``val/<wnid>/`` without metadata (classes are the
  folder names, with a warning that they are WordNet ids).

Class index = sorted WordNet ids of the metadata (all 1,000 even when a split lacks some), so
train and val always agree; names are the synset's names joined by ", " (``tench, Tinca tinca``),
which tell apart the two "crane" and two "maillot" classes. Files are listed with :mod:`..scan`,
not ``ImageFolder`` (whose ``os.walk(followlinks=True)`` has no loop detection), and nothing is
ever extracted or written into ``<root>`` (torchvision's class extracts the archives there when a
split folder is missing).
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from torchvision.datasets.imagenet import META_FILE, load_meta_file

from procedural_perception.datasets.image_files import printable
from procedural_perception.datasets.labelled_images import LabelledImages, files_in_folders, labelled_files
from procedural_perception.datasets.scan import has_image_extension, walk_files
from procedural_perception.datasets.specs.base import LabelledSpec, choose, parts

USAGE = "imagenet:<root>:train|val"
KAGGLE_DATA = Path("ILSVRC") / "Data" / "CLS-LOC"
LAYOUTS = ("meta.bin + train/<wnid>/ + val/ (torchvision), LOC_synset_mapping.txt + LOC_val_solution.csv + "
           "ILSVRC/Data/CLS-LOC/ (Kaggle), or train/<wnid>/ and val/<wnid>/ folders")


def synsets(root: Path) -> tuple[str, list[str], dict[str, str], list[str] | None]:
    """``(layout, wnids sorted, {wnid: names}, val wnids in file order or None)``."""
    if (root / "LOC_synset_mapping.txt").is_file():
        names = {}
        for line in (root / "LOC_synset_mapping.txt").read_text(encoding="utf-8").splitlines():
            wnid, _, text = line.strip().partition(" ")
            if wnid:
                names[wnid] = text.strip() or wnid
        return "kaggle", sorted(names), names, None
    if (root / META_FILE).is_file():
        try:
            wnid_to_classes, val_wnids = load_meta_file(str(root))
        except Exception as err:  # noqa: BLE001 -- torch.load of a damaged file raises many types
            raise ValueError(f"imagenet: cannot read {root / META_FILE} ({type(err).__name__}: {err}); write it "
                             "again with torchvision.datasets.imagenet.parse_devkit_archive(root).") from err
        names = {w: ", ".join(c) for w, c in wnid_to_classes.items()}
        return "torchvision", sorted(names), names, list(val_wnids)
    return "folders", [], {}, None


def _split_folder(root: Path, layout: str, split: str) -> Path:
    return root / KAGGLE_DATA / split if layout == "kaggle" else root / split


def _class_folders(folder: Path, index: dict[str, int], skipped: list) -> list[tuple[Path, int]]:
    pairs = []
    for d in sorted(p for p in folder.iterdir() if p.is_dir()):
        if d.name in index:
            pairs.append((d, index[d.name]))
        else:
            skipped.append((printable(d), "folder is not a WordNet id of the class table"))
    return pairs


def _kaggle_val(root: Path, index: dict[str, int], skipped: list) -> tuple[list[Path], list[int]]:
    table = root / "LOC_val_solution.csv"
    if not table.is_file():
        raise FileNotFoundError(f"imagenet: {table} not found (Kaggle layout: it labels ILSVRC/Data/CLS-LOC/val/).")
    files, labels = [], []
    with table.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            wnid = (row.get("PredictionString") or "").split(" ")[0]
            path = root / KAGGLE_DATA / "val" / f"{row.get('ImageId', '')}.JPEG"
            if wnid not in index:
                skipped.append((printable(path), f"LOC_val_solution.csv gives no known wnid ({wnid!r})"))
                continue
            files.append(path)
            labels.append(index[wnid])
    order = sorted(range(len(files)), key=lambda i: files[i])
    return [files[i] for i in order], [labels[i] for i in order]


def _flat_val(folder: Path, val_wnids: list[str], index: dict[str, int], skipped: list) -> tuple[list[Path], list[int]]:
    files = [p for p in walk_files(folder, skipped) if has_image_extension(p)]
    if len(files) != len(val_wnids):
        raise ValueError(f"imagenet: {folder} holds {len(files)} images but meta.bin labels {len(val_wnids)} "
                         "(the flat layout needs every ILSVRC2012_val_*.JPEG; or sort val/ into <wnid>/ folders).")
    return files, [index[w] for w in val_wnids]


def load_imagenet(argument: str, transform: Callable | None, strict: bool, report: Path | None) -> LabelledImages:
    root_text, split = parts(argument, USAGE, 2)
    split = choose(split, ("train", "val"), "imagenet split", USAGE)
    root = Path(root_text).expanduser()
    layout, wnids, names, val_wnids = synsets(root)
    folder = _split_folder(root, layout, split)
    if not folder.is_dir():
        hint = (" (ILSVRC2012_devkit_t12.tar.gz is here: write meta.bin with python -c \"from torchvision.datasets."
                f"imagenet import parse_devkit_archive; parse_devkit_archive('{root}')\")"
                if (root / "ILSVRC2012_devkit_t12.tar.gz").exists() else "")
        raise FileNotFoundError(f"imagenet: {folder} not found; expected {LAYOUTS}{hint}.")
    skipped: list[tuple[str, str]] = []
    if layout == "folders":
        wnids = sorted(d.name for d in folder.iterdir() if d.is_dir())
        names = {w: w for w in wnids}
        Console(stderr=True).print(f"imagenet: no meta.bin or LOC_synset_mapping.txt in {root}; class names are "
                                   "the folder names (WordNet ids).", style="yellow", markup=False)
    index = {w: i for i, w in enumerate(wnids)}
    if split == "val" and layout == "kaggle":
        files, labels = _kaggle_val(root, index, skipped)
    elif split == "val" and layout == "torchvision" and not any(p.is_dir() for p in folder.iterdir()):
        files, labels = _flat_val(folder, val_wnids, index, skipped)
    else:
        files, labels = files_in_folders(_class_folders(folder, index, skipped), skipped)
    return labelled_files(f"imagenet:{printable(root)}:{split}", [names[w] for w in wnids], files, labels, transform,
                          strict, skipped, report)


SPEC = LabelledSpec("imagenet", f"{USAGE}  (torchvision meta.bin, Kaggle LOC_*.csv/txt, or <split>/<wnid>/ folders)",
                    load_imagenet)
