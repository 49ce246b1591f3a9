"""Two-object sprite scenes for compositional generalisation (Wiedemer et al., ICLR 2024 set-up).

A scene has ``K`` objects (slots); object ``k`` has the latent vector

    (x, y, shape, scale, hue)   x in [0.1, 0.9], y in [0.2, 0.8], shape in SHAPES,
                                scale in [0.09, 0.1333], hue in [0.05, 0.95]

``x`` and ``y`` are the object's centre (its centroid) as fractions of the image width and height
(y grows downwards); ``scale`` is the square root of the object's area as a fraction of the image
side, as in Spriteworld (whose shapes all have area ``scale^2``). The scale range is the one the
authors' sampler renders for two objects: [0.09, 0.22] compressed towards 0.09 by ``1 / (K + 1)``.
Scenes are rendered in tensors (no GL), anti-aliased by super-sampling, objects painted in slot
order on a black background.

In- and out-of-distribution (the authors' sampler, ``sampling_utils.py`` and ``data.py``)
-----------------------------------------------------------------------------------------
Every factor is drawn in unit coordinates ``u`` in [0, 1] (``v = low + u (high - low)``; the
categorical shape is ``floor(n_shapes * u)``). For one factor the ``K`` slots' values form a vector
``u_d`` in [0, 1]^K; its **distance to the diagonal** is the L2 norm of its part orthogonal to
``(1, ..., 1)``:

    dist_d = || u_d - mean(u_d) 1 ||_2          (for K = 2: |u_1 - u_2| / sqrt(2))

* **In distribution (ID)**: ``dist_d <= delta`` for every banded factor ``d`` (``delta = 0.125``):
  a point drawn uniformly on the diagonal plus an offset drawn uniformly from the (K-1)-ball of
  radius ``delta`` orthogonal to it, kept when inside the cube. Each slot's marginal still covers
  the full range; only the *combinations* are restricted.
* **Out of distribution (OOD)**: drawn uniformly from the cube and kept when ``dist_d > delta`` for
  at least one banded continuous factor (rejection sampling); the objects of an OOD scene never
  all share one shape (redrawn until they differ, as the authors do).
* ``x`` is banded like the others, then slot ``i`` is shifted by ``i / K`` (mod 1) so that the
  objects of an ID scene sit about ``1/K`` of the width apart instead of on top of each other.
  :func:`in_band` undoes the shift before measuring the distance.

Where this differs from the authors' code, on purpose: (1) shape is banded through its unit value,
as theirs, but membership is judged on the continuous factors only (the rendered shape index loses
the unit value), so the leakage check (:func:`check_no_leakage`) is exact; (2) their OOD rejection
also counts three constant latents (angle, saturation, value), which makes their OOD set almost
uniform, about 1% of it inside the band on every visible factor; here none is; (3) scenes whose
objects' bounding boxes come closer than ``min_separation`` are rejected in both splits, so every
scene is identifiable without occlusion.

Tensors: images ``[N, 3, S, S]`` float in [0, 1]; latents ``[N, K, 5]`` in the raw units above (shape
as a float index); :func:`normalise` maps them to [0, 1], the regression targets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import lightning
import torch
from torch.utils.data import DataLoader, Dataset

FACTORS = ("x", "y", "shape", "scale", "hue")
CONTINUOUS = ("x", "y", "scale", "hue")
# scale: the authors draw [0.09, 0.22] and render 0.09 + (s - 0.09) / (K + 1); for K = 2 that is this range.
RANGES = {"x": (0.1, 0.9), "y": (0.2, 0.8), "scale": (0.09, 0.09 + 0.13 / 3), "hue": (0.05, 0.95)}
KNOWN_SHAPES = ("triangle", "square", "circle")
SHAPE_INDEX = FACTORS.index("shape")
X_INDEX = FACTORS.index("x")
BAND_FACTORS = ("x", "y", "shape", "scale", "hue")
# Half the bounding-box side of each shape per unit of scale: an equilateral triangle of area s^2
# has circumradius 2 s / (3^(1/4) sqrt(3)) = 0.877 s around its centroid; a square s/2; a circle s/sqrt(pi).
HALF_EXTENT = 2 / (3**0.25 * math.sqrt(3))


def normalise(latents: torch.Tensor, n_shapes: int) -> torch.Tensor:
    """Raw latents ``[..., 5]`` -> each factor in [0, 1] (shape: index / (n_shapes - 1))."""
    out = latents.clone()
    for d, name in enumerate(FACTORS):
        if name == "shape":
            out[..., d] = latents[..., d] / max(n_shapes - 1, 1)
        else:
            low, high = RANGES[name]
            out[..., d] = (latents[..., d] - low) / (high - low)
    return out


def denormalise(unit: torch.Tensor, n_shapes: int) -> torch.Tensor:
    """Inverse of :func:`normalise` (shape rounded to the nearest index)."""
    out = unit.clone()
    for d, name in enumerate(FACTORS):
        if name == "shape":
            out[..., d] = torch.round(unit[..., d] * max(n_shapes - 1, 1))
        else:
            low, high = RANGES[name]
            out[..., d] = low + unit[..., d] * (high - low)
    return out


def x_offsets(n_objects: int) -> torch.Tensor:
    """``[K]``: the shift ``i / K`` of slot ``i``'s unit x (the authors' no-overlap offset)."""
    return torch.arange(n_objects, dtype=torch.float32) / n_objects


def diagonal_distance(unit: torch.Tensor) -> torch.Tensor:
    """``[N, K, D]`` unit latents -> ``[N, D]``: L2 distance of each factor's slot vector to the diagonal."""
    return (unit - unit.mean(dim=1, keepdim=True)).norm(dim=1)


