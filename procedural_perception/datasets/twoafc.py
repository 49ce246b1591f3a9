"""Two-alternative forced-choice (2AFC) triplets: a reference, two variations, and the share ``p``
of judges who found the second variation (``img1``) closer to the reference.

Sources (``load_twoafc(spec)``):

- ``nights:<root>[:split]`` or a folder holding ``data.csv``: the NIGHTS layout (DreamSim). Columns
  ``votes``, ``split`` (train / val / test), ``is_imagenet``, the preference ``right_vote`` (= p for
  ``img1``) and the paths ``ref_path``, ``left_path`` (img0), ``right_path`` (img1) relative to the
  root; the generic names ``p``, ``ref``, ``img0``, ``img1`` are accepted too. Rows with fewer than
  6 votes are dropped (as the paper does). Splits: train, val (the paper's 1,720 triplets), test,
  test_imagenet, test_no_imagenet.
- ``distortion_2afc[:seed]``: built offline from real photographs (scikit-image's sample images):
  a random crop, a mildly distorted copy and a strongly distorted copy (same distortion type, blur,
  noise, JPEG, contrast or shift, 3x the strength), in random order; ``p`` is 1 when ``img1`` is the
  mild one, else 0. **This is a distortion-ordering test, not human judgments**: it checks that
  embeddings order perceptual damage monotonically, which every sensible encoder should do. Its
  numbers are not comparable to NIGHTS scores.

All images are resized (bicubic) to ``image_size`` x ``image_size`` (224 in the paper) and returned
as float ``[3, S, S]`` in [0, 1]; items are ``(ref, img0, img1, p)``.
"""

from __future__ import annotations

import abc
import csv
import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter
from torch.utils.data import Dataset

from procedural_perception.datasets.image_files import image_to_tensor, open_rgb
from procedural_perception.datasets.photos import PHOTOS

MIN_VOTES = 6  # NIGHTS: keep triplets on which at least 6 judges agreed (DreamSim's filter)
SPLITS = ("train", "val", "test", "test_imagenet", "test_no_imagenet")
DISTORTIONS = ("blur", "noise", "jpeg", "contrast", "shift")
STRONG_FACTOR = 3.0  # the strong copy gets 3x the mild distortion strength
COMPONENTS = ("ref", "img0", "img1")


