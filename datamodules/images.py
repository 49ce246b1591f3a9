"""A folder of real images as DINO training data (the paper's real-data comparison rows).

The folder may be an ImageFolder tree (``root/<class>/<image>``) or any flat or nested folder: every
image file below ``root`` is a sample and labels are ignored (DINO is self-supervised). Each image is
decoded to RGB, optionally resized (shorter side to ``resize``), and given to ``transform`` as a float
tensor ``[3, H, W]`` in [0, 1], the same interface as the procedural data modules. Files that cannot
be decoded are skipped and counted, never fatal.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from PIL import Image, UnidentifiedImageError
from rich.console import Console
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from procedural_perception.core.config import check_minimums
from procedural_perception.datasets.image_files import find_images, load_rgb


class ImageFiles(Dataset):
    """Map-style dataset of image files; a file that fails to decode is replaced by the next good one.

    ``skipped`` lists ``(path, reason)`` of files found unreadable (in this process).
    """

    def __init__(self, files: list[Path], resize: int | None = None, transform: Callable | None = None) -> None:
        self.files = files
        self.resize = v2.Resize(resize, interpolation=v2.InterpolationMode.BICUBIC, antialias=True) if resize else None
        self.transform = transform
        self.skipped: list[tuple[str, str]] = []

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Any:
        for offset in range(len(self.files)):
            path = self.files[(index + offset) % len(self.files)]
            try:
                image = load_rgb(path)
            except (OSError, UnidentifiedImageError, ValueError) as err:
                self.skipped.append((str(path), str(err)))
                warnings.warn(f"skipping unreadable image {path}: {err}", stacklevel=2)
                continue
            if self.resize is not None:
                image = self.resize(image).clamp(0, 1)
            return self.transform(image) if self.transform is not None else image
        raise RuntimeError("No readable image in the folder.")


class ImageFolderDataModule(L.LightningDataModule):
    """Args:
        root: folder of images (ImageFolder tree or flat, searched recursively).
        batch_size: images per device and step.
        num_workers: data-loader worker processes.
        resize: shorter side after decoding (None keeps the file's size; the random crops then
            sample from the full image as DINO does on ImageNet).
        verify: open every file once at setup so unreadable ones are skipped and counted up front.
        transform: per-image callable (the DINO multi-crop); None yields the image tensors.
    """

    def __init__(
        self,
        root: str | None = None,
        batch_size: int = 64,
        num_workers: int = 2,
        resize: int | None = None,
        verify: bool = True,
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
        self.transform = transform
        self.skipped: list[tuple[str, str]] = []
        self.dataset: ImageFiles | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        files = find_images(self.root)
        if self.verify:
            files = self._readable(files)
        self.dataset = ImageFiles(files, self.resize, self.transform)

    def _readable(self, files: list[Path]) -> list[Path]:
        good = []
        for path in files:
            try:
                with Image.open(path) as image:
                    image.verify()
                good.append(path)
            except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
                self.skipped.append((str(path), str(err)))
        if self.skipped:
            Console(stderr=True).print(
                f"[yellow]{len(self.skipped)} of {len(files)} files under {self.root} are not readable "
                f"images and are skipped (first: {self.skipped[0][0]}).[/yellow]"
            )
        if not good:
            raise FileNotFoundError(f"None of the {len(files)} image files under {self.root} can be read.")
        return good

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
