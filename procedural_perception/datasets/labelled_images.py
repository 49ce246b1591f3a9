"""The labelled data set every spec returns, and the shared path from a list of files to it.

A spec file (``datasets/specs/<name>.py``) reads its data set's own metadata into ``(file, label)``
pairs and class names, then calls :func:`labelled_files`, which header-checks the files (in
parallel, see :mod:`.scan`), reports what it skipped and builds :class:`LabelledImages`.

**What an unreadable sample becomes.** A file refused when listed is not a sample at all (it is in
``skipped``). A file that passes the header check but fails when it is decoded (damage inside the
data, or a file changed since the scan) becomes a *black image of its declared size with its
label*: the batch, its order and every other sample are unchanged, so nothing downstream (a
DataLoader worker, the collation, the gather across ranks) can fail on it. It is recorded with
its source and reason in :meth:`LabelledImages.read_failures`, shared by all processes that read
the set, and a warning names it. ``make memory ARGS="build ..."`` leaves those rows out of the
memory, so a memory never holds a placeholder; an evaluation scores them and reports the count.
With ``strict=True`` a failed read raises instead.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from procedural_perception.datasets.image_files import (
    IGNORED_FILES,
    UnreadableImage,
    open_rgb,
    printable,
    to_rgb,
)
from procedural_perception.datasets.scan import has_image_extension, scan_images, walk_files
from procedural_perception.datasets.skips import ReadFailures, Skipped, summary, write_report

# Console lines name at most this many skipped entries; the report file names all of them.
SHOWN_SKIPS = 5


class LabelledImages(Dataset):
    """``(image, label)`` pairs with ``classes`` (names by label), ``sources`` (one path or URI per
    sample), ``targets`` (labels, ``[N]`` int64) and ``skipped`` (``(path, reason)`` of entries
    refused when the set was listed).

    Without ``transform`` an image is float ``[3, H, W]`` in [0, 1]; otherwise ``transform`` gets
    the RGB PIL image. Images come from an array ``[N, H, W(, C)]`` or from files (``sizes``:
    their declared ``(width, height)``, used for the placeholder of a file that fails when read).
    """

    def __init__(self, name: str, classes: list[str], targets: np.ndarray, sources: list[str],
                 arrays: np.ndarray | None = None, paths: list[Path] | None = None,
                 transform: Callable | None = None, skipped: Skipped | None = None,
                 sizes: Sequence[tuple[int, int]] | None = None, strict: bool = False,
                 report: Path | None = None) -> None:
        self.name = name
        self.classes = classes
        self.targets = np.asarray(targets, dtype=np.int64)
        self.sources = sources
        self.transform = transform
        self.skipped = skipped or []
        self.strict = strict
        self.report_path = report
        self._arrays = arrays
        self._paths = paths
        self._sizes = None if sizes is None else np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
        self._failures = ReadFailures()

    def __len__(self) -> int:
        return len(self.targets)

    def image(self, index: int) -> Image.Image:
        """Sample ``index`` as an RGB PIL image (before ``transform``); a file that fails to decode
        gives the black placeholder (see the module docstring) or raises when ``strict``."""
        if self._arrays is not None:
            return to_rgb(Image.fromarray(self._arrays[index]))
        path = self._paths[index]
        try:
            return open_rgb(path)
        except UnreadableImage as err:
            if self.strict:
                raise
            self._failures.record(index, self.sources[index], err.reason)
            warnings.warn(f"{err}; it passed the scan, so it is used as a black image with its label "
                          "(recorded in read_failures())", stacklevel=2)
            width, height = (int(v) for v in self._sizes[index]) if self._sizes is not None else (1, 1)
            return Image.new("RGB", (max(width, 1), max(height, 1)))

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self.image(index)
        out = self.transform(image) if self.transform is not None else TF.to_dtype(TF.to_image(image), torch.float32, scale=True)
        return out, int(self.targets[index])

    def read_failures(self) -> list[tuple[int, str, str]]:
        """``(index, source, reason)`` of every sample that failed when read, in any process."""
        return self._failures.entries()

    def write_report(self, path: str | Path) -> Path:
        """Every skipped entry and read failure, one line each (see :func:`.skips.write_report`)."""
        return write_report(path, self.name, self.skipped, self.read_failures(),
                            "each was used as a black image with its label")

    def subset(self, size: int | None, seed: int = 0) -> LabelledImages:
        """A deterministic random subset of ``size`` samples (in dataset order); all if ``size`` is
        None or not smaller than the dataset."""
        if size is None or size >= len(self):
            return self
        chosen = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:size].sort().values.numpy()
        return self.select(chosen, f"{self.name}[{size}, seed {seed}]")

    def select(self, indices: Sequence[int], name: str | None = None) -> LabelledImages:
        """The samples at ``indices`` (same classes, skipped list and settings)."""
        chosen = np.asarray(indices, dtype=np.int64)
        return LabelledImages(
            name or self.name, self.classes, self.targets[chosen], [self.sources[i] for i in chosen],
            None if self._arrays is None else self._arrays[chosen],
            None if self._paths is None else [self._paths[i] for i in chosen],
            self.transform, self.skipped, None if self._sizes is None else self._sizes[chosen],
            self.strict, self.report_path,
        )


def labelled_files(name: str, classes: list[str], files: Sequence[Path], targets: Sequence[int],
                   transform: Callable | None, strict: bool, skipped: Skipped | None = None,
                   report: str | Path | None = None, class_folders: Path | None = None) -> LabelledImages:
    """Header-check the files a data set's metadata lists and build the set from those that pass.

    ``skipped`` carries what the caller already refused (missing files, bad metadata rows). When
    anything was skipped, one console line names the first entry and a report file (``report``, or
    a file in the temporary folder) names every one; ``strict=True`` raises instead.
    ``class_folders``: the root of an ImageFolder tree, whose classes without a readable image are
    reported as ``<root>/<class>`` (they stay classes, with no samples).
    """
    skipped = list(skipped or [])
    kept, sizes = scan_images(files, skipped, f"checking {name}")
    labels = np.asarray([targets[i] for i in kept], dtype=np.int64)
    empty = []
    if class_folders is not None:
        counts = np.bincount(labels, minlength=len(classes))
        empty = [c for c, n in zip(classes, counts, strict=True) if n == 0]
        skipped += [(printable(class_folders / c), "empty class folder: no readable images") for c in empty]
    report_path = _report(name, skipped, len(files), report, strict)
    if empty:
        Console(stderr=True, soft_wrap=True).print(
            f"class folders without readable images (kept as classes with no samples): {', '.join(empty)}",
            style="yellow", markup=False)
    if not kept:
        raise ValueError(f"No readable images in {name} ({len(files)} files checked, all rejected"
                         + (f"; listed in {printable(report_path)}" if report_path else "") + ").")
    paths = [Path(files[i]) for i in kept]
    return LabelledImages(name, classes, labels, [printable(p) for p in paths], paths=paths, transform=transform,
                          skipped=skipped, sizes=sizes, strict=strict, report=report_path)


def _report(name: str, skipped: Skipped, checked: int, report: str | Path | None, strict: bool) -> Path | None:
    if not skipped:
        return None
    path = Path(report) if report else default_report_path(name)
    write_report(path, name, skipped)
    if strict:
        listed = "; ".join(f"{p}: {r}" for p, r in skipped[:SHOWN_SKIPS])
        raise ValueError(f"{len(skipped)} problems in {name} (strict mode): {listed}"
                         f"{' ...' if len(skipped) > SHOWN_SKIPS else ''}; all listed in {printable(path)}. "
                         "Fix or remove them, or load without strict.")
    Console(stderr=True, soft_wrap=True).print(summary(name, skipped, checked, path), style="yellow", markup=False)
    return path


def default_report_path(name: str) -> Path:
    """``<tmp>/procedural_perception/skipped-<name>.txt`` (the name made safe for a file name)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in printable(name)).strip("_")[-120:]
    return Path(tempfile.gettempdir()) / "procedural_perception" / f"skipped-{safe or 'data'}.txt"


def files_in_folders(folders: Sequence[tuple[Path, int]], skipped: Skipped) -> tuple[list[Path], list[int]]:
    """Image files below each ``(folder, label)`` (nested folders included, see
    :func:`.scan.walk_files`): ``(files, labels)``. Files without an image extension are skipped
    with that reason (file-browser metadata such as ``.DS_Store`` silently)."""
    files, labels = [], []
    for folder, label in folders:
        for path in walk_files(folder, skipped):
            if path.name in IGNORED_FILES:
                continue
            if not has_image_extension(path):
                skipped.append((printable(path), f"not an image file (extension {path.suffix or 'none'})"))
                continue
            files.append(path)
            labels.append(label)
    return files, labels
