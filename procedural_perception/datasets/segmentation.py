"""Images with category masks for the segmentation evaluations (PCA R^2, in-context, kNN).

Every source becomes a :class:`SegmentationImages` dataset whose items are
``(image [3, S, S] float in [0, 1], mask [M, M] long)``: the image is resized (bicubic, no crop, as
the paper resizes COCO to 448 x 448) to ``image_size`` and the mask nearest-resized to ``mask_size``.
Mask values: 0 = background, 1..C = categories (``classes[c]`` names them), 255 = ignore.

``load_segmentation(spec, ...)`` reads the standard on-disk layouts users already have:

- ``coco:<root>[:split]``  ``root/annotations/instances_<split>2017.json`` + ``root/<split>2017/``
  (split ``val`` by default). Category masks from polygons and RLE, later annotations overwrite
  earlier ones (the paper's notebook); category ids are renumbered 1..C in id order.
- ``voc:<root>[:split]``   ``root`` = ``VOC2012`` (or a ``VOCdevkit`` holding it): ``JPEGImages/``,
  ``SegmentationClass/*.png`` (palette indices, 255 = ignore), ``ImageSets/Segmentation/<split>.txt``.
- ``ade20k:<root>[:split]`` ``root`` = ``ADEChallengeData2016``: ``images/<split>/*.jpg`` and
  ``annotations/<split>/*.png`` (0 = "other", treated as background; split ``validation``).
- ``<folder>``             ``folder/images/<name>.<ext>`` and ``folder/masks/<name>.png`` (PNG values are
  the labels, 255 = ignore). A bare path in one of the layouts above is recognised too.
- Built-in real data that installs offline (PyPI wheels, installed with ``--no-deps``):
  ``nuclei`` (stardist's 512 x 512 fluorescence image ``img2d.tif`` with its hand-made nuclei mask,
  cut into 16 tiles of 128 x 128; mask 1 = nucleus), ``nuclei_instances`` (the same tiles, every
  nucleus its own segment: the default for PCA R^2, whose background is removed), ``quokka``
  (imgaug's photo with its polygon, one image).
- ``kml_composites`` procedural check: KML mixtures of two rendered images whose mixing mask is known
  (needs headless EGL), label = which image a pixel came from.

Undecodable files do not stop an evaluation: the item is ``None``, the evaluations' shard-and-gather step
(``procedural_perception.evaluations.embedding.map_shards``) leaves it out
and counts it, and the evaluations treat it as missing. Files are decoded with the checks of
:func:`~procedural_perception.datasets.image_files.open_checked` (decompression bombs, absurd aspect
ratios, FIFOs, truncation), and the failures of every DataLoader worker are recorded in one shared
log (``skipped``). A COCO file whose JSON is broken is refused with the parser's position; an
annotation that cannot be drawn (a polygon with an odd or too small number of coordinates, or
coordinates that are not finite numbers, an RLE whose size is not its image's, an unknown
category) excludes its image, since its mask would be wrong, and is listed in ``skipped``.
"""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from procedural_perception.datasets.image_files import (
    IMAGE_EXTENSIONS,
    UnreadableImage,
    image_to_tensor,
    open_checked,
    printable,
)
from procedural_perception.datasets.skips import ReadFailures, write_report

IGNORE = 255
BUILTINS = ("nuclei", "nuclei_instances", "quokka", "kml_composites")


