"""Two-object sprite scenes for compositional generalisation (Wiedemer et al., ICLR 2024 set-up).

A scene has ``K`` objects (slots); object ``k`` has the latent vector

    (x, y, shape, scale, hue)   x in [0.1, 0.9], y in [0.2, 0.8], shape in SHAPES,
                                scale in [0.09, 0.22] (side length, fraction of the image), hue in [0.05, 0.95]

``x`` and ``y`` are the object's centre as fractions of the image width and height (y grows
downwards). Scenes are rendered in tensors (no GL), anti-aliased by super-sampling, objects painted
in slot order on a black background.

In- and out-of-distribution (the split the paper's claim is about)
------------------------------------------------------------------
Each factor is normalised to [0, 1] (``u = (v - low) / (high - low)``; ``shape`` becomes
``index / (len(shapes) - 1)``). A scene is **in distribution (ID)** when, for every factor ``d`` in
``band_factors``, all slots lie within ``delta`` of each other:

    max_{i, j} |u_{i,d} - u_{j,d}| <= delta      for every d in band_factors        (the diagonal band)

i.e. the slots' normalised latent vectors restricted to ``band_factors`` lie in a band of half-width
``delta`` around the diagonal ``u_1 = u_2 = ... = u_K`` (max-norm). With ``delta = 0.125`` two objects
of an ID scene share their shape and have similar height, size and hue. Every *single* object value
occurs in ID data (each slot's marginal covers the full range); only the *combinations* are
restricted. **Out of distribution (OOD)** is every scene off the band, drawn by rejection sampling
from the uniform distribution over all combinations. ``x`` is not banded by default: it is the factor
that keeps the objects apart (banding it too would stack them on top of each other); both splits
reject scenes whose objects' bounding boxes come closer than ``min_separation`` so that every scene
is identifiable without occlusion.

Tensors: images ``[N, 3, S, S]`` float in [0, 1]; latents ``[N, K, 5]`` in the raw units above (shape
as a float index); :func:`normalise` maps them to [0, 1], the regression targets.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning
import torch
from torch.utils.data import DataLoader, Dataset

FACTORS = ("x", "y", "shape", "scale", "hue")
CONTINUOUS = ("x", "y", "scale", "hue")
RANGES = {"x": (0.1, 0.9), "y": (0.2, 0.8), "scale": (0.09, 0.22), "hue": (0.05, 0.95)}
KNOWN_SHAPES = ("triangle", "square", "circle")
SHAPE_INDEX = FACTORS.index("shape")


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


def in_band(latents: torch.Tensor, n_shapes: int, delta: float, band_factors: Sequence[str]) -> torch.Tensor:
    """``[N, K, 5]`` raw latents -> ``[N]`` bool: the scene lies in the diagonal band (ID)."""
    unit = normalise(latents, n_shapes)
    inside = torch.ones(latents.shape[0], dtype=torch.bool)
    for name in band_factors:
        values = unit[..., FACTORS.index(name)]
        # A small tolerance so that a value drawn exactly on the band's edge counts as inside.
        inside &= (values.amax(dim=1) - values.amin(dim=1)) <= delta + 1e-6
    return inside


def separated(latents: torch.Tensor, min_separation: float) -> torch.Tensor:
    """``[N, K, 5]`` -> ``[N]`` bool: every pair of objects' bounding boxes is at least ``min_separation`` apart."""
    x, y, s = (latents[..., FACTORS.index(f)] for f in ("x", "y", "scale"))
    k = latents.shape[1]
    ok = torch.ones(latents.shape[0], dtype=torch.bool)
    for i in range(k):
        for j in range(i + 1, k):
            half = (s[:, i] + s[:, j]) / 2
            gap = torch.maximum((x[:, i] - x[:, j]).abs() - half, (y[:, i] - y[:, j]).abs() - half)
            ok &= gap >= min_separation
    return ok


def _uniform_latents(n: int, n_objects: int, n_shapes: int, generator: torch.Generator) -> torch.Tensor:
    unit = torch.rand(n, n_objects, len(FACTORS), generator=generator)
    unit[..., SHAPE_INDEX] = torch.randint(0, n_shapes, (n, n_objects), generator=generator) / max(n_shapes - 1, 1)
    return denormalise(unit, n_shapes)


def _band_latents(
    n: int, n_objects: int, n_shapes: int, delta: float, band_factors: Sequence[str], generator: torch.Generator
) -> torch.Tensor:
    """Uniform over the band: the band is a product over factors, so each banded factor is drawn by its
    own rejection sampler (acceptance about 2*delta per factor instead of (2*delta)^d for all at once)."""
    latents = _uniform_latents(n, n_objects, n_shapes, generator)
    unit = normalise(latents, n_shapes)
    for name in band_factors:
        d = FACTORS.index(name)
        if name == "shape":
            # A categorical factor is in the band only when all objects agree (index spacing > delta).
            if delta < 1.0 / max(n_shapes - 1, 1):
                unit[:, :, d] = unit[:, :1, d]
            continue
        values = unit[:, :, d]
        bad = (values.amax(1) - values.amin(1)) > delta
        while bad.any():
            values[bad] = torch.rand(int(bad.sum()), n_objects, generator=generator)
            bad = (values.amax(1) - values.amin(1)) > delta
    return denormalise(unit, n_shapes)


