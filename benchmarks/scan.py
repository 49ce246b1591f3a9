"""Folder scanning benchmark (`make bench-scan`, QUICK=1 for the < 60 s version).

Rows (benchmarks/results/scan.json), every one against the previous pre-pass measured in the same
run: decoding every file completely on one thread (``open_rgb`` of each file, what the labelled
loader did before use), so a folder is usable only after all of it was decoded:

* listing and header-checking a synthetic tree of 100,000 small files (QUICK: 5,000; 100 class
  folders, half JPEG and half PNG, 24 x 24 px, written once to a cache folder under /tmp) with the
  new scan (:func:`procedural_perception.datasets.scan.walk_files` + ``check_files`` on the usable
  cores), then with one process, then listing alone;
* the cost per file at ImageNet's typical size (500 x 375 JPEG, quality 90, ~110 KB for natural
  photos; these are smooth synthetic ones), header check against full decode;
* the time for ImageNet's 1,281,167 training files, extrapolated from the measured per-file costs
  (listing per file from the synthetic tree, checks at ImageNet size), marked as an extrapolation.

Every method runs on a warm page cache (the files are read once first). On cold or network
storage the header check also reads less: its first and last 16 bytes plus what the header
parser asks for, against the whole file for a decode.

Small files understate the gain: a 24 px file decodes almost as fast as its header parses, while a
500 x 375 JPEG takes ~25x longer to decode than to check.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from rich.console import Console

from procedural_perception.core.benchmark_rows import quick, row, write_rows
from procedural_perception.datasets.image_files import header_problem, open_rgb
from procedural_perception.datasets.scan import check_files, has_image_extension, walk_files

IMAGENET_TRAIN = 1_281_167  # files in ILSVRC 2012's training set
CLASSES = 100
SIDE = 24
CACHE = Path(tempfile.gettempdir()) / "pp-scan-cache"
console = Console()


def synthetic_tree(n: int) -> Path:
    """``n`` small images in ``CLASSES`` folders, written once (a marker file says the tree is complete)."""
    root = CACHE / f"tree_{n}"
    if (root / ".complete").exists():
        return root
    console.print(f"writing {n:,} files to {root} (once)")
    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, SIDE * SIDE * 3).reshape(SIDE, SIDE, 3)
    for i in range(n):
        folder = root / f"class_{i % CLASSES:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
        image = Image.fromarray(np.roll(pixels, i % SIDE, axis=0))
        image.save(folder / f"{i:06d}.jpg", quality=90) if i % 2 else image.save(folder / f"{i:06d}.png")
    (root / ".complete").write_text(str(n))
    return root


def imagenet_sized(count: int) -> list[Path]:
    folder = CACHE / "imagenet_sized"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    paths = []
    for i in range(count):
        path = folder / f"{i:04d}.jpg"
        if not path.exists():
            noise = Image.fromarray(rng.integers(0, 255, (375, 500, 3), dtype=np.uint8))
            noise.filter(ImageFilter.GaussianBlur(2)).save(path, quality=90)
        paths.append(path)
    return paths


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def listing(root: Path) -> list[Path]:
    return [p for p in walk_files(root, []) if has_image_extension(p)]


def full_decode(paths: list[Path]) -> int:
    """The previous pre-pass: every file decoded completely, one thread; returns the readable count."""
    readable = 0
    for path in paths:
        try:
            open_rgb(path)
            readable += 1
        except OSError:
            pass
    return readable


def new_scan(root: Path, processes: int | None) -> int:
    files = listing(root)
    return sum(reason is None for reason, _ in check_files(files, "bench", processes))


def main() -> list[dict]:
    n = 5_000 if quick() else 100_000
    root = synthetic_tree(n)
    cores = min(len(os.sched_getaffinity(0)), 8)
    for path in listing(root):  # warm the page cache, so every method below reads from memory
        path.read_bytes()
    list_s, files = timed(listing, root)
    assert len(files) == n, f"{root} holds {len(files)} files, expected {n}: remove {CACHE} and run again"
    decode_s, decoded = timed(full_decode, files)
    scan_s, scanned = timed(new_scan, root, cores)
    single_s, single = timed(new_scan, root, 1)
    assert decoded == scanned == single == n, (decoded, scanned, single)  # same verdicts on a clean tree
    baseline = "full decode, one thread (previous pre-pass)"
    rows = [
        row(f"scan {n:,} files: list + header checks, {cores} processes", scan_s, "s", baseline, decode_s,
            higher_is_better=False, files_per_s=n / scan_s),
        row(f"scan {n:,} files: list + header checks, 1 process", single_s, "s", baseline, decode_s,
            higher_is_better=False, files_per_s=n / single_s),
        row(f"scan {n:,} files: listing only (os.scandir walk)", list_s, "s", baseline, decode_s, higher_is_better=False),
    ]
    sized = imagenet_sized(50 if quick() else 300)
    header_s, _ = timed(lambda: [header_problem(p) for p in sized])
    decode_big_s, _ = timed(full_decode, sized)
    per_header, per_decode = header_s / len(sized), decode_big_s / len(sized)
    rows.append(row("per file at ImageNet size (500x375 JPEG): header check", per_header * 1e6, "us",
                    "full decode", per_decode * 1e6, higher_is_better=False))
    per_list = list_s / n
    speedup = (single_s - list_s) / max(scan_s - list_s, 1e-9)  # of the checks with `cores` processes, measured above
    projected_new = IMAGENET_TRAIN * (per_list + per_header / speedup)
    projected_old = IMAGENET_TRAIN * (per_list + per_decode)
    rows.append(row(f"ImageNet train ({IMAGENET_TRAIN:,} files), extrapolated: new scan on {cores} cores",
                    projected_new / 60, "min", "full decode, one thread (extrapolated)", projected_old / 60,
                    higher_is_better=False, extrapolated=True, parallel_speedup=speedup))
    return rows


if __name__ == "__main__":
    write_rows("scan", main())