def _check_band_factors(band_factors: Sequence[str]) -> None:
    unknown = set(band_factors) - set(FACTORS)
    if unknown:
        raise ValueError(f"Unknown band factors {sorted(unknown)}; choose from {FACTORS}.")


def band_distances(latents: torch.Tensor, n_shapes: int, band_factors: Sequence[str]) -> torch.Tensor:
    """``[N, K, 5]`` raw latents -> ``[N, F]``: distance to the diagonal of each banded continuous factor
    (x measured after undoing the slot offsets)."""
    _check_band_factors(band_factors)
    unit = normalise(latents, n_shapes)
    unit[..., X_INDEX] = torch.remainder(unit[..., X_INDEX] - x_offsets(latents.shape[1]), 1.0)
    index = [FACTORS.index(f) for f in band_factors if f in CONTINUOUS]
    return diagonal_distance(unit[..., index])


def in_band(latents: torch.Tensor, n_shapes: int, delta: float, band_factors: Sequence[str]) -> torch.Tensor:
    """``[N, K, 5]`` raw latents -> ``[N]`` bool: every banded continuous factor within ``delta`` of the diagonal (ID)."""
    # A small tolerance so that a value drawn exactly on the band's edge counts as inside.
    return (band_distances(latents, n_shapes, band_factors) <= delta + 1e-5).all(dim=1)


def separated(latents: torch.Tensor, min_separation: float, object_scale: float = 1.0) -> torch.Tensor:
    """``[N, K, 5]`` -> ``[N]`` bool: every pair of objects' bounding boxes, drawn ``object_scale`` times their
    latent size, is at least ``min_separation`` apart."""
    x, y, s = (latents[..., FACTORS.index(f)] for f in ("x", "y", "scale"))
    s = s * object_scale
    k = latents.shape[1]
    ok = torch.ones(latents.shape[0], dtype=torch.bool)
    for i in range(k):
        for j in range(i + 1, k):
            half = HALF_EXTENT * (s[:, i] + s[:, j])
            gap = torch.maximum((x[:, i] - x[:, j]).abs() - half, (y[:, i] - y[:, j]).abs() - half)
            ok &= gap >= min_separation
    return ok