class SegmentationImages(Dataset):
    """``(image [3, image_size, image_size] float in [0, 1], mask [mask_size, mask_size] long)``.

    ``loaders[i]()`` returns ``(PIL or HxW(x3) array image, HxW integer mask)`` at native size.
    Attributes: ``classes`` (index -> name, 0 = background), ``names`` (one per item), ``skipped``
    (``(name, reason)`` of items left out when the source was read, then of items that failed to
    load in any process of this data set).
    """

    def __init__(self, loaders: Sequence[Callable], names: Sequence[str], classes: Sequence[str],
                 image_size: int = 448, mask_size: int = 112, skipped: list[tuple[str, str]] | None = None) -> None:
        self.loaders, self.names, self.classes = list(loaders), list(names), list(classes)
        self.image_size, self.mask_size = image_size, mask_size
        self.excluded = list(skipped or [])
        self._failures = ReadFailures()

    @property
    def skipped(self) -> list[tuple[str, str]]:
        return self.excluded + [(name, reason) for _, name, reason in self._failures.entries()]

    def __len__(self) -> int:
        return len(self.loaders)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        try:
            image, mask = self.loaders[index]()
            return resize_pair(image, mask, self.image_size, self.mask_size)
        except Exception as err:  # noqa: BLE001 -- a bad file or annotation must not end a worker
            reason = err.reason if isinstance(err, UnreadableImage) else f"{type(err).__name__}: {err}"
            self._failures.record(index, self.names[index], reason)
            return None

    def write_report(self, path: str | Path) -> Path:
        """Every item left out or failed, one line each."""
        return write_report(path, "segmentation", self.excluded,
                            [(0, name, reason) for _, name, reason in self._failures.entries()])

    def subset(self, limit: int | None) -> SegmentationImages:
        """The first ``limit`` items (all when ``None``), a cheap deterministic evaluation subset."""
        return self.select(range(len(self) if limit is None else min(limit, len(self))))

    def select(self, indices: Sequence[int]) -> SegmentationImages:
        """The items at ``indices``, same classes and sizes."""
        return SegmentationImages([self.loaders[i] for i in indices], [self.names[i] for i in indices],
                                  self.classes, self.image_size, self.mask_size, self.excluded)


def resize_pair(image, mask, image_size: int, mask_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Image -> float ``[3, image_size, image_size]`` (bicubic, antialiased, clamped to [0, 1]);
    mask -> long ``[mask_size, mask_size]`` (nearest, so labels are never blended)."""
    x = image_to_tensor(image)
    x = F.interpolate(x[None], size=(image_size, image_size), mode="bicubic", antialias=True,
                      align_corners=False)[0].clamp_(0, 1)
    m = torch.as_tensor(np.asarray(mask, dtype=np.int64))
    m = F.interpolate(m[None, None].float(), size=(mask_size, mask_size), mode="nearest-exact")[0, 0].long()
    return x, m


def decode_rle(counts: list[int] | str, height: int, width: int) -> np.ndarray:
    """COCO run-length encoding -> ``[height, width]`` uint8 mask.

    Runs alternate 0s and 1s (starting with 0s) over the mask in column-major order. ``counts`` is
    the uncompressed list or the compressed string (6-bit characters offset by 48, 5 payload bits
    and a continuation bit; from the third run on each value is stored as a difference to the run
    two places earlier).
    """
    runs = _decode_rle_string(counts) if isinstance(counts, str) else list(counts)
    flat = np.zeros(height * width, dtype=np.uint8)
    position, value = 0, 0
    for run in runs:
        flat[position:position + run] = value
        position += run
        value = 1 - value
    if position != height * width:
        raise ValueError(f"RLE covers {position} pixels, the mask has {height * width}.")
    return flat.reshape(width, height).T


def _decode_rle_string(text: str) -> list[int]:
    runs: list[int] = []
    p = 0
    while p < len(text):
        value, shift, more = 0, 0, True
        while more:
            c = ord(text[p]) - 48
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            p += 1
            shift += 5
            if not more and c & 0x10:
                value |= -1 << shift  # sign extension
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def rasterize_polygons(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """COCO polygons (flat ``[x1, y1, x2, y2, ...]`` lists) -> ``[height, width]`` uint8 mask."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for poly in polygons:
        if len(poly) >= 6:
            draw.polygon([(float(x), float(y)) for x, y in zip(poly[0::2], poly[1::2], strict=False)], fill=1, outline=1)
    return np.asarray(canvas, dtype=np.uint8)


def annotation_mask(segmentation, height: int, width: int) -> np.ndarray:
    """One COCO annotation's ``segmentation`` field (polygons or RLE) -> ``[height, width]`` mask."""
    if isinstance(segmentation, list):
        return rasterize_polygons(segmentation, height, width)
    if isinstance(segmentation, dict) and "counts" in segmentation:
        h, w = segmentation.get("size", (height, width))
        return decode_rle(segmentation["counts"], int(h), int(w))
    raise ValueError(f"Unknown COCO segmentation format: {type(segmentation).__name__}")


def coco_category_mask(annotations: list[dict], height: int, width: int, category_index: dict) -> np.ndarray:
    """Category mask of one image: later annotations overwrite earlier ones; 0 = background."""
    mask = np.zeros((height, width), dtype=np.int64)
    for ann in annotations:
        mask[annotation_mask(ann["segmentation"], height, width).astype(bool)] = category_index[ann["category_id"]]
    return mask


def annotation_problem(ann: dict, info: dict, category_index: dict) -> str | None:
    """Why one COCO annotation cannot be drawn on its image, or None (checked at load time, so a
    broken annotation never reaches a worker)."""
    if ann.get("category_id") not in category_index:
        return f"category_id {ann.get('category_id')!r} is not among the categories"
    segmentation = ann.get("segmentation")
    if isinstance(segmentation, list):
        for poly in segmentation:
            if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
                return "a polygon needs an even number (>= 6) of coordinates"
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in poly):
                return "a polygon coordinate is not a finite number"
        return None
    if isinstance(segmentation, dict) and "counts" in segmentation:
        size = segmentation.get("size")
        if not (isinstance(size, list) and len(size) == 2 and list(size) == [info["height"], info["width"]]):
            return f"RLE size {size!r} is not the image's [{info['height']}, {info['width']}]"
        counts = segmentation["counts"]
        if isinstance(counts, list):
            if not all(isinstance(c, int) and c >= 0 for c in counts) or sum(counts) != info["height"] * info["width"]:
                return "RLE counts are not non-negative runs covering the image"
        elif not isinstance(counts, str):
            return f"RLE counts of type {type(counts).__name__}"
        return None
    return f"segmentation of type {type(segmentation).__name__} is neither polygons nor RLE"


