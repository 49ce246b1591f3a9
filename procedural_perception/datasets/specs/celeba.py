"""CelebA through torchvision's ``CelebA``: ``celeba:<root>:<split>[:identity|attr=<name>]``.

Native layout of ``celeba/``: ``img_align_celeba/*.jpg``, ``list_eval_partition.txt`` (0 train,
1 valid, 2 test), ``identity_CelebA.txt``, ``list_attr_celeba.txt`` (40 attributes, -1 / 1),
``list_bbox_celeba.txt`` and ``list_landmarks_align_celeba.txt`` (torchvision reads all five).
``<root>`` is that folder (any name) or its parent. Splits: train, valid (or val), test, all.

Targets: ``identity`` (default; classes are the identity numbers of the whole file, so every split
shares one class index) or ``attr=<name>`` (one attribute as a binary task, ``no <name>`` /
``<name>``); ``attr`` alone is refused, the 40 attributes being multi-label (:mod:`.multilabel`).
CelebA's official partition puts different people in train, valid and test, so an identity
memory built from train cannot name a test face: split one partition into memory and queries
(e.g. ``.subset``) for identity retrieval.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from torchvision.datasets import CelebA

from procedural_perception.datasets.labelled_images import LabelledImages, labelled_files
from procedural_perception.datasets.specs import multilabel
from procedural_perception.datasets.specs.base import LabelledSpec, choose, existing_folder, parts
from procedural_perception.datasets.specs.torchvision_checks import report_md5

USAGE = "celeba:<root>:train|valid|test|all[:identity|attr=<name>]"
TEXT_FILES = [(name, md5) for _, md5, name in CelebA.file_list if name.endswith(".txt")]
LAYOUT = "img_align_celeba/ and " + ", ".join(name for name, _ in TEXT_FILES)


class NativeCelebA(CelebA):
    """torchvision's reader for the folder given, with a presence check in place of its md5 check
    (see :mod:`.torchvision_checks`)."""

    def __init__(self, folder: Path, split: str) -> None:
        self.base_folder = folder.name  # torchvision reads <root>/<base_folder>/...
        super().__init__(str(folder.parent), split=split, target_type="identity", download=False)

    def _check_integrity(self) -> bool:
        folder = Path(self.root) / self.base_folder
        return (folder / "img_align_celeba").is_dir() and all((folder / name).is_file() for name, _ in TEXT_FILES)


def load_celeba(argument: str, transform: Callable | None, strict: bool, report: Path | None) -> LabelledImages:
    root, split, target = parts(argument, USAGE, 2, 1)
    split = choose(split, ("train", "valid", "test", "all"), "celeba split", USAGE, {"val": "valid"})
    folder = existing_folder(root, ("celeba",), "celeba", LAYOUT)
    missing = [n for n in ("img_align_celeba", *(name for name, _ in TEXT_FILES)) if not (folder / n).exists()]
    if missing:
        raise FileNotFoundError(f"celeba: {folder} lacks {', '.join(missing)}; expected {LAYOUT}.")
    target = target or "identity"
    if target == "attr":
        header = (folder / "list_attr_celeba.txt").read_text(encoding="utf-8").splitlines()[1].split()
        raise multilabel.refuse(f"celeba {split} attr", header,
                                f"celeba:{root}:{split}:attr={header[0] if header else '<name>'} (one attribute as a "
                                f"binary task) or celeba:{root}:{split}:identity")
    if not (target == "identity" or target.startswith("attr=")):
        raise ValueError(f"celeba target {target!r}: choose identity or attr=<name> ({USAGE}).")
    report_md5("celeba", folder, TEXT_FILES)
    try:
        data = NativeCelebA(folder, split)
    except (ValueError, IndexError, RuntimeError, TypeError) as err:
        raise ValueError(f"celeba: cannot parse {folder}'s text files ({type(err).__name__}: {err}); they must "
                         "be the published space-separated tables.") from err
    images = folder / "img_align_celeba"
    files = [images / name for name in data.filename]
    if target == "identity":
        every = np.unique(data._load_csv("identity_CelebA.txt").data[:, 0].numpy())
        targets = np.searchsorted(every, data.identity[:, 0].numpy())
        classes = [str(i) for i in every]
    else:
        targets, classes = multilabel.binary(data.attr.numpy(), list(data.attr_names), target[len("attr="):], "celeba")
    return labelled_files(f"celeba:{folder}:{split}:{target}", classes, files, targets.tolist(), transform, strict,
                          report=report)


SPEC = LabelledSpec("celeba", f"{USAGE}  (img_align_celeba/ + the CelebA text files)", load_celeba)
