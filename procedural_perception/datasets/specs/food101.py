"""Food-101 through torchvision's ``Food101``: ``food101:<root>:train|test``.

Native layout: ``images/<class>/<id>.jpg`` and ``meta/train.json``, ``meta/test.json`` (class ->
list of ``<class>/<id>``; 750 / 250 images per class). ``<root>`` is the ``food-101`` folder (any
name) or its parent. Class names are the folder names (``apple_pie``), sorted, as torchvision gives them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from torchvision.datasets import Food101

from procedural_perception.datasets.labelled_images import LabelledImages, labelled_files
from procedural_perception.datasets.specs.base import LabelledSpec, choose, existing_folder, parts

USAGE = "food101:<root>:train|test"
LAYOUT = "images/<class>/*.jpg and meta/train.json, meta/test.json (Food-101), or a folder holding food-101/"


class NativeFood101(Food101):
    """torchvision's reader for the folder given (it derives ``<root>/food-101`` itself)."""

    def __init__(self, folder: Path, split: str) -> None:
        self._folder = folder
        super().__init__(folder.parent, split=split, download=False)

    @property
    def _base_folder(self) -> Path:
        return self._folder

    @_base_folder.setter
    def _base_folder(self, _derived: Path) -> None:
        pass  # torchvision assigns <root>/food-101; the folder given is kept


def load_food101(argument: str, transform: Callable | None, strict: bool, report: Path | None) -> LabelledImages:
    root, split = parts(argument, USAGE, 2)
    split = choose(split, ("train", "test"), "food101 split", USAGE)
    folder = existing_folder(root, ("food-101",), "food101", LAYOUT)
    if not (folder / "images").is_dir() or not (folder / "meta" / f"{split}.json").is_file():
        raise FileNotFoundError(f"food101: {folder} lacks images/ or meta/{split}.json; expected {LAYOUT}.")
    try:
        data = NativeFood101(folder, split)
    except (json.JSONDecodeError, AttributeError, TypeError) as err:
        raise ValueError(f"food101: {folder / 'meta' / f'{split}.json'} is not the published layout "
                         f"({type(err).__name__}: {err}); it maps each class to a list of '<class>/<id>'.") from err
    return labelled_files(f"food101:{folder}:{split}", list(data.classes), data._image_files, data._labels,
                          transform, strict, report=report)


SPEC = LabelledSpec("food101", f"{USAGE}  (images/ + meta/{{train,test}}.json)", load_food101)
