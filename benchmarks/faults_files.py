"""Hostile files in data folders: each case against every reader it concerns, with what survived.

:func:`scenarios` is this file's part of ``make bench-faults``: one row per case, in the shared row
format (``value`` = trials survived, ``baseline`` = trials run), with ``trials``, ``survived``,
``samples_lost`` (readable samples a reader failed to deliver: 0 is the documented behaviour) and
``recover_s`` (wall time the hostile entry cost the reader, against the same folder without it).

A trial puts the hostile entries of a case among :data:`GOOD` readable images at a position drawn
from the trial's seed and runs one reader over the whole folder through a DataLoader with one
worker process (so a crash would be a worker's): the labelled folder (``load_labelled``), the
training folder (``ImageFolderDataModule``) and the segmentation folder (``images/`` + ``masks/``).
It survives when the reader raises nothing, delivers every readable sample, and names every
hostile entry in its report (skipped list or report file); for a damaged MedMNIST ``.npz`` and a
COCO file with broken polygons the documented behaviour is a clear refusal or an excluded image.

Unreadable permissions cannot be tried as root (root reads a mode-000 file), and the benchmark runs
as root here: a FIFO named like an image (opening it would block forever) and a folder named like
an image stand for unreadable entries; ``tests/test_datasets_hostile.py`` tries real permissions in
a child process that drops root's permission-bypassing capabilities.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import tempfile
import time
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from procedural_perception.core.benchmark_rows import quick, row, write_rows

GOOD = 6  # readable 16 x 16 images in every trial folder
SIZE = 16


# --------------------------------------------------------------------------- hostile entries
def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width x height`` (a decompression bomb's signature)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def encoded(fmt: str, size: tuple[int, int] = (48, 40), seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


def _bombs(folder: Path) -> list[str]:
    (folder / "bomb_huge.png").write_bytes(png_declaring(40_000, 40_000))  # 1.6 G px: PIL refuses at open
    (folder / "bomb_large.png").write_bytes(png_declaring(10_000, 10_000))  # 100 M px: PIL only warns
    return ["bomb_huge.png", "bomb_large.png"]


def _aspect(folder: Path) -> list[str]:
    Image.new("RGB", (400, 2), (9, 9, 9)).save(folder / "strip.png")  # 200:1
    return ["strip.png"]


def _truncated(folder: Path) -> list[str]:
    for name, fmt in (("cut.png", "PNG"), ("cut.jpg", "JPEG"), ("cut.tif", "TIFF")):
        data = encoded(fmt)
        (folder / name).write_bytes(data[: len(data) * 2 // 3])
    return ["cut.png", "cut.jpg", "cut.tif"]


def _lying_extension(folder: Path) -> list[str]:
    (folder / "notes.jpg").write_text("a text file named like an image")
    (folder / "zero.png").write_bytes(b"")
    (folder / "png_inside.jpg").write_bytes(encoded("PNG", (SIZE, SIZE)))  # readable: kept
    return ["notes.jpg", "zero.png"]


def _symlinks(folder: Path) -> list[str]:
    os.symlink("..", folder / "loop")  # a folder link back to a parent
    os.symlink("self.jpg", folder / "self.jpg")  # a file link to itself
    os.symlink("nowhere.png", folder / "broken.png")
    return ["loop", "self.jpg", "broken.png"]


def _unreadable(folder: Path) -> list[str]:
    os.mkfifo(folder / "fifo.jpg")  # open() would wait for a writer forever
    (folder / "folder.png").mkdir()  # a folder named like an image
    Image.new("RGB", (SIZE, SIZE)).save(folder / "folder.png" / "inner.txt", "PNG")  # not an image extension
    return ["fifo.jpg", "folder.png"]


def damaged_inside() -> bytes:
    """A JPEG whose header and end are intact but whose coded data holds a stray start-of-frame
    marker in the middle: it passes the scan-time checks and fails only when decoded (libjpeg:
    "broken data stream"). Zeroed or random bytes there would not do: JPEG decoding tolerates them;
    64 x 64 keeps the middle of the file past the coding tables (at 16 x 16 the stray marker is ignored)."""
    data = encoded("JPEG", (64, 64))
    return data[: len(data) // 2] + b"\xff\xc0" + bytes(20) + data[len(data) // 2:]


def _damaged(folder: Path) -> list[str]:
    (folder / "damaged.jpg").write_bytes(damaged_inside())
    return ["damaged.jpg"]


def _non_utf8(folder: Path) -> list[str]:
    name = os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes: not valid UTF-8
    (folder / name).write_bytes(encoded("PNG", (SIZE, SIZE)))  # readable: kept, with an escaped source
    return []


CASES: dict[str, Callable[[Path], list[str]]] = {
    "decompression bombs (huge declared size)": _bombs,
    "absurd aspect ratio": _aspect,
    "truncated PNG / JPEG / TIFF": _truncated,
    "extension that lies, empty file": _lying_extension,
    "symlink loop, self-link, broken link": _symlinks,
    "FIFO and folder named like images": _unreadable,
    "non-UTF-8 file name": _non_utf8,
    "damage inside the data (found when decoded, in a worker)": _damaged,
}

# What a user sees for each case (the reader's skip summary; every entry is listed in the report file).
SUMMARY = "<folder>: skipped N entries (M image files checked; first: {}); every one is listed in <folder>/skipped.txt"
MESSAGES = {
    "decompression bombs (huge declared size)": SUMMARY.format(
        "class_a/bomb_huge.png: decompression bomb: Image size (1600000000 pixels) exceeds limit of 178956970 pixels"),
    "absurd aspect ratio": SUMMARY.format("class_a/strip.png: absurd aspect ratio 400 x 2 (200:1, the limit is 50:1)"),
    "truncated PNG / JPEG / TIFF": SUMMARY.format(
        "class_a/cut.jpg: cannot decode: OSError: image file is truncated (122 bytes not processed)"),
    "extension that lies, empty file": SUMMARY.format(
        "class_a/notes.jpg: not an image (its content is no format PIL reads, whatever its extension)"),
    "symlink loop, self-link, broken link": SUMMARY.format("class_a/broken.png: broken symlink (its target does not exist)"),
    "FIFO and folder named like images": SUMMARY.format("class_a/fifo.jpg: not a regular file (a FIFO)"),
    "non-UTF-8 file name": "(none: the file is read; its source is stored with the undecodable bytes escaped)",
    "damage inside the data (found when decoded, in a worker)":
        "<folder>: 1 reads failed during training (each replaced by the next readable file); every one is listed "
        "in <folder>/skipped.txt",
}


def good_images(folder: Path, count: int = GOOD, seed: int = 0) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        name = f"good_{seed}_{i}.png"
        Image.fromarray(np.random.default_rng([seed, i]).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(folder / name)
        names.append(name)
    return names


# --------------------------------------------------------------------------- readers
def _loader(dataset, collate=None):
    from torch.utils.data import DataLoader

    return DataLoader(dataset, batch_size=4, num_workers=1, collate_fn=collate)


def read_labelled(root: Path) -> tuple[set[str], str]:
    """Delivered sample names, and the text of everything reported."""
    from procedural_perception.datasets.labelled import load_labelled
    from procedural_perception.evaluations.embedding import eval_transform

    data = load_labelled(str(root), eval_transform(SIZE), report=root.parent / "skipped.txt")
    for _ in _loader(data):
        pass
    failed = {s for _, s, _ in data.read_failures()}
    report = data.write_report(root.parent / "skipped.txt").read_text(encoding="utf-8")
    return {Path(s).name for s in data.sources if s not in failed}, report


def read_training(root: Path) -> tuple[set[str], str]:
    from datamodules.images import ImageFolderDataModule
    from procedural_perception.datasets.image_files import printable

    # Batches of one: training drops the last partial batch of a shuffled epoch (drop_last), so with larger
    # batches a randomly placed file may go unread in the epoch, and a damaged one unreported.
    module = ImageFolderDataModule(str(root), batch_size=1, num_workers=1, report=str(root.parent / "skipped.txt"))
    module.setup()
    for _ in module.train_dataloader():
        pass
    module.teardown()
    failed = {s for _, s, _ in module.dataset.failures.entries()}
    report = module.report.read_text(encoding="utf-8") if module.report.exists() else ""
    return {Path(printable(p)).name for p in module.dataset.files if printable(p) not in failed}, report


def served(data) -> list[int]:
    """Positions of the items an evaluation gets (through its shard-and-gather step, one worker process)."""
    import torch

    from procedural_perception.evaluations.embedding import map_shards

    loaded = map_shards(data, lambda batch: {"n": torch.ones(len(batch[0]))}, batch_size=4, num_workers=1,
                        progress=False)["loaded"]
    return loaded.nonzero().flatten().tolist()


def read_segmentation(root: Path) -> tuple[set[str], str]:
    from procedural_perception.datasets.segmentation import load_segmentation

    data = load_segmentation(str(root), image_size=SIZE, mask_size=SIZE)
    delivered = {data.names[p] for p in served(data)}
    return delivered, "\n".join(f"{n}\t{r}" for n, r in data.skipped)


Layout = tuple[list[str], list[str], Path]  # (readable names, hostile names, the folder holding them)


def _segmentation_folder(root: Path, write: Callable[[Path], list[str]], seed: int) -> Layout:
    images, masks = root / "images", root / "masks"
    good = good_images(images, seed=seed)
    bad = write(images)
    masks.mkdir(parents=True)
    for entry in images.iterdir():
        Image.fromarray(np.ones((SIZE, SIZE), np.uint8)).save(masks / f"{Path(entry.name).stem}.png")
    return good + _kept_extras(images, good, bad), bad, images


def _kept_extras(folder: Path, good: list[str], bad: list[str]) -> list[str]:
    """Readable entries a case adds (``png_inside.jpg``, the non-UTF-8 name), which must be delivered."""
    from procedural_perception.datasets.image_files import printable

    return [printable(p.name) for p in folder.iterdir() if p.name not in good and p.name not in bad
            and p.is_file() and not p.is_symlink()]


def _image_folder(root: Path, write: Callable[[Path], list[str]], seed: int) -> Layout:
    folder = root / "class_a"
    good = good_images(folder, seed=seed)
    bad = write(folder)
    return good + _kept_extras(folder, good, bad), bad, folder


def must_report(folder: Path, bad: list[str]) -> list[str]:
    """The hostile entries every reader must name: those that look like image files (a folder or a
    name without an image extension is no sample candidate for the training and segmentation readers)."""
    from procedural_perception.datasets.scan import has_image_extension

    return [b for b in bad if has_image_extension(Path(b)) and not os.path.isdir(folder / b)]


READERS = {"labelled folder": (_image_folder, read_labelled), "training folder": (_image_folder, read_training),
           "segmentation folder": (_segmentation_folder, read_segmentation)}


def _timed_read(reader: str, root: Path) -> tuple[set[str], str, float]:
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the readers' per-file warnings; the report is checked instead
        delivered, report = READERS[reader][1](root)
    return delivered, report, time.perf_counter() - start


_CLEAN: dict[tuple[str, int, Path], float] = {}  # seconds of the clean run of (reader, seed, work folder)


def clean_seconds(reader: str, seed: int, work: Path) -> float:
    """Wall time of ``reader`` on the trial's folder without hostile entries (the faster of two runs, so
    the first run's one-off costs, imports and caches, are not counted as the clean time)."""
    key = (reader, seed, work)
    if key not in _CLEAN:
        root = work / f"clean_{reader[:4]}_{seed}" / "data"
        READERS[reader][0](root, lambda folder: [], seed)
        _CLEAN[key] = min(_timed_read(reader, root)[2] for _ in range(2))
    return _CLEAN[key]


