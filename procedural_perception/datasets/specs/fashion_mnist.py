"""Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (idx .gz files), 60k train / 10k test."""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from procedural_perception.datasets.labelled_images import LabelledImages
from procedural_perception.datasets.specs.base import LabelledSpec, choose

FASHION_MNIST_DIR = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
USAGE = "fashion_mnist:train|test"


def idx_array(path: Path) -> np.ndarray:
    """An idx file (the MNIST family's format): magic, dims, big-endian uint8 data."""
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist(argument: str, transform: Callable | None, strict: bool, report: Path | None) -> LabelledImages:
    split = choose(argument or "train", ("train", "test"), "fashion_mnist split", USAGE)
    prefix = "train" if split == "train" else "t10k"
    images, labels = FASHION_MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz", FASHION_MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz"
    if not images.exists() or not labels.exists():
        raise FileNotFoundError(f"Fashion-MNIST not found in {FASHION_MNIST_DIR}: apt-get install dataset-fashion-mnist "
                                "(or set FASHION_MNIST_DIR to a folder with the idx .gz files).")
    targets = idx_array(labels).astype(np.int64)
    sources = [f"fashion_mnist:{split}[{i}]" for i in range(len(targets))]
    return LabelledImages(f"fashion_mnist:{split}", FASHION_MNIST_CLASSES, targets, sources, arrays=idx_array(images),
                          transform=transform)


SPEC = LabelledSpec("fashion_mnist", f"{USAGE}  (Debian package dataset-fashion-mnist)", load_fashion_mnist)
