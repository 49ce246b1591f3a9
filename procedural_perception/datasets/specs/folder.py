"""An ImageFolder tree, ``root/<class name>/<image files>``: class index = sorted folder order; nested
sub-folders belong to their top class folder; a class folder without readable images stays a class."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from procedural_perception.datasets.image_files import printable
from procedural_perception.datasets.labelled_images import LabelledImages, files_in_folders, labelled_files
from procedural_perception.datasets.specs.base import LabelledSpec


def load_folder(spec: str, transform: Callable | None, strict: bool, report: Path | None) -> LabelledImages:
    root = Path(spec)
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise ValueError(f"{printable(root)} has no class folders: expected ImageFolder layout root/<class name>/<images>.")
    skipped: list[tuple[str, str]] = []
    files, labels = files_in_folders([(d, i) for i, d in enumerate(class_dirs)], skipped)
    return labelled_files(printable(root), [printable(d.name) for d in class_dirs], files, labels, transform, strict,
                          skipped, report, class_folders=root)


SPEC = LabelledSpec(None, "<folder>  ImageFolder tree: <folder>/<class>/<images>", load_folder,
                    recognises=lambda spec: Path(spec).is_dir())
