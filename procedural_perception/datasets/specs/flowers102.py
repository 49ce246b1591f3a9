"""Oxford Flowers-102 through torchvision's ``Flowers102``: ``flowers102:<root>:train|val|test``.

Native layout: ``jpg/image_00001.jpg ...``, ``imagelabels.mat`` (1-based labels of all 8,189
images) and ``setid.mat`` (``trnid``, ``valid``, ``tstid``: 1,020 / 1,020 / 6,149 image ids).
``<root>`` is the folder holding them (any name) or its parent holding ``flowers-102/``
(torchvision's convention). Class names are torchvision's list of the 102 flowers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torchvision.datasets import Flowers102

from procedural_perception.datasets.labelled_images import LabelledImages, labelled_files
from procedural_perception.datasets.specs.base import LabelledSpec, choose, existing_folder, parts
from procedural_perception.datasets.specs.torchvision_checks import report_md5

USAGE = "flowers102:<root>:train|val|test"
LAYOUT = "jpg/, imagelabels.mat and setid.mat (Oxford Flowers-102), or a folder holding flowers-102/ with them"


class NativeFlowers102(Flowers102):
    """torchvision's reader for the folder given (it derives ``<root>/flowers-102`` itself), with
    a presence check in place of its md5 check (see :mod:`.torchvision_checks`)."""

    def __init__(self, folder: Path, split: str) -> None:
        self._folder = folder
        super().__init__(folder.parent, split=split, download=False)

    @property
    def _base_folder(self) -> Path:
        return self._folder

    @_base_folder.setter
    def _base_folder(self, _derived: Path) -> None:
        pass  # torchvision assigns <root>/flowers-102; the folder given is kept

    def _check_integrity(self) -> bool:
        return self._images_folder.is_dir() and all(
            (self._folder / self._file_dict[key][0]).is_file() for key in ("label", "setid"))


def load_flowers102(argument: str, transform: Callable | None, strict: bool, report: Path | None) -> LabelledImages:
    root, split = parts(argument, USAGE, 2)
    split = choose(split, ("train", "val", "test"), "flowers102 split", USAGE)
    folder = existing_folder(root, ("flowers-102",), "flowers102", LAYOUT)
    missing = [n for n in ("jpg", "imagelabels.mat", "setid.mat") if not (folder / n).exists()]
    if missing:
        raise FileNotFoundError(f"flowers102: {folder} lacks {', '.join(missing)}; expected {LAYOUT}.")
    report_md5("flowers102", folder, [NativeFlowers102._file_dict[k] for k in ("label", "setid")])
    try:
        data = NativeFlowers102(folder, split)
    except (ValueError, KeyError, IndexError, TypeError, OSError) as err:
        raise ValueError(f"flowers102: cannot read {folder}'s imagelabels.mat / setid.mat ({type(err).__name__}: {err}); "
                         "they must hold 'labels' and 'trnid'/'valid'/'tstid' as in the published files.") from err
    return labelled_files(f"flowers102:{folder}:{split}", list(Flowers102.classes), data._image_files, data._labels,
                          transform, strict, report=report)


SPEC = LabelledSpec("flowers102", f"{USAGE}  (jpg/ + imagelabels.mat + setid.mat)", load_flowers102)
