"""Image files: which files count as images, how they are checked, decoded and converted, one place for all.

Every reader of real images (labelled sets for the visual memory, segmentation sources, 2AFC
triplets, the training folder ``datamodules/images.py``, the fixed feature-map photos) decodes
through these functions, so an image is the same tensor wherever it is read. Every image becomes
8-bit RGB: grey, palette (with transparency), RGBA/LA (composited on white), 16-bit and 32-bit
integer, float and CMYK images are converted.

Files are checked twice, cheaply when a folder is listed and completely when a file is read:

* :func:`header_problem` (scan time, ~0.1 ms a file) opens the file without decoding its pixels:
  it must be a regular file (a FIFO would block the reader forever), not empty, an image PIL
  identifies by its content (not its extension), of sane declared dimensions (at most
  ``PIL.Image.MAX_IMAGE_PIXELS`` pixels, so a decompression bomb is refused before it is
  decoded, and an aspect ratio of at most :data:`MAX_ASPECT_RATIO`), and its last bytes must end
  the format's structure (JPEG's EOI marker, PNG's IEND chunk, GIF's trailer, the sizes that
  TIFF, BMP and WebP headers declare), which catches truncated files. Only a file whose end looks
  wrong is decoded completely at scan time, to decide (JPEGs with trailing bytes are fine).
* :func:`open_rgb` (read time) repeats the checks and decodes everything, so damage inside the
  data that the header and tail cannot show is found when the image is first used. It raises
  :class:`UnreadableImage` (an ``OSError``) naming the file and the reason, whatever the decoder
  raised (Pillow's plugins raise ``OSError``, ``SyntaxError``, ``ValueError``, ``struct.error``,
  ``DecompressionBombError``, ...), so every reader catches one type.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

# Suffixes read as images (lower case); anything else in a data folder is skipped and counted.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
# Files that are not worth a warning when skipped (folder metadata written by file browsers).
IGNORED_FILES = (".DS_Store", "Thumbs.db", "desktop.ini")
# Longest side / shorter side above which a file is refused. The evaluations resize the shorter side
# to 256 before a centre crop, so an image of ratio r becomes 256 x 256 r pixels: a 1 x 100,000 strip
# would grow to 6.5 G pixels and end the process. Panoramas rarely exceed 10:1; 50:1 keeps the
# resized image under 3.3 M pixels.
MAX_ASPECT_RATIO = 50.0
# Bytes read from the end of a file for the truncation check (PNG's IEND chunk is the longest, 12).
TAIL_BYTES = 16
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


class UnreadableImage(OSError):
    """A file that cannot serve as an image; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"cannot read {printable(path)}: {reason}")
        self.path, self.reason = str(path), reason

    def __reduce__(self):  # DataLoader workers send exceptions to the main process pickled
        return type(self), (self.path, self.reason)


def printable(path: str | Path) -> str:
    """``path`` as text that can always be printed and written as UTF-8.

    File names are bytes on Linux; a name that is not valid UTF-8 reaches Python with surrogate
    escapes, which a UTF-8 console, report file or SQLite text column refuses. Those bytes are
    written as ``\\xNN`` escapes instead (``caf\\xe9.jpg``); valid names are unchanged.
    """
    text = os.fspath(path)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return os.fsencode(text).decode("utf-8", "backslashreplace")


