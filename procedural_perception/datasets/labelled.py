"""Labelled real images for the visual memory and the kNN evaluations: one loader for every source.

``load_labelled(spec)`` understands

* a folder in ImageFolder layout, ``root/<class name>/<image files>`` (class index = sorted folder
  order; nested sub-folders belong to their top class folder);
* a MedMNIST-style ``.npz`` with a split, ``path.npz:train`` (keys ``train_images``,
  ``train_labels``; likewise ``val``/``test``);
* built-in sets that install offline: ``fashion_mnist:train`` / ``fashion_mnist:test`` (Debian
  package ``dataset-fashion-mnist``), ``lfw_subset`` (scikit-image: 100 face crops then 100
  non-faces, the sensitive-data example) and ``digits`` (scikit-learn's 8x8 digits).

Every image becomes RGB: grey, palette (with transparency), RGBA/LA (composited on white),
16-bit and 32-bit integer, float and CMYK images are converted. Folder files that are empty,
truncated, corrupt or not images are skipped, counted (``skipped``) and reported; ``strict=True``
raises instead.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from rich.console import Console
from rich.progress import track
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from procedural_perception.datasets.image_files import (
    IGNORED_FILES,
    IMAGE_EXTENSIONS,
    array_to_uint8,
    open_rgb,
    to_rgb,
)

FASHION_MNIST_DIR = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
BUILT_IN = ("fashion_mnist:train", "fashion_mnist:test", "lfw_subset", "digits")


class LabelledImages(Dataset):
    """``(image, label)`` pairs with ``classes`` (names by label), ``sources`` (one path or URI per
    sample), ``targets`` (labels, ``[N]`` int64) and ``skipped`` (``(path, reason)`` of rejected files).

    Without ``transform`` an image is float ``[3, H, W]`` in [0, 1]; otherwise ``transform`` gets
    the RGB PIL image. Images come from an array ``[N, H, W(, C)]`` or from files.
    """

    def __init__(self, name: str, classes: list[str], targets: np.ndarray, sources: list[str],
                 arrays: np.ndarray | None = None, paths: list[Path] | None = None,
                 transform: Callable | None = None, skipped: list[tuple[str, str]] | None = None) -> None:
        self.name = name
        self.classes = classes
        self.targets = np.asarray(targets, dtype=np.int64)
        self.sources = sources
        self.transform = transform
        self.skipped = skipped or []
        self._arrays = arrays
        self._paths = paths

    def __len__(self) -> int:
        return len(self.targets)

    def image(self, index: int) -> Image.Image:
        """Sample ``index`` as an RGB PIL image (before ``transform``)."""
        if self._arrays is not None:
            return to_rgb(Image.fromarray(self._arrays[index]))
        path = self._paths[index]
        try:
            return open_rgb(path)
        except (OSError, UnidentifiedImageError, ValueError) as err:  # changed on disk since the scan
            raise OSError(f"cannot read {path} ({err}); it was readable when the dataset was loaded.") from err

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self.image(index)
        out = self.transform(image) if self.transform is not None else TF.to_dtype(TF.to_image(image), torch.float32, scale=True)
        return out, int(self.targets[index])

    def subset(self, size: int | None, seed: int = 0) -> LabelledImages:
        """A deterministic random subset of ``size`` samples (in dataset order); all if ``size`` is
        None or not smaller than the dataset."""
        if size is None or size >= len(self):
            return self
        chosen = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:size].sort().values.numpy()
        return LabelledImages(
            f"{self.name}[{size}, seed {seed}]", self.classes, self.targets[chosen], [self.sources[i] for i in chosen],
            None if self._arrays is None else self._arrays[chosen],
            None if self._paths is None else [self._paths[i] for i in chosen],
            self.transform, self.skipped,
        )


def load_labelled(spec: str, transform: Callable | None = None, strict: bool = False) -> LabelledImages:
    """Load the labelled images ``spec`` names (see the module docstring for the forms)."""
    name, _, split = str(spec).partition(":")
    if name == "fashion_mnist":
        return _fashion_mnist(split or "train", transform)
    if spec == "lfw_subset":
        return _lfw_subset(transform)
    if spec == "digits":
        return _digits(transform)
    npz_path, _, npz_split = str(spec).rpartition(":") if ".npz:" in str(spec) else (str(spec), "", "")
    if npz_path.endswith(".npz"):
        return _npz(Path(npz_path), npz_split or "train", transform)
    if Path(spec).is_dir():
        return _folder(Path(spec), transform, strict)
    raise ValueError(
        f"Unknown labelled data {spec!r}: give a folder in ImageFolder layout (root/<class>/<images>), "
        f"a MedMNIST-style file (path.npz:train|val|test) or one of {', '.join(BUILT_IN)}."
    )


# --- sources -----------------------------------------------------------------------------------------
def _folder(root: Path, transform: Callable | None, strict: bool) -> LabelledImages:
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise ValueError(f"{root} has no class folders: expected ImageFolder layout root/<class name>/<images>.")
    candidates = [(p, label) for label, d in enumerate(class_dirs) for p in sorted(d.rglob("*"))
                  if p.is_file() and p.name not in IGNORED_FILES]
    paths, targets, skipped = [], [], []
    for path, label in track(candidates, description=f"checking {len(candidates)} files in {root}", transient=True):
        reason = _unreadable(path)
        if reason is None:
            paths.append(path)
            targets.append(label)
        else:
            skipped.append((str(path), reason))
    counts = np.bincount(np.asarray(targets, dtype=np.int64), minlength=len(class_dirs))
    empty = [d.name for d, c in zip(class_dirs, counts, strict=True) if c == 0]
    skipped += [(str(root / name), "empty class folder: no readable images") for name in empty]
    if strict and skipped:
        listed = "; ".join(f"{p}: {r}" for p, r in skipped[:5])
        raise ValueError(f"{len(skipped)} problems in {root} (strict mode): {listed}"
                         f"{' ...' if len(skipped) > 5 else ''}. Fix or remove them, or load without strict.")
    if not paths:
        raise ValueError(f"No readable images in {root} ({len(candidates)} files checked, all rejected).")
    if skipped:
        console = Console(stderr=True)
        console.print(f"[yellow]{root}: skipped {len(skipped)} entries ({len(candidates)} files checked); "
                      f"first: {skipped[0][0]} ({skipped[0][1]})[/yellow]")
        if empty:
            console.print(f"[yellow]class folders without readable images (kept as classes with no samples): "
                          f"{', '.join(empty)}[/yellow]")
    return LabelledImages(str(root), [d.name for d in class_dirs], np.array(targets), [str(p) for p in paths],
                          paths=paths, transform=transform, skipped=skipped)


def _unreadable(path: Path) -> str | None:
    """Why ``path`` cannot serve as an image, or None when it decodes completely."""
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return f"not an image file (extension {path.suffix or 'none'})"
    if path.stat().st_size == 0:
        return "empty file (0 bytes)"
    try:
        open_rgb(path)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        return f"cannot decode: {err}"
    return None


def _npz(path: Path, split: str, transform: Callable | None) -> LabelledImages:
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (expected a MedMNIST-style .npz).")
    with np.load(path) as data:
        keys = list(data.keys())
        if f"{split}_images" not in keys or f"{split}_labels" not in keys:
            raise KeyError(f"{path} has no {split}_images/{split}_labels (keys: {', '.join(keys)}); "
                           "choose the split with path.npz:train|val|test.")
        images, labels = data[f"{split}_images"], data[f"{split}_labels"]
    labels = labels.reshape(len(labels), -1)
    if labels.shape[1] != 1:
        raise ValueError(f"{path}:{split} is multi-label ({labels.shape[1]} labels per image); the visual memory "
                         "needs one class per image.")
    labels = labels[:, 0].astype(np.int64)
    classes = [str(c) for c in range(int(labels.max(initial=-1)) + 1)]
    sources = [f"{path}:{split}[{i}]" for i in range(len(labels))]
    return LabelledImages(f"{path}:{split}", classes, labels, sources, arrays=array_to_uint8(images), transform=transform)


def _idx(path: Path) -> np.ndarray:
    """An idx file (the MNIST family's format): magic, dims, big-endian uint8 data."""
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _fashion_mnist(split: str, transform: Callable | None) -> LabelledImages:
    if split not in ("train", "test"):
        raise ValueError(f"fashion_mnist has splits train and test, not {split!r}.")
    prefix = "train" if split == "train" else "t10k"
    images, labels = FASHION_MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz", FASHION_MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz"
    if not images.exists() or not labels.exists():
        raise FileNotFoundError(f"Fashion-MNIST not found in {FASHION_MNIST_DIR}: apt-get install dataset-fashion-mnist "
                                "(or set FASHION_MNIST_DIR to a folder with the idx .gz files).")
    targets = _idx(labels).astype(np.int64)
    sources = [f"fashion_mnist:{split}[{i}]" for i in range(len(targets))]
    return LabelledImages(f"fashion_mnist:{split}", FASHION_MNIST_CLASSES, targets, sources, arrays=_idx(images),
                          transform=transform)


def _lfw_subset(transform: Callable | None) -> LabelledImages:
    from skimage.data import lfw_subset

    images = array_to_uint8(lfw_subset())  # [200, 25, 25] in [0, 1]: 100 faces, then 100 non-faces
    targets = np.repeat([0, 1], 100)
    sources = [f"lfw_subset[{i}]" for i in range(len(targets))]
    return LabelledImages("lfw_subset", ["face", "non_face"], targets, sources, arrays=images, transform=transform)


def _digits(transform: Callable | None) -> LabelledImages:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.clip(np.rint(digits.images / 16.0 * 255.0), 0, 255).astype(np.uint8)  # values 0..16
    sources = [f"digits[{i}]" for i in range(len(digits.target))]
    return LabelledImages("digits", [str(c) for c in range(10)], digits.target, sources, arrays=images, transform=transform)
