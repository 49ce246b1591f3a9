"""The paper's kNN data sets under one folder: which are there, as ``(name, memory spec, query spec)``.

``make eval SUITE=paper ROOT=/data`` evaluates Table 1 (Flowers102, CUB-200-2011, Food-101,
ImageNet-1k) and Table 3 (ten MedMNIST sets) on whichever of them lie under ``ROOT`` in their
native layouts, and names the absent ones with one line each. Memory = the training split, queries =
the test split (ImageNet: val; the paper does not state its splits, this is the usual kNN protocol).
Only cheap presence checks run here (no file is listed or opened); loading a spec does the rest.

Looked for under ``ROOT`` (first match wins):

* flowers102: ``flowers-102/`` or ``flowers102/`` holding ``jpg/``, ``imagelabels.mat``, ``setid.mat``;
* cub: ``CUB_200_2011/`` or ``cub/CUB_200_2011/`` holding ``images.txt``;
* food101: ``food-101/`` or ``food101/`` holding ``meta/train.json``;
* imagenet: ``imagenet/``, ``ILSVRC2012/`` or ``imagenet-object-localization-challenge/`` in one of the
  layouts of :mod:`.specs.imagenet` (``meta.bin`` or ``LOC_synset_mapping.txt``, with a val split);
* MedMNIST: ``<name>.npz`` in ``medmnist/`` or ``ROOT`` itself (the 28 px files the MedMNIST v2
  paper's table uses; ``<name>_224.npz`` and the other MedMNIST+ sizes when the 28 px file is absent).
"""

from __future__ import annotations

from pathlib import Path

# The paper's Table 3 columns, as MedMNIST names its files.
MEDMNIST_TABLE3 = ("pathmnist", "dermamnist", "octmnist", "pneumoniamnist", "breastmnist", "bloodmnist",
                   "tissuemnist", "organamnist", "organcmnist", "organsmnist")
TABLES = {"flowers102": "Table 1", "cub": "Table 1", "food101": "Table 1", "imagenet": "Table 1",
          **{name: "Table 3" for name in MEDMNIST_TABLE3}}

Found = tuple[str, str, str]  # (name, memory spec, query spec)
Absent = tuple[str, str]  # (name, one-line reason)


def _first(root: Path, candidates: tuple[str, ...], marker: str) -> Path | None:
    for name in candidates:
        if (root / name / marker).exists():
            return root / name
    return None


def _flowers(root: Path) -> Found | str:
    folder = next((root / n for n in ("flowers-102", "flowers102")
                   if all((root / n / f).exists() for f in ("jpg", "imagelabels.mat", "setid.mat"))), None)
    if folder is None:
        return f"no flowers-102/ with jpg/, imagelabels.mat and setid.mat under {root}"
    return "flowers102", f"flowers102:{folder}:train", f"flowers102:{folder}:test"


def _cub(root: Path) -> Found | str:
    folder = _first(root, ("CUB_200_2011", "cub/CUB_200_2011", "cub"), "images.txt")
    if folder is None:
        return f"no CUB_200_2011/ with images.txt under {root}"
    return "cub", f"cub:{folder}:train", f"cub:{folder}:test"


def _food(root: Path) -> Found | str:
    folder = _first(root, ("food-101", "food101"), "meta/train.json")
    if folder is None:
        return f"no food-101/ with meta/train.json under {root}"
    return "food101", f"food101:{folder}:train", f"food101:{folder}:test"


def _imagenet(root: Path) -> Found | str:
    for name in ("imagenet", "ILSVRC2012", "imagenet-object-localization-challenge"):
        folder = root / name
        kaggle = (folder / "LOC_synset_mapping.txt").exists() and (folder / "LOC_val_solution.csv").exists()
        torchvision = (folder / "meta.bin").exists() and (folder / "train").is_dir() and (folder / "val").is_dir()
        if kaggle or torchvision:
            return "imagenet", f"imagenet:{folder}:train", f"imagenet:{folder}:val"
    return (f"no imagenet/ (or ILSVRC2012/, imagenet-object-localization-challenge/) with meta.bin + train/ + val/ "
            f"or LOC_synset_mapping.txt + LOC_val_solution.csv under {root}")


def _medmnist(root: Path, name: str) -> Found | str:
    for folder in (root / "medmnist", root):
        for suffix in ("", "_28", "_64", "_128", "_224"):
            path = folder / f"{name}{suffix}.npz"
            if path.is_file():
                return name, f"{path}:train", f"{path}:test"
    return f"no {name}.npz (or {name}_224.npz, ...) in {root / 'medmnist'} or {root}"


def survey(root: str | Path) -> tuple[list[Found], list[Absent]]:
    """``(found, absent)`` for every data set of the paper's Tables 1 and 3 (see the module docstring)."""
    root = Path(root).expanduser()
    found, absent = [], []
    checks = [("flowers102", _flowers), ("cub", _cub), ("food101", _food), ("imagenet", _imagenet)]
    checks += [(name, lambda r, n=name: _medmnist(r, n)) for name in MEDMNIST_TABLE3]
    for name, check in checks:
        result = check(root) if root.is_dir() else f"{root} is not a folder"
        if isinstance(result, str):
            absent.append((name, result))
        else:
            found.append(result)
    return found, absent


def paper_datasets(root: str | Path) -> list[Found]:
    """The paper's kNN data sets present under ``root``: ``[(name, memory spec, query spec)]``."""
    return survey(root)[0]


def absent_paper_datasets(root: str | Path) -> list[Absent]:
    """The paper's kNN data sets not found under ``root``: ``[(name, one-line reason)]``."""
    return survey(root)[1]