def open_regular(path: str | Path) -> BinaryIO:
    """Open ``path`` for reading only if it is a regular file.

    Opened non-blocking, then checked with ``fstat``: opening a FIFO named ``x.jpg`` normally waits
    for a writer forever (a hung DataLoader worker); a directory, socket or device is refused too.
    Raises :class:`UnreadableImage` for those and for any ``OSError`` (permission, symlink loop,
    vanished file) with its reason.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as err:
        raise UnreadableImage(path, _os_reason(err)) from err
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableImage(path, f"not a regular file ({_file_kind(info.st_mode)})")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _os_reason(err: OSError) -> str:
    if err.errno == errno.ELOOP:
        return "symlink loop (the link resolves to itself)"
    if err.errno == errno.ENOENT:
        return "file not found (listed but absent, a broken symlink, or removed since it was listed)"
    if err.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if err.errno == errno.EISDIR:
        return "not a regular file (a folder)"
    return f"{err.strerror or err}"


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a plain file"


def dimension_problem(size: tuple[int, int]) -> str | None:
    """Why declared dimensions ``(width, height)`` are refused, or None (see :data:`MAX_ASPECT_RATIO`;
    the pixel limit is ``PIL.Image.MAX_IMAGE_PIXELS``, which a user may raise or set to None)."""
    width, height = size
    if width <= 0 or height <= 0:
        return f"declared size {width} x {height} is empty"
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        return (f"decompression bomb: declares {width} x {height} = {width * height:,} pixels, above "
                f"PIL.Image.MAX_IMAGE_PIXELS = {limit:,}")
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        return f"absurd aspect ratio {width} x {height} ({ratio:.0f}:1, the limit is {MAX_ASPECT_RATIO:.0f}:1)"
    return None


def _end_looks_truncated(image: Image.Image, head: bytes, tail: bytes, size: int) -> bool:
    """True when the file's last bytes do not close the structure its format declares."""
    fmt = image.format
    if fmt in ("JPEG", "MPO"):
        return not tail.endswith(b"\xff\xd9")
    if fmt == "PNG":
        return not tail.endswith(_PNG_END)
    if fmt == "GIF":
        return not tail.endswith(b";")
    if fmt == "BMP":
        declared = int.from_bytes(head[2:6], "little")  # bfSize; 0 is allowed by the format
        return declared > size
    if fmt == "WEBP":
        return int.from_bytes(head[4:8], "little") + 8 > size  # RIFF chunk size
    if fmt == "TIFF":
        tags = getattr(image, "tag_v2", {})
        for offsets, counts in ((273, 279), (324, 325)):  # strips, tiles
            if offsets in tags and counts in tags:
                ends = [int(o) + int(c) for o, c in zip(tags[offsets], tags[counts], strict=False)]
                return max(ends, default=0) > size
    return False


def header_problem(path: str | Path) -> tuple[str | None, tuple[int, int]]:
    """The scan-time check: ``(reason, (width, height))``, reason None when the file looks readable.

    Reads the header and the last :data:`TAIL_BYTES` bytes; decodes the pixels only when the end of
    the file looks truncated (see the module docstring).
    """
    try:
        with open_regular(path) as handle:
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                return "empty file (0 bytes)", (0, 0)
            head = handle.read(TAIL_BYTES)
            handle.seek(max(0, size - TAIL_BYTES))
            tail = handle.read(TAIL_BYTES)
            handle.seek(0)
            with Image.open(handle) as image:
                problem = dimension_problem(image.size)
                if problem is None and _end_looks_truncated(image, head, tail, size):
                    image.load()
                return problem, image.size
    except UnreadableImage as err:
        return err.reason, (0, 0)
    except Exception as err:  # noqa: BLE001 -- any decoder error marks the file unreadable
        return _decode_reason(err), (0, 0)


def _decode_reason(err: Exception) -> str:
    if isinstance(err, Image.DecompressionBombError):
        return f"decompression bomb: {err}"
    if isinstance(err, Image.UnidentifiedImageError):
        return "not an image (its content is no format PIL reads, whatever its extension)"
    return f"cannot decode: {type(err).__name__}: {err}"


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


def open_checked(path: str | Path) -> Image.Image:
    """Check and decode a file completely (so truncation is detected), keeping its mode (masks
    need their label values). Raises :class:`UnreadableImage` naming the file and the reason for
    every kind of failure."""
    try:
        with open_regular(path) as handle, Image.open(handle) as image:
            problem = dimension_problem(image.size)
            if problem is not None:
                raise UnreadableImage(path, problem)
            image.load()
            return image  # the pixels are loaded: usable after the file is closed
    except UnreadableImage:
        raise
    except Exception as err:  # noqa: BLE001 -- one error type for every decoder failure
        raise UnreadableImage(path, _decode_reason(err)) from err


def open_rgb(path: str | Path) -> Image.Image:
    """:func:`open_checked`, converted to 8-bit RGB (see :func:`to_rgb`)."""
    return to_rgb(open_checked(path))


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