def _ball_offsets(n: int, n_objects: int, delta: float, generator: torch.Generator) -> torch.Tensor:
    """``[n, K]`` uniform in the (K-1)-ball of radius ``delta`` orthogonal to the diagonal."""
    direction = torch.randn(n, n_objects, generator=generator)
    direction = direction - direction.mean(dim=1, keepdim=True)
    direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
    radius = delta * torch.rand(n, 1, generator=generator) ** (1.0 / max(n_objects - 1, 1))
    return direction * radius


def _band_factor(n: int, n_objects: int, delta: float, generator: torch.Generator) -> torch.Tensor:
    """``[n, K]`` unit values within ``delta`` of the diagonal, uniform over the band inside the cube."""
    values = torch.empty(n, n_objects)
    todo = torch.ones(n, dtype=torch.bool)
    while todo.any():
        m = int(todo.sum())
        draw = torch.rand(m, 1, generator=generator) + _ball_offsets(m, n_objects, delta, generator)
        values[todo] = draw
        todo = ((values < 0) | (values > 1)).any(dim=1)
    return values


def _unit_to_latents(unit: torch.Tensor, n_shapes: int) -> torch.Tensor:
    """Unit draws -> raw latents: shape = floor(n_shapes * u), x shifted by the slot offsets."""
    unit = unit.clone()
    unit[..., SHAPE_INDEX] = torch.floor(n_shapes * unit[..., SHAPE_INDEX]).clamp(max=n_shapes - 1) / max(n_shapes - 1, 1)
    unit[..., X_INDEX] = torch.remainder(unit[..., X_INDEX] + x_offsets(unit.shape[1]), 1.0)
    return denormalise(unit, n_shapes)


def _distinct_shapes(latents: torch.Tensor, n_shapes: int, generator: torch.Generator) -> torch.Tensor:
    """Redraw the shapes of scenes whose objects all share one shape (the authors' OOD rule)."""
    shapes = latents[..., SHAPE_INDEX]
    same = (shapes == shapes[:, :1]).all(dim=1)
    while n_shapes > 1 and same.any():
        shapes[same] = torch.randint(0, n_shapes, (int(same.sum()), latents.shape[1]), generator=generator).float()
        same = (shapes == shapes[:, :1]).all(dim=1)
    return latents


def _draw(n: int, split: str, n_objects: int, n_shapes: int, delta: float, band_factors: Sequence[str],
          generator: torch.Generator) -> torch.Tensor:
    """``n`` candidate scenes of ``split`` before the separation check (raw latents)."""
    unit = torch.rand(n, n_objects, len(FACTORS), generator=generator)
    if split == "id":
        for name in band_factors:
            unit[:, :, FACTORS.index(name)] = _band_factor(n, n_objects, delta, generator)
        return _unit_to_latents(unit, n_shapes)
    latents = _unit_to_latents(unit, n_shapes)
    latents = latents[~in_band(latents, n_shapes, delta, band_factors)]
    return _distinct_shapes(latents, n_shapes, generator)


def sample_latents(
    n: int,
    split: str,
    generator: torch.Generator,
    n_objects: int = 2,
    n_shapes: int = 2,
    delta: float = 0.125,
    band_factors: Sequence[str] = BAND_FACTORS,
    min_separation: float = 0.02,
    object_scale: float = 1.0,
) -> torch.Tensor:
    """``n`` scenes of the ``split`` ("id" or "ood") as raw latents ``[n, n_objects, 5]`` (separated when drawn
    ``object_scale`` times their latent size)."""
    if split not in ("id", "ood"):
        raise ValueError(f"split must be 'id' or 'ood', got {split!r}.")
    _check_band_factors(band_factors)
    if not any(f in CONTINUOUS for f in band_factors):
        raise ValueError(f"band_factors must contain a continuous factor {CONTINUOUS}, got {list(band_factors)}.")
    kept: list[torch.Tensor] = []
    total = 0
    for _ in range(10_000):
        cand = _draw(max(2 * (n - total), 256), split, n_objects, n_shapes, delta, band_factors, generator)
        cand = cand[separated(cand, min_separation, object_scale)]
        kept.append(cand)
        total += len(cand)
        if total >= n:
            return torch.cat(kept)[:n]
    raise RuntimeError(
        f"Could not draw {n} {split} scenes: min_separation={min_separation} leaves almost no room. "
        "Lower min_separation or the number of objects."
    )