def _read_coco_json(annotation_file: Path) -> dict:
    try:
        data = json.loads(annotation_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"COCO: {annotation_file} is not valid JSON ({err}); download it again.") from err
    missing = [k for k in ("images", "categories") if not isinstance(data, dict) or not isinstance(data.get(k), list)]
    if missing:
        raise ValueError(f"COCO: {annotation_file} has no list {' and '.join(missing)} (not an instances_*.json file).")
    return data


def _coco_image_problem(info: dict) -> str | None:
    if not isinstance(info, dict) or "id" not in info or not isinstance(info.get("file_name"), str):
        return "an image entry needs id and file_name"
    if not all(isinstance(info.get(k), int) and 0 < info[k] <= 100_000 for k in ("height", "width")):
        return f"image size {info.get('height')!r} x {info.get('width')!r} is not two positive integers"
    return None


def load_coco(annotation_file: str | Path, image_dir: str | Path, image_size: int = 448,
              mask_size: int = 112) -> SegmentationImages:
    """COCO instances JSON + image folder -> category-mask dataset (images in the JSON's order;
    images with a broken entry or annotation left out and listed in ``skipped``)."""
    annotation_file, image_dir = Path(annotation_file), Path(image_dir)
    for path in (annotation_file, image_dir):
        if not path.exists():
            raise FileNotFoundError(f"COCO: {path} does not exist (expected annotations/instances_<split>2017.json "
                                    "and <split>2017/ under the COCO root).")
    data = _read_coco_json(annotation_file)
    categories = sorted((c for c in data["categories"] if isinstance(c, dict) and "id" in c), key=lambda c: c["id"])
    category_index = {c["id"]: i + 1 for i, c in enumerate(categories)}
    images, skipped = {}, []
    for info in data["images"]:
        problem = _coco_image_problem(info)
        if problem:
            skipped.append((str(info.get("file_name", "?") if isinstance(info, dict) else "?"), problem))
        else:
            images[info["id"]] = info
    by_image: dict[int, list[dict]] = {}
    broken: dict[int, str] = {}
    for ann in data.get("annotations", []):
        info = images.get(ann.get("image_id")) if isinstance(ann, dict) else None
        if info is None:
            skipped.append((f"annotation {ann.get('id') if isinstance(ann, dict) else '?'}", "its image_id is not a usable image"))
            continue
        problem = annotation_problem(ann, info, category_index)
        if problem:
            broken.setdefault(info["id"], f"annotation {ann.get('id')}: {problem}")
        by_image.setdefault(info["id"], []).append(ann)
    skipped += [(images[i]["file_name"], f"{reason} (the image's mask would be wrong)") for i, reason in broken.items()]

    def loader(info: dict) -> Callable:
        def load():
            image = open_checked(image_dir / info["file_name"])
            mask = coco_category_mask(by_image.get(info["id"], []), info["height"], info["width"], category_index)
            return image, mask
        return load

    kept = [i for i in images.values() if i["id"] not in broken]
    return SegmentationImages([loader(i) for i in kept], [i["file_name"] for i in kept],
                              ["background"] + [str(c.get("name", c["id"])) for c in categories], image_size, mask_size,
                              skipped)


