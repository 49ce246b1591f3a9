"""MedMNIST ``.npz`` files (and any ``.npz`` in their layout): ``<path>.npz[:<split>[:<mode>]]``.

A file holds ``{train,val,test}_images`` (``[N, H, W]`` or ``[N, H, W, 3]``) and
``{train,val,test}_labels`` (``[N, 1]``, or ``[N, L]`` 0/1 columns for a multi-label set). Class
names come from the ``medmnist`` package's ``INFO`` when it is installed and the file keeps its
published name (``pathmnist.npz``, ``pathmnist_224.npz``, ...); otherwise classes are numbered.
A multi-label set (ChestMNIST) needs a mode, ``label=<name>`` or ``exclusive``
(:mod:`.multilabel`); ``sources`` are ``<path>:<split>[<row>]``, the row in the file.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rich.console import Console

from procedural_perception.datasets.image_files import array_to_uint8
from procedural_perception.datasets.labelled_images import LabelledImages
from procedural_perception.datasets.specs import multilabel
from procedural_perception.datasets.specs.base import LabelledSpec

USAGE = "<file>.npz[:train|val|test[:label=<name>|exclusive]]  (MedMNIST layout)"
_SIZE_SUFFIX = re.compile(r"_(28|64|128|224)$")  # MedMNIST+ file names: pathmnist_224.npz


def parse_npz_spec(spec: str) -> tuple[Path, str, str] | None:
    """``(path, split, mode)`` when ``spec`` names a ``.npz`` file, else None."""
    match = re.match(r"^(.*?\.npz)(?::([^:]*))?(?::(.*))?$", spec)
    if match is None:
        return None
    return Path(match.group(1)), match.group(2) or "train", match.group(3) or ""


def medmnist_info(path: Path) -> dict | None:
    """The ``medmnist`` package's ``INFO`` entry for a file named like a published one, or None."""
    try:
        from medmnist import INFO
    except ImportError:
        return None
    return INFO.get(_SIZE_SUFFIX.sub("", path.stem.lower()))


def _arrays(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (expected a MedMNIST-style .npz).")
    try:
        with np.load(path) as data:
            keys = list(data.keys())
            if f"{split}_images" not in keys or f"{split}_labels" not in keys:
                raise KeyError(f"{path} has no {split}_images/{split}_labels (keys: {', '.join(keys) or 'none'}); "
                               "choose the split with path.npz:train|val|test.")
            return data[f"{split}_images"], data[f"{split}_labels"]
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise ValueError(f"{path} is not a readable .npz ({type(err).__name__}: {err}); re-download or re-save it "
                         "with numpy.savez.") from err


def _labels(labels: np.ndarray, n_images: int, where: str) -> np.ndarray:
    labels = labels.reshape(len(labels), -1) if labels.ndim else labels.reshape(1, 1)
    if len(labels) != n_images:
        raise ValueError(f"{where}: {n_images} images but {len(labels)} label rows.")
    if not np.issubdtype(labels.dtype, np.number) or not np.all(np.isfinite(labels)) \
            or np.any(labels != np.round(labels)) or np.any(labels < 0):
        raise ValueError(f"{where}: labels must be non-negative integers (got dtype {labels.dtype}).")
    return labels.astype(np.int64)


def _class_names(info: dict | None, count: int, where: str) -> list[str]:
    if info is not None:
        names = [info["label"][str(i)] for i in range(len(info["label"]))]
        if count <= len(names):
            return names
        Console(stderr=True).print(f"{where}: labels go up to {count - 1} but medmnist's INFO names "
                                   f"{len(names)} classes (a renamed file?); classes are numbered.", style="yellow")
    return [str(c) for c in range(count)]


def load_npz(spec: str, transform: Callable | None, strict: bool, report: Path | None) -> LabelledImages:
    path, split, mode = parse_npz_spec(spec)
    where = f"{path}:{split}"
    images, raw_labels = _arrays(path, split)
    images = array_to_uint8(images)
    labels = _labels(raw_labels, len(images), where)
    info = medmnist_info(path)
    multi = labels.shape[1] > 1 or (info is not None and "multi-label" in info["task"])
    rows = np.arange(len(labels))
    skipped: list[tuple[str, str]] = []
    if multi:
        names = _class_names(info, labels.shape[1], where)
        if mode.startswith("label="):
            targets, classes = multilabel.binary(labels, names, mode[len("label="):], where)
        elif mode == "exclusive":
            rows, targets, positives = multilabel.exclusive(labels)
            classes = names
            skipped = [(f"{where}[{i}]", f"{positives[i]} positive labels (exclusive mode keeps exactly one)")
                       for i in np.flatnonzero(positives != 1)]
        else:
            raise multilabel.refuse(where, names, f"{where}:label={names[0]} ({multilabel.BINARY_HELP}) or "
                                                  f"{where}:exclusive ({multilabel.EXCLUSIVE_HELP})")
    else:
        if mode:
            raise ValueError(f"{where} is single-label; the mode {mode!r} applies to multi-label sets only.")
        targets = labels[:, 0]
        classes = _class_names(info, int(targets.max(initial=-1)) + 1, where)
    name = where + (f":{mode}" if mode else "")
    sources = [f"{where}[{i}]" for i in rows]
    return LabelledImages(name, classes, targets, sources, arrays=images[rows], transform=transform, skipped=skipped)


SPEC = LabelledSpec(None, USAGE, load_npz, recognises=lambda spec: parse_npz_spec(spec) is not None)
