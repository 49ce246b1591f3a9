"""Image files: which files count as images, how they are decoded and converted, one place for all.

Every reader of real images (labelled sets for the visual memory, segmentation sources, 2AFC
triplets, the training folder ``datamodules/images.py``, the fixed feature-map photos) decodes
through these functions, so an image is the same tensor wherever it is read. Every image becomes
8-bit RGB: grey, palette (with transparency), RGBA/LA (composited on white), 16-bit and 32-bit
integer, float and CMYK images are converted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

# Suffixes read as images (lower case); anything else in a data folder is skipped and counted.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
# Files that are not worth a warning when skipped (folder metadata written by file browsers).
IGNORED_FILES = (".DS_Store", "Thumbs.db", "desktop.ini")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB (alpha composited on white, high bit depths scaled, CMYK converted)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16") or (image.mode == "I" and values.max(initial=0) > 255):
            values = values / 65535.0 * 255.0  # 16-bit range
        elif image.mode == "F" and values.max(initial=0) <= 1.0:
            values = values * 255.0  # float images in [0, 1]
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def open_rgb(path: Path) -> Image.Image:
    """Decode a file completely (so truncation is detected) and convert it to RGB."""
    with Image.open(path) as image:
        image.load()
        return to_rgb(image)


def array_to_uint8(images: np.ndarray) -> np.ndarray:
    """``[N, H, W]`` or ``[N, H, W, C]`` of any numeric dtype as uint8 (``C`` = 1 is dropped)."""
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (3, 4)):
        raise ValueError(f"expected images [N, H, W] or [N, H, W, 3|4], got shape {list(images.shape)} "
                         "(3-D volumes are not supported).")
    if images.dtype == np.uint8:
        return images
    values = images.astype(np.float64)
    top = 1.0 if values.max(initial=0) <= 1.0 else (255.0 if values.max() <= 255 else 65535.0)
    return np.clip(np.rint(values / top * 255.0), 0, 255).astype(np.uint8)


def find_images(root: str | Path, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> list[Path]:
    """All files below ``root`` (recursively) whose suffix is an image extension, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Image folder {root} does not exist; set data.root=/path/to/images.")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
    if not files:
        raise FileNotFoundError(f"No images ({', '.join(extensions)}) found below {root}.")
    return files


def load_rgb(path: Path) -> torch.Tensor:
    """Decode one file to float ``[3, H, W]`` in [0, 1], converted as the labelled sets are
    (grey, palette, RGBA, 16-bit and CMYK become RGB; see :func:`to_rgb`)."""
    return TF.to_dtype(TF.to_image(open_rgb(path)), torch.float32, scale=True)


def image_to_tensor(image) -> torch.Tensor:
    """PIL image or ``HxW`` / ``HxWx3`` array (uint8, uint16 or float in [0, 1]) -> float ``[3, H, W]``."""
    if isinstance(image, Image.Image):
        if image.mode in ("I;16", "I;16B", "I", "F"):
            image = np.asarray(image, dtype=np.float32)
        else:
            image = np.asarray(image.convert("RGB"))
    a = np.asarray(image)
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    elif np.issubdtype(a.dtype, np.integer) or a.max(initial=0) > 1:
        a = a.astype(np.float32) / max(float(a.max(initial=0)), 1.0)  # 16-bit microscopy: own range
    a = a.astype(np.float32)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    return torch.from_numpy(np.ascontiguousarray(a[..., :3])).permute(2, 0, 1)