def sample_latents(
    n: int,
    split: str,
    generator: torch.Generator,
    n_objects: int = 2,
    n_shapes: int = 2,
    delta: float = 0.125,
    band_factors: Sequence[str] = ("y", "shape", "scale", "hue"),
    min_separation: float = 0.02,
) -> torch.Tensor:
    """``n`` scenes of the ``split`` ("id" or "ood") as raw latents ``[n, n_objects, 5]``."""
    if split not in ("id", "ood"):
        raise ValueError(f"split must be 'id' or 'ood', got {split!r}.")
    unknown = set(band_factors) - set(FACTORS)
    if unknown:
        raise ValueError(f"Unknown band factors {sorted(unknown)}; choose from {FACTORS}.")
    kept: list[torch.Tensor] = []
    total = 0
    for _ in range(10_000):
        draw = max(2 * (n - total), 256)
        if split == "id":
            cand = _band_latents(draw, n_objects, n_shapes, delta, band_factors, generator)
        else:
            cand = _uniform_latents(draw, n_objects, n_shapes, generator)
            cand = cand[~in_band(cand, n_shapes, delta, band_factors)]
        cand = cand[separated(cand, min_separation)]
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


def shape_masks(latents: torch.Tensor, shapes: Sequence[str], size: int) -> torch.Tensor:
    """``[N, K, 5]`` raw latents -> ``[N, K, size, size]`` hard masks (1 inside the object)."""
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    py, px = coords.view(1, 1, size, 1), coords.view(1, 1, 1, size)
    x, y, shape, s = (latents[..., FACTORS.index(f)][..., None, None] for f in ("x", "y", "shape", "scale"))
    dx, dy, half = px - x, py - y, s / 2
    square = (dx.abs() <= half) & (dy.abs() <= half)
    # Upward triangle: apex at the top of the box, base (full width) at the bottom; y grows downwards.
    triangle = (dy.abs() <= half) & (dx.abs() <= (dy + half) / 2)
    circle = dx**2 + dy**2 <= half**2
    by_name = {"triangle": triangle, "square": square, "circle": circle}
    mask = torch.zeros_like(square)
    for index, name in enumerate(shapes):
        mask |= by_name[name] & (shape.round() == index)
    return mask.float()


def render(latents: torch.Tensor, shapes: Sequence[str], image_size: int = 32, supersample: int = 4,
           chunk: int = 512) -> torch.Tensor:
    """``[N, K, 5]`` raw latents -> ``[N, 3, S, S]`` images in [0, 1] (objects painted in slot order)."""
    out = []
    for start in range(0, len(latents), chunk):
        part = latents[start : start + chunk]
        masks = shape_masks(part, shapes, image_size * supersample)  # [n, K, s, s]
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

    Batches are ``(images [B, 3, S, S], latents [B, K, 5] in [0, 1])``; ``test_dataloader`` is OOD.
    The raw sets are ``train_set``, ``val_set`` (ID) and ``ood_set`` after :meth:`setup`.
    """

    def __init__(
        self,
        seed: int = 0,
        image_size: int = 32,
        n_train: int = 4000,
        n_val: int = 1000,
        n_test: int = 1000,
        batch_size: int = 64,
        num_workers: int = 0,
        n_objects: int = 2,
        shapes: Sequence[str] = ("triangle", "square"),
        delta: float = 0.125,
        band_factors: Sequence[str] = ("y", "shape", "scale", "hue"),
        min_separation: float = 0.02,
        supersample: int = 4,
        transform=None,
    ) -> None:
        super().__init__()
        unknown = set(shapes) - set(KNOWN_SHAPES)
        if unknown or len(shapes) < 1:
            raise ValueError(f"Unknown shapes {sorted(unknown)}; choose from {KNOWN_SHAPES}.")
        if transform is not None:
            raise ValueError("CompositionalDataModule takes no transform: its models consume the raw scenes.")
        self.save_hyperparameters(ignore=["transform"])
        self.seed, self.image_size, self.batch_size, self.num_workers = seed, image_size, batch_size, num_workers
        self.sizes = {"train": n_train, "val": n_val, "test": n_test}
        self.n_objects, self.shapes, self.delta = n_objects, tuple(shapes), delta
        self.band_factors, self.min_separation, self.supersample = tuple(band_factors), min_separation, supersample
        self.train_set = self.val_set = self.ood_set = None

    def make_split(self, name: str) -> SpriteScenes:
        """Render one split; each split has its own generator so sizes of one never change another."""
        offset = {"train": 0, "val": 1, "test": 2}[name]
        generator = torch.Generator().manual_seed(self.seed * 1009 + offset)
        latents = sample_latents(
            self.sizes[name], "ood" if name == "test" else "id", generator, self.n_objects, len(self.shapes),
            self.delta, self.band_factors, self.min_separation,
        )
        images = render(latents, self.shapes, self.image_size, self.supersample)
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
