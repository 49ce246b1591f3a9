"""Coarse centroids for the IVF backend, learnt from embeddings of *procedural* images.

An IVF index's structure (its centroids) is itself data: centroids trained on the memory's real
embeddings would be averages of real images, kept even after every sample is forgotten. Training
them on embeddings of code-rendered images (datamodules/procedural) keeps the index free of real
data; the memory records how they were made (``provenance``). Spherical k-means (unit centroids)
matches the inner-product search.
"""

from __future__ import annotations

from itertools import islice
from typing import Any

import faiss
import numpy as np
import torch

KMEANS_ITERATIONS = 20  # faiss's default number of Lloyd iterations; centroid quality plateaus by then
MIN_POINTS_PER_CENTROID = 39  # faiss warns below this many training points per list


def kmeans_centroids(embeddings: np.ndarray, nlist: int, seed: int = 0,
                     iterations: int = KMEANS_ITERATIONS) -> np.ndarray:
    """``[nlist, dim]`` unit centroids of ``embeddings [N, dim]`` by spherical k-means."""
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or len(x) < nlist:
        raise ValueError(f"k-means needs at least nlist={nlist} embeddings of shape [N, dim], got {list(x.shape)}")
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    kmeans = faiss.Kmeans(x.shape[1], nlist, niter=iterations, spherical=True, seed=seed,
                          min_points_per_centroid=1, max_points_per_centroid=max(256, len(x) // nlist + 1))
    kmeans.train(x)
    return kmeans.centroids.copy()


@torch.no_grad()
def procedural_embeddings(encoder: torch.nn.Module, samples: int, image_size: int = 64, seed: int = 0,
                          process: str = "kml_mixup", batch_size: int = 64) -> np.ndarray:
    """``[samples, D]`` embeddings of ``samples`` procedural images rendered at ``image_size``."""
    from datamodules.procedural.blocks import BlockConfig
    from datamodules.procedural.stream import ProceduralStream

    config = BlockConfig(process=process, seed=seed, image_size=image_size, block_size=min(512, samples))
    stream = ProceduralStream(config, samples_per_epoch=samples, rank=0, world_size=1)
    device = next(iter(encoder.parameters()), torch.empty(0)).device
    out, batch = [], []
    for image in islice(iter(stream), samples):
        batch.append(image)
        if len(batch) == batch_size:
            out.append(encoder(torch.stack(batch).to(device)).float().cpu())
            batch = []
    if batch:
        out.append(encoder(torch.stack(batch).to(device)).float().cpu())
    return torch.cat(out).numpy()


def procedural_centroids(encoder: torch.nn.Module, nlist: int, samples: int = 4096, image_size: int = 64,
                         seed: int = 0, process: str = "kml_mixup") -> tuple[np.ndarray, dict[str, Any]]:
    """Centroids ``[nlist, D]`` from the ``encoder``'s embeddings of procedural images, and their
    provenance (to pass to the IVF backend, which the memory records)."""
    embeddings = procedural_embeddings(encoder, samples, image_size, seed, process)
    provenance = {"source": "procedural", "process": process, "samples": samples, "image_size": image_size,
                  "seed": seed, "encoder": getattr(encoder, "name", type(encoder).__name__), "nlist": nlist,
                  "kmeans_iterations": KMEANS_ITERATIONS}
    return kmeans_centroids(embeddings, nlist, seed), provenance