def trial(case: str, reader: str, seed: int, work: Path, timed: bool = True) -> tuple[bool, int, float, str]:
    """One trial: ``(survived, samples lost, seconds the hostile entries cost, what went wrong)``;
    ``timed=False`` skips the clean runs that the seconds are measured against."""
    baseline = clean_seconds(reader, seed, work) if timed else 0.0
    root = work / f"{abs(hash(case)) % 10**8}_{reader[:4]}_{seed}" / "data"
    good, bad, folder = READERS[reader][0](root, CASES[case], seed)
    try:
        delivered, report, seconds = _timed_read(reader, root)
    except Exception as err:  # noqa: BLE001 -- a crash is what this benchmark counts
        return False, len(good), 0.0, f"{type(err).__name__}: {err}"
    lost = len(set(good) - delivered)
    unreported = [b for b in must_report(folder, bad) if b not in report]
    survived = lost == 0 and not unreported and not (set(bad) & delivered)
    why = "" if survived else f"lost {sorted(set(good) - delivered)}, unreported {unreported}"
    return survived, lost, max(0.0, seconds - baseline), why


# --------------------------------------------------------------------------- refusals
def npz_refusal(work: Path) -> tuple[bool, str]:
    from procedural_perception.datasets.labelled import load_labelled

    path = work / "pathmnist.npz"
    np.savez(path, train_images=np.zeros((2, 8, 8), np.uint8))
    try:
        load_labelled(f"{path}:train")
    except KeyError as err:
        return "train_labels" in str(err) and str(path) in str(err), str(err)
    return False, "loaded without its labels"