class TwoAFCTriplets(Dataset, abc.ABC):
    """Base: ``image(i, which)`` loads one image (``which`` 0 = ref, 1 = img0, 2 = img1); ``p[i]``
    is the preference for img1. ``skipped`` lists ``(row, reason)`` dropped while loading."""

    p: torch.Tensor
    image_size: int

    def __init__(self) -> None:
        self.skipped: list[tuple[str, str]] = []

    def __len__(self) -> int:
        return len(self.p)

    @abc.abstractmethod
    def image(self, index: int, which: int) -> torch.Tensor:
        """Image ``which`` (0 ref, 1 img0, 2 img1) of triplet ``index`` as float ``[3, S, S]``."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return (*(self.image(index, w) for w in range(3)), self.p[index])

    def component(self, which: int) -> TripletComponent:
        """One image of every triplet as an ``(image, index)`` dataset, for ``embed_dataset``."""
        return TripletComponent(self, which)


class TripletComponent(Dataset):
    def __init__(self, triplets: TwoAFCTriplets, which: int) -> None:
        self.triplets, self.which = triplets, which

    def __len__(self) -> int:
        return len(self.triplets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.triplets.image(index, self.which), index


def square_resize(image: Image.Image | np.ndarray, size: int) -> torch.Tensor:
    """Bicubic resize to ``size x size`` (no crop, as DreamSim loads NIGHTS), clamped to [0, 1]."""
    x = image_to_tensor(image)
    return F.interpolate(x[None], size=(size, size), mode="bicubic", antialias=True,
                         align_corners=False)[0].clamp_(0, 1)


class NightsTriplets(TwoAFCTriplets):
    def __init__(self, root: str | Path, split: str = "val", image_size: int = 224,
                 min_votes: int = MIN_VOTES, limit: int | None = None) -> None:
        super().__init__()
        self.root, self.image_size = Path(root), image_size
        table = self.root / "data.csv"
        if not table.exists():
            raise FileNotFoundError(f"NIGHTS: {table} not found; give the folder holding data.csv and the "
                                    "ref/, distort/ image folders (DreamSim's nights layout).")
        if split not in SPLITS:
            raise ValueError(f"NIGHTS split {split!r}: choose one of {', '.join(SPLITS)}.")
        with table.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        self.paths: list[tuple[Path, Path, Path]] = []
        prefs = []
        for row in rows:
            if float(row["votes"]) < min_votes or not _in_split(row, split):
                continue
            paths = tuple(self.root / _column(row, names) for names in
                          (("ref_path", "ref"), ("left_path", "img0"), ("right_path", "img1")))
            missing = [str(p) for p in paths if not p.is_file()]
            if missing:
                self.skipped.append((row.get("id", "?"), f"missing {', '.join(missing)}"))
                continue
            self.paths.append(paths)
            prefs.append(float(_column(row, ("right_vote", "p"))))
            if limit is not None and len(self.paths) >= limit:
                break
        self.p = torch.tensor(prefs, dtype=torch.float32)
        if not self.paths:
            raise ValueError(f"NIGHTS: no {split} triplet with >= {min_votes} votes and existing images in {table}.")

    def image(self, index: int, which: int) -> torch.Tensor:
        return square_resize(open_rgb(self.paths[index][which]), self.image_size)  # checked decode, names the file


def _column(row: dict, names: tuple[str, ...]) -> str:
    for name in names:
        if name in row:
            return row[name]
    raise ValueError(f"NIGHTS data.csv has none of the columns {names}; found {', '.join(row)}.")


def _in_split(row: dict, split: str) -> bool:
    if split in ("train", "val", "test"):
        return row["split"] == split
    imagenet = str(row.get("is_imagenet", "")).strip().lower() == "true"
    return row["split"] == "test" and imagenet == (split == "test_imagenet")


class DistortionTriplets(TwoAFCTriplets):
    """Distortion-ordering triplets from real photos (NOT human judgments; see the module doc)."""

    def __init__(self, n: int = 200, seed: int = 0, image_size: int = 224) -> None:
        super().__init__()
        import skimage.data

        self.image_size, self.seed = image_size, seed
        self.photos = [np.asarray(getattr(skimage.data, name)()) for name in PHOTOS]
        # which of img0 / img1 is the mild copy, drawn once so p is known without rendering
        self.p = torch.tensor([float(self._plan(i)[4]) for i in range(n)])

    def _plan(self, index: int) -> tuple[int, tuple[int, int, int], str, float, bool]:
        rng = np.random.default_rng([self.seed, index])
        photo = int(rng.integers(len(self.photos)))
        h, w = self.photos[photo].shape[:2]
        side = int(min(h, w) * rng.uniform(0.35, 0.8))
        box = (int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1)), side)
        kind = DISTORTIONS[int(rng.integers(len(DISTORTIONS)))]
        strength = float(rng.uniform(0.5, 1.0))
        mild_is_img1 = bool(rng.integers(2))
        return photo, box, kind, strength, mild_is_img1

    def image(self, index: int, which: int) -> torch.Tensor:
        photo, (y, x, side), kind, strength, mild_is_img1 = self._plan(index)
        crop = Image.fromarray(np.ascontiguousarray(self.photos[photo][y:y + side, x:x + side])).convert("RGB")
        crop = crop.resize((self.image_size, self.image_size), Image.BICUBIC)
        if which == 0:
            return image_to_tensor(crop)
        mild = (which == 2) == mild_is_img1
        level = strength * (1.0 if mild else STRONG_FACTOR)
        return image_to_tensor(distort(crop, kind, level, np.random.default_rng([self.seed, index, which])))


def distort(image: Image.Image, kind: str, level: float, rng: np.random.Generator) -> np.ndarray:
    """One distortion at ``level`` (~0.5-3): blur sigma = 1.5 level px, noise std = 0.06 level,
    JPEG quality = 60 / level, contrast x (1 - 0.25 level) (floored), shift = 4 level px."""
    if kind == "blur":
        return np.asarray(image.filter(ImageFilter.GaussianBlur(1.5 * level)))
    if kind == "noise":
        a = np.asarray(image, dtype=np.float32) / 255.0
        return np.clip(a + rng.normal(0, 0.06 * level, a.shape), 0, 1).astype(np.float32)
    if kind == "jpeg":
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=max(2, int(60 / level)))
        return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    if kind == "contrast":
        a = np.asarray(image, dtype=np.float32) / 255.0
        factor = max(0.05, 1 - 0.25 * level)
        return np.clip((a - a.mean()) * factor + a.mean(), 0, 1).astype(np.float32)
    if kind == "shift":
        step = max(1, int(round(4 * level)))
        return np.roll(np.asarray(image), (step, step), axis=(0, 1))
    raise ValueError(f"Unknown distortion {kind!r}; choose one of {', '.join(DISTORTIONS)}.")


def load_twoafc(spec: str, image_size: int = 224, limit: int | None = None) -> TwoAFCTriplets:
    """``distortion_2afc[:seed]`` (default 200 triplets, or ``limit``), ``nights:<root>[:split]`` or a
    folder with ``data.csv`` (split val)."""
    kind, _, rest = spec.partition(":")
    if kind == "distortion_2afc":
        return DistortionTriplets(n=limit or 200, seed=int(rest or 0), image_size=image_size)
    if kind == "nights":
        root, _, split = rest.partition(":")
        return NightsTriplets(root, split or "val", image_size, limit=limit)
    if (Path(spec) / "data.csv").exists():
        return NightsTriplets(spec, "val", image_size, limit=limit)
    raise FileNotFoundError(f"Unknown 2AFC source {spec!r}: give distortion_2afc[:seed], nights:<root>[:split] "
                            "or a folder holding NIGHTS' data.csv.")
