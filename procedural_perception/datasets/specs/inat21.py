"""iNaturalist 2021 through torchvision's ``INaturalist``: ``inat21:<root>:<split>[:<level>]``.

Native layout: one folder per species under the split folder, named
``<5-digit id>_<kingdom>_<phylum>_<class>_<order>_<family>_<genus>_<species epithet>``
(``00000_Animalia_Annelida_Clitellata_Haplotaxida_Lumbricidae_Lumbricus_terrestris``), ids
consecutive from 00000; 10,000 species. Splits: ``train``, ``train_mini``, ``val`` (the folders of
the published archives; torchvision's renamed ``2021_train``, ``2021_train_mini``, ``2021_valid``
are found too). Levels: ``species`` (default, torchvision's ``full``), ``genus``, ``family``,
``order``, ``class``, ``phylum``, ``kingdom``: the labels of the same images at another rank of
the taxonomy, as in Geirhos et al.'s study of adding new species to a memory. Level indices are
torchvision's (order of first appearance over the sorted species folders), the same in every split
that holds all species. Species names are ``<Genus> <epithet>``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torchvision.datasets import INaturalist
from torchvision.datasets.inaturalist import CATEGORIES_2021

from procedural_perception.datasets.image_files import IGNORED_FILES, printable
from procedural_perception.datasets.labelled_images import LabelledImages, labelled_files
from procedural_perception.datasets.scan import has_image_extension
from procedural_perception.datasets.specs.base import LabelledSpec, choose, parts

USAGE = "inat21:<root>:train|train_mini|val[:species|genus|family|order|class|phylum|kingdom]"
SPLITS = {"train": "2021_train", "train_mini": "2021_train_mini", "val": "2021_valid"}  # published -> torchvision
LEVELS = ("species", *reversed(CATEGORIES_2021))


class NativeINaturalist(INaturalist):
    """torchvision's reader for the split folder given (it derives ``<root>/<version>`` itself)."""

    def __init__(self, folder: Path, version: str) -> None:
        self._folder = folder
        super().__init__(str(folder.parent), version=version, target_type="full", download=False)

    @property
    def root(self) -> str:
        return str(self._folder)

    @root.setter
    def root(self, _derived: str) -> None:
        pass  # torchvision assigns <root>/<version>; the folder given is kept


def split_folder(root: Path, split: str) -> Path:
    for name in (split, SPLITS[split]):
        if (root / name).is_dir():
            return root / name
    raise FileNotFoundError(f"inat21: neither {root / split} nor {root / SPLITS[split]} is a folder; expected "
                            "<root>/<split>/<id>_<kingdom>_..._<genus>_<epithet>/ (the published iNat 2021 archives).")


def load_inat21(argument: str, transform: Callable | None, strict: bool, report: Path | None) -> LabelledImages:
    root, split, level = parts(argument, USAGE, 2, 1)
    aliases = {v: k for k, v in SPLITS.items()}
    split = choose(split, tuple(SPLITS), "inat21 split", USAGE, aliases)
    level = choose(level or "species", LEVELS, "inat21 level", USAGE, {"full": "species"})
    folder = split_folder(Path(root).expanduser(), split)
    try:
        data = NativeINaturalist(folder, SPLITS[split])
    except (RuntimeError, OSError) as err:
        raise ValueError(f"inat21: {folder} is not the iNat 2021 layout ({err}); every entry must be a species folder "
                         "named <5-digit id>_<kingdom>_<phylum>_<class>_<order>_<family>_<genus>_<epithet>, ids "
                         "consecutive from 00000.") from err
    if level == "species":
        classes = [" ".join(name.split("_")[6:8]) for name in data.all_categories]
    else:
        by_id = sorted(data.categories_index[level].items(), key=lambda item: item[1])
        classes = [name for name, _ in by_id]
    skipped, files, labels = [], [], []
    for category, name in sorted(data.index):
        path = folder / data.all_categories[category] / name
        if name in IGNORED_FILES:
            continue
        if not has_image_extension(path):
            skipped.append((printable(path), f"not an image file (extension {path.suffix or 'none'})"))
            continue
        files.append(path)
        labels.append(category if level == "species" else data.categories_map[category][level])
    return labelled_files(f"inat21:{printable(folder)}:{level}", classes, files, labels, transform, strict, skipped,
                          report)


SPEC = LabelledSpec("inat21", f"{USAGE}  (one folder per species, the taxonomy in its name)", load_inat21)