def coco_broken_polygons(work: Path) -> tuple[bool, str]:
    from procedural_perception.datasets.segmentation import load_coco

    (work / "val2017").mkdir(parents=True)
    images, annotations = [], []
    broken = {1: [[0, 0, 5, 5, 9]], 2: [[0, 0, "x", 1, 2, 2]], 3: [[0, 0, float("nan"), 1, 2, 2]], 4: [[1, 1]]}
    for i in range(1, 7):
        good_images(work / "val2017", 1, seed=i)
        name = f"good_{i}_0.png"
        images.append({"id": i, "file_name": name, "height": SIZE, "width": SIZE})
        annotations.append({"id": 10 + i, "image_id": i, "category_id": 1,
                            "segmentation": broken.get(i, [[1, 1, 10, 1, 10, 10]])})
    annotations.append({"id": 99, "image_id": 5, "category_id": 42, "segmentation": [[1, 1, 4, 1, 4, 4]]})
    text = json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]})
    (work / "instances.json").write_text(text)  # json writes the float nan as NaN, as a broken exporter would
    data = load_coco(work / "instances.json", work / "val2017", image_size=SIZE, mask_size=SIZE)
    positions = served(data)
    excluded = {name for name, _ in data.skipped}
    expected = {f"good_{i}_0.png" for i in (1, 2, 3, 4, 5)}
    return excluded == expected and data.names == ["good_6_0.png"] and positions == [0], f"excluded {sorted(excluded)}"


