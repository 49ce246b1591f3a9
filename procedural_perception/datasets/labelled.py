"""Labelled real images for the visual memory and the kNN evaluations: one loader for every source.

``load_labelled(spec)`` dispatches on the registered forms of :mod:`.specs` (one file per data
set; :func:`spec_usages` lists them): ImageFolder trees, MedMNIST-style ``.npz`` files, the
built-in offline sets (``fashion_mnist``, ``lfw_subset``, ``digits``) and the paper's data sets in
their native layouts (``flowers102``, ``food101``, ``cub``, ``celeba``, ``imagenet``, ``inat21``).

Every image becomes RGB: grey, palette (with transparency), RGBA/LA (composited on white),
16-bit and 32-bit integer, float and CMYK images are converted. Files are header-checked when a
set is loaded (empty, truncated, corrupt, non-images, decompression bombs, absurd aspect ratios,
FIFOs, symlink loops: skipped, counted in ``skipped``, every one listed in a report file) and
decoded completely when read (see :mod:`.labelled_images` for what a file that fails then
becomes); ``strict=True`` raises instead.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from procedural_perception.datasets.image_files import open_rgb, to_rgb
from procedural_perception.datasets.labelled_images import LabelledImages
from procedural_perception.datasets.specs import SPECS
from procedural_perception.datasets.specs.fashion_mnist import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR

__all__ = ["FASHION_MNIST_CLASSES", "FASHION_MNIST_DIR", "LabelledImages", "load_labelled", "open_rgb",
           "spec_usages", "to_rgb"]

PREFIXES = {spec.prefix: spec for spec in SPECS if spec.prefix is not None}
RECOGNISED = [spec for spec in SPECS if spec.prefix is None]


def spec_usages() -> list[str]:
    """One usage line per registered form, for help texts and errors."""
    return [spec.usage for spec in SPECS]


def load_labelled(spec: str, transform: Callable | None = None, strict: bool = False,
                  report: str | Path | None = None) -> LabelledImages:
    """Load the labelled images ``spec`` names (see :func:`spec_usages` for the forms).

    ``report``: where to list every skipped entry when there are any (default: a file in the
    temporary folder, whose path the console line gives).
    """
    spec = str(spec)
    prefix, _, argument = spec.partition(":")
    report = Path(report) if report is not None else None
    if prefix in PREFIXES:
        return PREFIXES[prefix].load(argument, transform, strict, report)
    for form in RECOGNISED:
        if form.recognises(spec):
            return form.load(spec, transform, strict, report)
    raise ValueError(f"Unknown labelled data {spec!r}. Registered forms (prefixes: {', '.join(PREFIXES)}):\n  "
                     + "\n  ".join(spec_usages()))
