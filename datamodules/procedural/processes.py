"""The four processes of the paper, as batched tensor operations on a block's pool of program images.

``combine(pool, indices, generator, cache)``: pool uint8 [P, 3, H, W] (a block's program images),
indices long [n, ingredients] (which pool images each sample uses) -> samples [n, 3, H, W] as integer
8-bit levels (uint8, or int16 / float buffers holding whole numbers in [0, 255]: the caller copies
them into its uint8 block). ``cache`` is per pool (masks) and may carry a reusable ``workspace``.

- ``shaders``: one program image as is;
- ``mixup``: convex combination of 6 images, weights ~ Dirichlet(1) (:mod:`.mixup`);
- ``kml``: s2 * m + s3 * (1 - m), m the softened 2-means mask of s1 (:mod:`.kml`); ingredients (s1, s2, s3);
- ``kml_mixup``: the mean of two KML images, ingredients (s1, s2, s3, s1', s2', s3');
- ``stylegan`` / ``dead_leaves``: Baradad et al. 2021's StyleGAN-Oriented and dead leaves (mixed shapes),
  baselines that ``generate`` their samples without GL (:mod:`.stylegan`, :mod:`.dead_leaves`).

A KML mask depends on s1 only, so masks are computed once per pool image (lazily, in ``cache``) and
shared by every sample that cuts with that image; this is what makes KML cheap when images are reused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import dead_leaves, stylegan
from .kml import composite_levels_, kml_mask, quantize_mask
from .mixup import MIXUP_IMAGES, convex_mix, dirichlet_weights

# Pool images whose masks are computed in one batched call (bounds the 256 x 256 float temporaries).
MASK_BATCH = 32
# Samples composited per pass of the KML processes (int16 temporaries of ~1 MB per image stay cached).
COMPOSITE_PART = 8


@dataclass(frozen=True)
class Process:
    """A process. Shader processes ``combine`` a block's pool of program images; a process with ``generate``
    makes its samples itself, ``generate(config, block) -> uint8 [block_size, 3, H, W]`` (no GL, no pool).

    ``default_reuse``: ingredient uses per rendered program image when the data config does not set
    ``reuse`` (see blocks.py); 1 for a process without a pool, where it is unused.
    """

    name: str
    ingredients: int
    combine: Callable[[torch.Tensor, torch.Tensor, torch.Generator, dict], torch.Tensor] | None = None
    generate: Callable[[object, int], torch.Tensor] | None = None
    default_reuse: float = 1.0


def pool_masks(pool: torch.Tensor, cache: dict) -> torch.Tensor:
    """Quantised KML masks of every pool image, int16 [P, 1, H, W], computed once per pool (in ``cache``)."""
    if "masks" not in cache:
        cache["masks"] = torch.cat([
            quantize_mask(kml_mask(pool[i : i + MASK_BATCH]))
            for i in range(0, len(pool), MASK_BATCH)
        ])
    return cache["masks"]


def _buffer(cache: dict, name: str, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
    """A reusable tensor from ``cache["workspace"]`` (fresh multi-MB tensors cost page faults every time)."""
    workspace = cache.setdefault("workspace", {})
    buffer = workspace.get(name)
    if buffer is None or buffer.shape != shape or buffer.dtype != dtype:
        buffer = workspace[name] = torch.empty(shape, dtype=dtype)
    return buffer


def _shaders(pool, indices, generator, cache):
    return pool[indices[:, 0]]


def _mixup(pool, indices, generator, cache):
    weights = dirichlet_weights(len(indices), indices.shape[1], generator)
    return convex_mix(pool, indices, weights, cache.setdefault("workspace", {})).round_()


def _kml_levels(pool, indices, cache, name):
    """int16 KML composites of ingredients (s1, s2, s3) = indices[:, 0..2], in buffer ``name``."""
    if "pool16" not in cache:
        cache["pool16"] = pool.to(torch.int16)
    pool16, masks = cache["pool16"], pool_masks(pool, cache)
    n, shape = len(indices), tuple(pool.shape[1:])
    s2 = torch.index_select(pool16, 0, indices[:, 1], out=_buffer(cache, name, (n, *shape), torch.int16))
    s3 = torch.index_select(pool16, 0, indices[:, 2], out=_buffer(cache, "s3", (n, *shape), torch.int16))
    m = torch.index_select(masks, 0, indices[:, 0], out=_buffer(cache, "mask", (n, 1, *shape[1:]), torch.int16))
    return composite_levels_(s2, s3, m)


def _in_parts(pool, indices, cache, levels):
    """uint8 [n, 3, H, W]: ``levels(pool, part, cache)`` over parts of COMPOSITE_PART samples.

    The int16 temporaries of a part (a few MB) stay in the CPU cache between the composite's
    elementwise passes; over a whole chunk they would stream through memory (~30% slower measured).
    Each sample depends on its own indices only, so parts do not change the result.
    """
    n, shape = len(indices), tuple(pool.shape[1:])
    out = _buffer(cache, "levels8", (n, *shape), torch.uint8)
    for start in range(0, n, COMPOSITE_PART):
        out[start : start + COMPOSITE_PART] = levels(pool, indices[start : start + COMPOSITE_PART], cache)
    return out


def _kml(pool, indices, generator, cache):
    return _in_parts(pool, indices, cache, lambda p, i, c: _kml_levels(p, i, c, "first"))


def _kml_mixup_levels(pool, indices, cache):
    first = _kml_levels(pool, indices[:, :3], cache, "first")
    second = _kml_levels(pool, indices[:, 3:], cache, "second")
    return first.add_(second).add_(1).bitwise_right_shift_(1)  # mean, rounded half up


def _kml_mixup(pool, indices, generator, cache):
    return _in_parts(pool, indices, cache, _kml_mixup_levels)


# Mixed processes reuse each render in ~24 samples (MIXED_REUSE): on a CPU (llvmpipe) a 224 px program image
# costs several times more than decoding a JPEG, and 24 uses of a fresh image is still far fewer than the
# anchor's (each of its 1.3M stored images was used ~6 times per epoch for 100 epochs). On a GPU, lower it.
# ``shaders`` shows each render once (reuse 1): reusing it would repeat the very same image.
MIXED_REUSE = 24.0

# The registry: adding a process is one module plus one entry here (and a one-line configs/data/<name>.yaml).
PROCESSES: dict[str, Process] = {
    "shaders": Process("shaders", 1, _shaders),
    "mixup": Process("mixup", MIXUP_IMAGES, _mixup, default_reuse=MIXED_REUSE),
    "kml": Process("kml", 3, _kml, default_reuse=MIXED_REUSE),
    "kml_mixup": Process("kml_mixup", 6, _kml_mixup, default_reuse=MIXED_REUSE),
    # Baselines of Baradad et al. 2021, made without GL (each sample a pure function of (seed, index)).
    "stylegan": Process("stylegan", 1, generate=stylegan.generate_block),
    "dead_leaves": Process("dead_leaves", 1, generate=dead_leaves.generate_block),
}


def get_process(name: str) -> Process:
    if name not in PROCESSES:
        raise ValueError(f"unknown process {name!r}; choose one of {sorted(PROCESSES)}")
    return PROCESSES[name]