def check_no_leakage(
    id_latents: torch.Tensor,
    ood_latents: torch.Tensor,
    n_shapes: int,
    delta: float,
    band_factors: Sequence[str],
) -> dict[str, int]:
    """Raise if any ID scene is off the band or any OOD scene is on it; return the counts checked."""
    id_inside = in_band(id_latents, n_shapes, delta, band_factors)
    ood_inside = in_band(ood_latents, n_shapes, delta, band_factors)
    if not bool(id_inside.all()) or bool(ood_inside.any()):
        raise AssertionError(
            f"ID/OOD leakage: {int((~id_inside).sum())} ID scenes lie off the band and "
            f"{int(ood_inside.sum())} OOD scenes lie on it (delta={delta}, band_factors={list(band_factors)})."
        )
    return {"id": len(id_latents), "ood": len(ood_latents)}


def hue_to_rgb(hue: torch.Tensor) -> torch.Tensor:
    """``[...]`` hue in [0, 1] -> ``[..., 3]`` fully saturated, full-value RGB (HSV with s = v = 1)."""
    h6 = hue.unsqueeze(-1) * 6
    offsets = torch.tensor([3.0, 2.0, 4.0])
    signs = torch.tensor([1.0, -1.0, -1.0])
    bias = torch.tensor([-1.0, 2.0, 2.0])
    return (signs * (h6 - offsets).abs() + bias).clamp(0, 1)


def shape_masks(latents: torch.Tensor, shapes: Sequence[str], size: int, object_scale: float = 1.0) -> torch.Tensor:
    """``[N, K, 5]`` raw latents -> ``[N, K, size, size]`` hard masks (1 inside the object, drawn ``object_scale``
    times its latent size)."""
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    py, px = coords.view(1, 1, size, 1), coords.view(1, 1, 1, size)
    x, y, shape, s = (latents[..., FACTORS.index(f)][..., None, None] for f in ("x", "y", "shape", "scale"))
    s = s * object_scale
    dx, dy, half = px - x, py - y, s / 2
    # Every shape has area s^2 (Spriteworld's convention), centred on its centroid.
    square = (dx.abs() <= half) & (dy.abs() <= half)
    # Equilateral triangle, apex up (y grows downwards): circumradius r, apex at -r, base at +r/2.
    r = HALF_EXTENT * s
    triangle = (dy >= -r) & (dy <= r / 2) & (dx.abs() <= (dy + r) / math.sqrt(3))
    circle = dx**2 + dy**2 <= s**2 / math.pi
    by_name = {"triangle": triangle, "square": square, "circle": circle}
    mask = torch.zeros_like(square)
    for index, name in enumerate(shapes):
        mask |= by_name[name] & (shape.round() == index)
    return mask.float()


def render(latents: torch.Tensor, shapes: Sequence[str], image_size: int = 32, supersample: int = 4,
           chunk: int = 512, object_scale: float = 1.0) -> torch.Tensor:
    """``[N, K, 5]`` raw latents -> ``[N, 3, S, S]`` images in [0, 1] (objects painted in slot order)."""
    out = []
    for start in range(0, len(latents), chunk):
        part = latents[start : start + chunk]
        masks = shape_masks(part, shapes, image_size * supersample, object_scale)  # [n, K, s, s]
        colours = hue_to_rgb(part[..., FACTORS.index("hue")])  # [n, K, 3]
        image = torch.zeros(len(part), 3, image_size * supersample, image_size * supersample)
        for k in range(part.shape[1]):
            m = masks[:, k : k + 1]
            image = image * (1 - m) + m * colours[:, k, :, None, None]
        out.append(torch.nn.functional.avg_pool2d(image, supersample))
    return torch.cat(out) if out else torch.zeros(0, 3, image_size, image_size)


