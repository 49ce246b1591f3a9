"""How diverse and how natural procedural images are, beside real photographs: ``make bench-diversity``.

For every process of the registry (``datamodules.procedural.processes.PROCESSES``; new processes join
by themselves), every program family (``datamodules.procedural.families.FAMILIES``) and two real sources, on ``N`` images at 64 px:

- ``vendi``: Vendi score of the images' embeddings under a FIXED reference encoder
  (EfficientNet-Lite0, ImageNet-trained; cosine kernel): the effective number of distinct images;
- ``cosine_distance``: mean pairwise cosine distance of the same embeddings;
- ``spectrum_slope``: slope of the radially averaged power spectrum (log-log; natural images ~ -2);
- ``saturation``, ``std_r|g|b``, ``colourfulness``: colour statistics (Hasler & Süsstrunk 2003).

Real sources: ``photos`` - seeded random square crops (side 25-100% of the shorter side) of the 28
photographs of :mod:`procedural_perception.datasets.wallpapers` (the experiment's out-of-domain training
set; the digital art among the installed wallpapers is left out); ``fashion_mnist`` - a seeded subset of Fashion-MNIST train
(the in-domain row; grey images). Each row's baseline is the same statistic of ``photos`` measured in
the same run (``ratio`` = value / baseline: 1.0 is "like the photographs").

Procedural samples come from ``BLOCKS`` stream blocks of the training data module's own settings
(programs per block, reuse), so a source spans ``BLOCKS`` x programs-per-block programs, as a training
batch does across its shuffle window. Metrics depend on ``N`` (Vendi is at most ``N``): compare rows of
one run only. ``QUICK=1``: 64 images per source (< 60 s on 2 idle cores); otherwise 512.
The rows also go to ``benchmarks/results/diversity.md`` as one table (docs/diversity.md explains it).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from datamodules.procedural.blocks import BlockMaker
from datamodules.procedural.families import FAMILIES
from datamodules.procedural.processes import PROCESSES
from datamodules.shaders import ShaderDataModule
from lightning_modules.encoders import build_encoder
from procedural_perception.core.atomic import atomic_write_text
from procedural_perception.core.benchmark_rows import RESULTS_DIR, quick, row, write_rows
from procedural_perception.datasets import wallpapers
from procedural_perception.datasets.image_files import image_to_tensor, to_rgb
from procedural_perception.evaluations.embedding import labelled_subset
from procedural_perception.evaluations.embedding_geometry import mean_pairwise_cosine, vendi_score
from procedural_perception.evaluations.image_statistics import colour_statistics, power_spectrum_slope

IMAGE_SIZE = 64
# Stream blocks a procedural source's samples are drawn from (8 blocks x 4 programs = 32 programs).
BLOCKS = 8
REFERENCE_ENCODER = "efficientnet_lite0"
# Photos are shrunk to this shorter side before cropping: the smallest crop (25%) still has 128 px.
PHOTO_SIDE = 512
BASELINE = "photos"
SEED = 0


def procedural_source(process: str, n: int, size: int = IMAGE_SIZE, blocks: int = BLOCKS,
                      families: dict[str, float] | None = None) -> torch.Tensor:
    """``n`` uint8 samples ``[n, 3, size, size]`` of ``process`` (programs of ``families``; None: the
    default): blocks 0.. of the training data module's stream configuration (block size ``ceil(n / blocks)``)."""
    block_size = -(-n // blocks)
    config = ShaderDataModule(process, seed=SEED, image_size=size, block_size=block_size, families=families).config
    maker = BlockMaker(config)
    return torch.cat([maker(b) for b in range(blocks)])[:n]


def photo_paths() -> list[str]:
    """The wallpaper photographs (a clear error naming the packages when none is installed)."""
    return [str(p) for p in wallpapers.photograph_files()]


def _shrunk_photo(path: str) -> torch.Tensor:
    """float ``[3, h, w]`` with shorter side :data:`PHOTO_SIDE`; JPEG draft mode decodes wallpapers of up
    to 6000 px at a reduced scale directly (8x faster than decoding them whole)."""
    with Image.open(path) as image:
        scale = PHOTO_SIDE / min(image.size)
        image.draft("RGB", (math.ceil(image.width * scale), math.ceil(image.height * scale)))
        image = to_rgb(image)
        scale = PHOTO_SIDE / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
    return image_to_tensor(image)


def photo_crops(n: int, size: int = IMAGE_SIZE, seed: int = SEED) -> torch.Tensor:
    """``n`` float crops ``[n, 3, size, size]`` of the installed photographs (seeded: photo, side, place)."""
    paths = photo_paths()
    photos = [_shrunk_photo(path) for path in paths]
    rng = np.random.default_rng(seed)
    crops = []
    for _ in range(n):
        photo = photos[int(rng.integers(len(photos)))]
        h, w = photo.shape[-2:]
        side = int(rng.uniform(0.25, 1.0) * min(h, w))
        y, x = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
        crop = photo[:, y : y + side, x : x + side][None]
        crops.append(F.interpolate(crop, size=(size, size), mode="bicubic", antialias=True)[0].clamp(0, 1))
    return torch.stack(crops)


def fashion_mnist(n: int, size: int = IMAGE_SIZE, seed: int = SEED) -> torch.Tensor:
    """``n`` Fashion-MNIST training images as float ``[n, 3, size, size]`` (the evaluations' preprocessing)."""
    data = labelled_subset("fashion_mnist:train", size, n, seed)
    return torch.stack([data[i][0] for i in range(len(data))])


@torch.no_grad()
def embed(encoder: torch.nn.Module, images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """Embeddings ``[n, D]`` of float (or uint8) images ``[n, 3, S, S]``."""
    images = images.float() / 255.0 if images.dtype == torch.uint8 else images
    return torch.cat([encoder(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


def statistics(images: torch.Tensor, encoder: torch.nn.Module) -> dict[str, float]:
    features = embed(encoder, images)
    return {"vendi": vendi_score(features), "cosine_distance": 1.0 - mean_pairwise_cosine(features),
            "spectrum_slope": power_spectrum_slope(images), **colour_statistics(images)}


UNITS = {"vendi": "effective images", "cosine_distance": "1 - cosine", "spectrum_slope": "log-log slope",
         "saturation": "HSV S", "std_r": "std [0,1]", "std_g": "std [0,1]", "std_b": "std [0,1]",
         "colourfulness": "Hasler-Süsstrunk M"}


def sources(n: int) -> dict[str, Callable[[], torch.Tensor]]:
    """Every source, the baseline first: photos, Fashion-MNIST, each registered process, then each program
    family's images as they are (``family/<name>``: the ``shaders`` process drawing from that family only)."""
    out: dict[str, Callable[[], torch.Tensor]] = {BASELINE: lambda: photo_crops(n),
                                                  "fashion_mnist": lambda: fashion_mnist(n)}
    for process in PROCESSES:
        out[process] = lambda process=process: procedural_source(process, n)
    for family in FAMILIES:
        out[f"family/{family}"] = lambda family=family: procedural_source("shaders", n, families={family: 1.0})
    return out


def markdown(table: dict[str, dict[str, float]], n: int) -> str:
    columns = list(UNITS)
    lines = [f"{n} images per source at {IMAGE_SIZE} px; Vendi and cosine distance under {REFERENCE_ENCODER}.", "",
             "| source | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for source, stats in table.items():
        cells = ["-" if stats.get(c) is None else f"{stats[c]:.3g}" if c != "vendi" else f"{stats[c]:.1f}"
                 for c in columns]
        lines.append(f"| {source} | " + " | ".join(cells) + (f" {stats['error']}" if "error" in stats else "") + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    n = 64 if quick() else 512
    torch.manual_seed(SEED)
    encoder = build_encoder(REFERENCE_ENCODER)
    table: dict[str, dict] = {}
    for name, make in sources(n).items():
        start = time.perf_counter()
        try:
            table[name] = statistics(make(), encoder)
        except (OSError, RuntimeError, ValueError) as err:  # one missing source must not hide the others
            table[name] = {"error": f"{type(err).__name__}: {err}"}
        print(f"{name}: {time.perf_counter() - start:.1f} s", flush=True)
    baseline = table.get(BASELINE, {})
    rows = [row(f"diversity/{name}/{metric}", stats[metric], unit, f"{BASELINE} (real photographs)",
                baseline.get(metric) if name != BASELINE else None, images=n, image_size=IMAGE_SIZE,
                encoder=REFERENCE_ENCODER)
            for name, stats in table.items() if "error" not in stats for metric, unit in UNITS.items()]
    rows += [row(f"diversity/{name}/error", None, stats["error"]) for name, stats in table.items() if "error" in stats]
    write_rows("diversity", rows)
    atomic_write_text(RESULTS_DIR / "diversity.md", markdown(table, n))


if __name__ == "__main__":
    main()