# ---------------------------------------------------------------- image + mask PNG pairs


def load_mask_pairs(pairs: Sequence[tuple[Path, Path]], classes: Sequence[str], image_size: int = 448,
                    mask_size: int = 112, skipped: list[tuple[str, str]] | None = None) -> SegmentationImages:
    """``(image path, mask PNG path)`` pairs; mask pixel values are the labels (palette indices for
    palette PNGs, which is how Pascal VOC stores its classes)."""

    def loader(image_path: Path, mask_path: Path) -> Callable:
        def load():
            image = open_checked(image_path)
            mask = open_checked(mask_path)
            if mask.mode not in ("P", "L", "I", "I;16"):
                raise ValueError(f"{mask_path} is a {mask.mode} image; masks must hold one label per pixel")
            return image, np.asarray(mask, dtype=np.int64)
        return load

    return SegmentationImages([loader(i, m) for i, m in pairs], [printable(i.name) for i, _ in pairs], classes,
                              image_size, mask_size, skipped)


VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")


def load_voc(root: str | Path, split: str = "val", image_size: int = 448, mask_size: int = 112) -> SegmentationImages:
    root = Path(root)
    if (root / "VOC2012").is_dir():
        root = root / "VOC2012"
    split_file = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not split_file.exists():
        raise FileNotFoundError(f"Pascal VOC: {split_file} not found; give the VOC2012 folder (with JPEGImages/, "
                                "SegmentationClass/, ImageSets/Segmentation/) and a split (train, val).")
    stems = split_file.read_text().split()
    pairs = [(root / "JPEGImages" / f"{s}.jpg", root / "SegmentationClass" / f"{s}.png") for s in stems]
    return load_mask_pairs(pairs, VOC_CLASSES, image_size, mask_size)


def load_ade20k(root: str | Path, split: str = "validation", image_size: int = 448,
                mask_size: int = 112) -> SegmentationImages:
    root = Path(root)
    if (root / "ADEChallengeData2016").is_dir():
        root = root / "ADEChallengeData2016"
    image_dir, mask_dir = root / "images" / split, root / "annotations" / split
    if not image_dir.is_dir() or not mask_dir.is_dir():
        raise FileNotFoundError(f"ADE20K: expected {image_dir} and {mask_dir} (the ADEChallengeData2016 layout).")
    pairs = [(p, mask_dir / f"{p.stem}.png") for p in sorted(image_dir.glob("*.jpg")) if (mask_dir / f"{p.stem}.png").exists()]
    # ADE20K's 150 class names live in objectInfo150.csv when present; numbers otherwise.
    classes = ["other"] + [f"class_{i}" for i in range(1, 151)]
    info = root / "objectInfo150.csv"
    if info.exists():
        rows = info.read_text().splitlines()[1:]
        classes = ["other"] + [r.rsplit(",", 1)[-1].split(";")[0].strip() for r in rows]
    return load_mask_pairs(pairs, classes, image_size, mask_size)