class SpriteScenes(Dataset):
    """Pre-rendered scenes: item ``i`` is ``(image [3, S, S], latents [K, 5] normalised to [0, 1])``."""

    def __init__(self, images: torch.Tensor, latents: torch.Tensor, unit_latents: torch.Tensor) -> None:
        self.images, self.latents, self.unit_latents = images, latents, unit_latents

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.unit_latents[index]

    def head(self, n: int) -> SpriteScenes:
        """The first ``n`` scenes (views of the same tensors)."""
        return SpriteScenes(self.images[:n], self.latents[:n], self.unit_latents[:n])


class CompositionalDataModule(lightning.LightningDataModule):
    """ID train / ID val / OOD test sprite scenes, a pure function of ``seed``.

    ``object_scale`` draws every object that many times its latent size (1: the authors' sizes, 2.9-4.3 px
    at 32 px; 2: the sizes their 64 px scenes have in pixels, used by fast tests). Latents, targets and
    the ID/OOD split do not change with it.

    Batches are ``(images [B, 3, S, S], latents [B, K, 5] in [0, 1])``; ``test_dataloader`` is OOD.
    The raw sets are ``train_set``, ``val_set`` (ID) and ``ood_set`` after :meth:`setup`.
    """

    def __init__(
        self,
        seed: int = 0,
        image_size: int = 64,
        n_train: int = 4000,
        n_val: int = 1000,
        n_test: int = 1000,
        batch_size: int = 64,
        num_workers: int = 0,
        n_objects: int = 2,
        shapes: Sequence[str] = ("triangle", "square"),
        delta: float = 0.125,
        band_factors: Sequence[str] = BAND_FACTORS,
        min_separation: float = 0.02,
        supersample: int = 4,
        object_scale: float = 1.0,
        transform=None,
    ) -> None:
        super().__init__()
        unknown = set(shapes) - set(KNOWN_SHAPES)
        if unknown or len(shapes) < 1:
            raise ValueError(f"Unknown shapes {sorted(unknown)}; choose from {KNOWN_SHAPES}.")
        if object_scale <= 0:
            raise ValueError(f"object_scale must be > 0 (1: the authors' object sizes), got {object_scale}.")
        if transform is not None:
            raise ValueError("CompositionalDataModule takes no transform: its models consume the raw scenes.")
        self.save_hyperparameters(ignore=["transform"])
        self.seed, self.image_size, self.batch_size, self.num_workers = seed, image_size, batch_size, num_workers
        self.sizes = {"train": n_train, "val": n_val, "test": n_test}
        self.n_objects, self.shapes, self.delta = n_objects, tuple(shapes), delta
        self.band_factors, self.min_separation, self.supersample = tuple(band_factors), min_separation, supersample
        self.object_scale = object_scale
        self.train_set = self.val_set = self.ood_set = None

    def make_split(self, name: str) -> SpriteScenes:
        """Render one split; each split has its own generator so sizes of one never change another."""
        offset = {"train": 0, "val": 1, "test": 2}[name]
        generator = torch.Generator().manual_seed(self.seed * 1009 + offset)
        latents = sample_latents(
            self.sizes[name], "ood" if name == "test" else "id", generator, self.n_objects, len(self.shapes),
            self.delta, self.band_factors, self.min_separation, self.object_scale,
        )
        images = render(latents, self.shapes, self.image_size, self.supersample, object_scale=self.object_scale)
        return SpriteScenes(images, latents, normalise(latents, len(self.shapes)))

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set, self.val_set, self.ood_set = (self.make_split(s) for s in ("train", "val", "test"))
            check_no_leakage(
                torch.cat([self.train_set.latents, self.val_set.latents]), self.ood_set.latents,
                len(self.shapes), self.delta, self.band_factors,
            )

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          generator=generator, drop_last=shuffle and len(dataset) >= self.batch_size)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.ood_set, shuffle=False)
