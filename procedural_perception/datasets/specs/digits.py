"""scikit-learn's 8 x 8 digits: 1,797 images, 10 classes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from procedural_perception.datasets.labelled_images import LabelledImages
from procedural_perception.datasets.specs.base import LabelledSpec


def load_digits(argument: str, transform: Callable | None, strict: bool, report: Path | None) -> LabelledImages:
    from sklearn.datasets import load_digits as sklearn_digits

    if argument:
        raise ValueError(f"digits takes no argument, got {argument!r}.")
    digits = sklearn_digits()
    images = np.clip(np.rint(digits.images / 16.0 * 255.0), 0, 255).astype(np.uint8)  # values 0..16
    sources = [f"digits[{i}]" for i in range(len(digits.target))]
    return LabelledImages("digits", [str(c) for c in range(10)], digits.target, sources, arrays=images, transform=transform)


SPEC = LabelledSpec("digits", "digits  (scikit-learn 8x8 digits)", load_digits)