def load_folder(root: str | Path, image_size: int = 448, mask_size: int = 112) -> SegmentationImages:
    """``root/images/<name>.<ext>`` with ``root/masks/<name>.png``; images without a mask are skipped."""
    root = Path(root)
    image_dir, mask_dir = root / "images", root / "masks"
    if not image_dir.is_dir() or not mask_dir.is_dir():
        raise FileNotFoundError(f"{root}: a segmentation folder needs images/ and masks/ subfolders "
                                "(mask = PNG with the same name, one label per pixel, 255 = ignore).")
    pairs = [(p, mask_dir / f"{p.stem}.png") for p in sorted(image_dir.iterdir())
             if p.suffix.lower() in IMAGE_EXTENSIONS and (mask_dir / f"{p.stem}.png").exists()]
    if not pairs:
        raise FileNotFoundError(f"{root}: no image in images/ has a mask of the same name in masks/.")
    labels, kept, skipped = set(), [], []
    for image_path, mask_path in pairs:
        try:
            labels |= {int(v) for v in np.unique(np.asarray(open_checked(mask_path)))}
            kept.append((image_path, mask_path))
        except UnreadableImage as err:
            skipped.append((printable(image_path.name), f"mask {err.reason}"))
    if not kept:
        raise FileNotFoundError(f"{root}: no mask in masks/ can be read ({skipped[0][1]}).")
    n = max(labels - {0, IGNORE}, default=0)
    return load_mask_pairs(kept, ["background"] + [f"class_{i}" for i in range(1, n + 1)], image_size, mask_size, skipped)


# ---------------------------------------------------------------- built-in data


def _package_file(package: str, relative: str) -> Path:
    """A data file inside an installed wheel, found without importing the package (its own
    dependencies are not needed for the data)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"The built-in data needs the wheel '{package}' (only its data files are used): "
            f"pip install --no-deps {'stardist==0.9.2' if package == 'stardist' else 'imgaug==0.4.0'}")
    return Path(list(spec.submodule_search_locations)[0]) / relative


def load_nuclei(instances: bool = False, tile: int = 128, image_size: int = 448,
                mask_size: int = 112) -> SegmentationImages:
    """stardist's fluorescence image of nuclei with its hand-annotated instance mask, cut into tiles.

    ``instances=False``: mask 1 = nucleus; ``True``: every nucleus its own label (1..K per tile).
    """
    image = np.asarray(Image.open(_package_file("stardist", "data/images/img2d.tif")), dtype=np.float32)
    labels = np.asarray(Image.open(_package_file("stardist", "data/images/mask2d.tif")), dtype=np.int64)
    image = image / max(image.max(), 1.0)
    loaders, names = [], []
    for y in range(0, image.shape[0] - tile + 1, tile):
        for x in range(0, image.shape[1] - tile + 1, tile):
            crop, mask = image[y:y + tile, x:x + tile], labels[y:y + tile, x:x + tile]
            if instances:
                ids = np.union1d([0], mask)  # sorted, starts with 0, so background stays 0
                mask = np.searchsorted(ids, mask)
            else:
                mask = (mask > 0).astype(np.int64)
            loaders.append(lambda c=crop, m=mask: (c, m))
            names.append(f"img2d_y{y}_x{x}")
    classes = ["background", "nucleus"]
    return SegmentationImages(loaders, names, classes, image_size, mask_size)


def load_quokka(image_size: int = 448, mask_size: int = 112) -> SegmentationImages:
    """imgaug's quokka photo with its polygon outline (1 = animal)."""
    image = Image.open(_package_file("imgaug", "quokka.jpg")).convert("RGB")
    notes = json.loads(_package_file("imgaug", "quokka_annotations.json").read_text())
    polygon = [v for point in notes["polygons"][0]["keypoints"] for v in (point["x"], point["y"])]
    mask = rasterize_polygons([polygon], image.height, image.width).astype(np.int64)
    return SegmentationImages([lambda: (image, mask)], ["quokka"], ["background", "animal"], image_size, mask_size)


