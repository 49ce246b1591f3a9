"""scikit-image's ``lfw_subset``: 100 face crops then 100 non-faces (25 x 25 grey), the sensitive-data example."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from procedural_perception.datasets.image_files import array_to_uint8
from procedural_perception.datasets.labelled_images import LabelledImages
from procedural_perception.datasets.specs.base import LabelledSpec


def load_lfw_subset(argument: str, transform: Callable | None, strict: bool, report: Path | None) -> LabelledImages:
    from skimage.data import lfw_subset

    if argument:
        raise ValueError(f"lfw_subset takes no argument, got {argument!r}.")
    images = array_to_uint8(lfw_subset())  # [200, 25, 25] in [0, 1]: 100 faces, then 100 non-faces
    targets = np.repeat([0, 1], 100)
    sources = [f"lfw_subset[{i}]" for i in range(len(targets))]
    return LabelledImages("lfw_subset", ["face", "non_face"], targets, sources, arrays=images, transform=transform)


SPEC = LabelledSpec("lfw_subset", "lfw_subset  (scikit-image: faces vs non-faces)", load_lfw_subset)