# --------------------------------------------------------------------------- rows
def scenarios(trials: int | None = None) -> list[dict]:
    """The rows of this part of ``make bench-faults`` (QUICK=1: one trial per case and reader)."""
    trials = trials or (1 if quick() else 3)
    rows = []
    work = Path(tempfile.mkdtemp(prefix="pp-faults-files-"))
    try:
        for case in CASES:
            outcomes, readers = [], list(READERS)
            for reader in readers:
                for seed in range(trials):
                    outcomes.append(trial(case, reader, seed, work))
            survived = sum(o[0] for o in outcomes)
            rows.append(row(f"hostile files: {case}", survived, "trials survived", "trials run", len(outcomes),
                            trials=len(outcomes), survived=survived, samples_lost=sum(o[1] for o in outcomes),
                            recover_s=round(max(o[2] for o in outcomes), 4), readers=readers, user_message=MESSAGES[case],
                            failures=[o[3] for o in outcomes if not o[0]]))
        for name, check in (("hostile files: MedMNIST .npz with missing keys (refused)", npz_refusal),
                            ("hostile files: COCO JSON with broken polygons (images excluded)", coco_broken_polygons)):
            folder = work / name.split(":")[1].split()[0]
            folder.mkdir(parents=True, exist_ok=True)
            start = time.perf_counter()
            ok, detail = check(folder)
            rows.append(row(name, int(ok), "trials survived", "trials run", 1, trials=1, survived=int(ok),
                            samples_lost=0, recover_s=round(time.perf_counter() - start, 4), detail=detail))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


if __name__ == "__main__":
    write_rows("faults_files", scenarios())