def load_kml_composites(n: int = 16, seed: int = 0, image_size: int = 448, mask_size: int = 112) -> SegmentationImages:
    """Procedural check: KML composites ``s2 * m + s3 * (1 - m)`` of rendered program images
    (``datamodules.procedural.kml``), labelled by which image a pixel mostly comes from
    (1: ``m >= 0.5``, s2; 2: s3). Renders ``3 n`` images on first access (needs headless EGL)."""
    rendered: list[tuple[torch.Tensor, torch.Tensor]] = []

    def composites() -> list[tuple[torch.Tensor, torch.Tensor]]:
        if not rendered:
            from datamodules.procedural.blocks import BlockConfig, BlockMaker
            from datamodules.procedural.kml import kml

            config = BlockConfig(process="shaders", seed=seed, image_size=image_size, block_size=3 * n, reuse=1.0)
            images = BlockMaker(config)(0).float().div_(255.0)
            mixed, m = kml(images[0::3], images[1::3], images[2::3])
            rendered.extend(zip(mixed, torch.where(m[:, 0] >= 0.5, 1, 2), strict=True))
        return rendered

    def loader(i: int) -> Callable:
        def load():
            image, mask = composites()[i]
            return image.permute(1, 2, 0).numpy(), mask.numpy()
        return load

    return SegmentationImages([loader(i) for i in range(n)], [f"kml_{seed}_{i}" for i in range(n)],
                              ["background", "cut from s2", "cut from s3"], image_size, mask_size)


def load_segmentation(spec: str, image_size: int = 448, mask_size: int = 112,
                      limit: int | None = None) -> SegmentationImages:
    """Resolve a segmentation source (see the module docstring) and keep its first ``limit`` items."""
    kind, _, rest = spec.partition(":")
    root, _, split = rest.partition(":") if kind in ("coco", "voc", "ade20k") else ("", "", "")
    sizes = dict(image_size=image_size, mask_size=mask_size)
    if kind == "nuclei":
        data = load_nuclei(False, **sizes)
    elif kind == "nuclei_instances":
        data = load_nuclei(True, **sizes)
    elif kind == "quokka":
        data = load_quokka(**sizes)
    elif kind == "kml_composites":
        data = load_kml_composites(n=limit or 16, seed=int(rest or 0), **sizes)
    elif kind == "coco":
        split = split or "val"
        data = load_coco(Path(root) / "annotations" / f"instances_{split}2017.json", Path(root) / f"{split}2017", **sizes)
    elif kind == "voc":
        data = load_voc(root, split or "val", **sizes)
    elif kind == "ade20k":
        data = load_ade20k(root, split or "validation", **sizes)
    else:
        data = _detect_layout(Path(spec), sizes)
    return data.subset(limit)


def _detect_layout(root: Path, sizes: dict) -> SegmentationImages:
    if not root.exists():
        raise FileNotFoundError(
            f"Unknown segmentation source {str(root)!r}: give one of {', '.join(BUILTINS)}, "
            "coco:<root>[:split], voc:<root>[:split], ade20k:<root>[:split], or a folder with images/ and masks/.")
    if (root / "annotations").is_dir() and list((root / "annotations").glob("instances_val2017.json")):
        return load_coco(root / "annotations" / "instances_val2017.json", root / "val2017", **sizes)
    if (root / "SegmentationClass").is_dir() or (root / "VOC2012").is_dir():
        return load_voc(root, "val", **sizes)
    if (root / "images" / "validation").is_dir() or (root / "ADEChallengeData2016").is_dir():
        return load_ade20k(root, "validation", **sizes)
    return load_folder(root, **sizes)
