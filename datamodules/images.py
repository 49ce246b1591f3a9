"""Real images as DINO training data (the paper's real-data comparison rows).

``root`` is a folder, ``wallpapers`` (the offline photographs of :mod:`procedural_perception.datasets.wallpapers`,
cut into tiles once: the analogue of the paper's Places row) or any labelled data spec
(``fashion_mnist:train``, ``flowers102:<root>:train``, ...: the in-domain row, the analogue of its
ImageNet row). The folder may be an ImageFolder tree (``root/<class>/<image>``) or any flat or nested
folder: every image file below ``root`` is a sample and labels are ignored (DINO is self-supervised). Each image is
decoded to RGB, optionally resized (shorter side to ``resize``), and given to ``transform`` as a float
tensor ``[3, H, W]`` in [0, 1], the same interface as the procedural data modules.

Listing is fast and checked by headers only (:mod:`procedural_perception.datasets.scan`: seconds to
minutes for ImageNet's 1.28 M files, where decoding everything first took hours). A file refused
then (empty, truncated, not an image, a decompression bomb, an absurd aspect ratio, a FIFO, a
symlink loop, unreadable) is never a sample; a file that fails when decoded during training is
replaced by the next readable one, so a DataLoader worker never dies of a bad file. Both are
counted and every one is listed in the report file (``report``, by default
``<tmp>/procedural_perception/skipped-<folder>.txt``), written at setup and again at the end of fit.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from rich.console import Console
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from procedural_perception.core.config import check_minimums
from procedural_perception.datasets import wallpapers
from procedural_perception.datasets.image_files import UnreadableImage, load_rgb, printable
from procedural_perception.datasets.labelled import PREFIXES, load_labelled
from procedural_perception.datasets.labelled_images import default_report_path
from procedural_perception.datasets.scan import has_image_extension, scan_images, walk_files
from procedural_perception.datasets.skips import ReadFailures, summary, write_report

# A worker that meets this many unreadable files in a row stops with an error instead of trying the
# whole folder: that many failures after a clean scan means the storage went away, not bad files.
MAX_CONSECUTIVE_FAILURES = 64


class ImageFiles(Dataset):
    """Map-style dataset of image files; a file that fails to decode is replaced by the next good one.

    ``failures`` records ``(index, path, reason)`` of every file that failed, in any process.
    """

    def __init__(self, files: list[Path], resize: int | None = None, transform: Callable | None = None,
                 failures: ReadFailures | None = None) -> None:
        self.files = files
        self.resize = v2.Resize(resize, interpolation=v2.InterpolationMode.BICUBIC, antialias=True) if resize else None
        self.transform = transform
        self.failures = failures or ReadFailures()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Any:
        for offset in range(min(len(self.files), MAX_CONSECUTIVE_FAILURES)):
            position = (index + offset) % len(self.files)
            try:
                image = load_rgb(self.files[position])
            except UnreadableImage as err:
                self.failures.record(position, printable(self.files[position]), err.reason)
                warnings.warn(f"{err}; using the next file instead", stacklevel=2)
                continue
            if self.resize is not None:
                image = self.resize(image).clamp(0, 1)
            return self.transform(image) if self.transform is not None else image
        raise RuntimeError(f"{MAX_CONSECUTIVE_FAILURES} files in a row from {printable(self.files[index])} on cannot "
                           f"be read (listed in {self.failures.path}): is the storage still mounted?")


class UnlabelledImages(Dataset):
    """The images of a labelled set without their labels, resized and transformed like :class:`ImageFiles`."""

    def __init__(self, labelled: Dataset, resize: int | None = None, transform: Callable | None = None) -> None:
        self.labelled = labelled
        self.resize = v2.Resize(resize, interpolation=v2.InterpolationMode.BICUBIC, antialias=True) if resize else None
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labelled)

    def __getitem__(self, index: int) -> Any:
        image = self.labelled[index][0]
        if self.resize is not None:
            image = self.resize(image).clamp(0, 1)
        return self.transform(image) if self.transform is not None else image


def is_folder(root: str) -> bool:
    """Whether ``root`` names a folder (else it is ``wallpapers`` or a labelled data spec's prefix)."""
    return Path(root).is_dir() or root != wallpapers.NAME and root.partition(":")[0] not in PREFIXES


class ImageFolderDataModule(L.LightningDataModule):
    """Args:
        root: folder of images (ImageFolder tree or flat, searched recursively), ``wallpapers`` (the
            offline photographs, tiled) or a labelled data spec such as ``fashion_mnist:train``.
        batch_size: images per device and step.
        num_workers: data-loader worker processes.
        resize: shorter side after decoding (None keeps the file's size; the random crops then
            sample from the full image as DINO does on ImageNet).
        verify: header-check every file at setup (~0.1 ms a file) so unreadable ones are skipped and
            counted up front; False lists the files only (failures are then all found when read).
        report: file listing every skipped file and read failure (default under the temporary folder).
        transform: per-image callable (the DINO multi-crop); None yields the image tensors.
    """

    def __init__(
        self,
        root: str | None = None,
        batch_size: int = 64,
        num_workers: int = 2,
        resize: int | None = None,
        verify: bool = True,
        report: str | None = None,
        transform: Callable | None = None,
    ) -> None:
        super().__init__()
        if root is None:
            raise ValueError("DATA=images needs a folder: add data.root=/path/to/images.")
        check_minimums("data", batch_size=(batch_size, 1), num_workers=(num_workers, 0), resize=(resize, 8))
        self.root = root
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.resize = resize
        self.verify = verify
        self.report = Path(report) if report else default_report_path(root)
        self.transform = transform
        self.skipped: list[tuple[str, str]] = []
        self.dataset: ImageFiles | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        if not is_folder(self.root):
            if self.root == wallpapers.NAME:
                self.root = str(wallpapers.cut_tiles())
            else:
                self.dataset = UnlabelledImages(load_labelled(self.root, report=self.report), self.resize, self.transform)
                return
        root = Path(self.root)
        if not root.is_dir():
            raise FileNotFoundError(f"Image folder {printable(root)} does not exist; set data.root=/path/to/images.")
        files = [p for p in walk_files(root, self.skipped) if has_image_extension(p)]
        if self.verify:
            kept, _ = scan_images(files, self.skipped, f"checking {printable(root)}")
            files = [files[i] for i in kept]
        if self.skipped:
            write_report(self.report, printable(root), self.skipped)
            Console(stderr=True, soft_wrap=True).print(summary(printable(root), self.skipped, len(files) + len(self.skipped),
                                                               self.report), style="yellow", markup=False)
        if not files:
            raise FileNotFoundError(f"None of the image files under {printable(root)} can be read"
                                    + (f" (listed in {printable(self.report)})." if self.skipped else "."))
        self.dataset = ImageFiles(files, self.resize, self.transform)

    def teardown(self, stage: str | None = None) -> None:
        """At the end of fit: the report gains the files that failed when read, and one line says how many."""
        failures = self.dataset.failures.entries() if isinstance(self.dataset, ImageFiles) else []
        if failures:
            write_report(self.report, printable(self.root), self.skipped, failures, "each replaced by the next readable file")
            Console(stderr=True, soft_wrap=True).print(
                f"{printable(self.root)}: {len(failures)} reads failed during training (each replaced by the next "
                f"readable file); every one is listed in {printable(self.report)}", style="yellow", markup=False)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        if len(self.dataset) < self.batch_size:
            raise ValueError(
                f"{self.root} holds {len(self.dataset)} readable images, fewer than one batch "
                f"(data.batch_size={self.batch_size}); lower data.batch_size."
            )
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=True,
            num_workers=self.num_workers,
            drop_last=True,  # equal batches keep the loss centre update and the lr scaling exact
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
        )
