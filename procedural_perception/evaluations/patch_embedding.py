"""Dense features of a whole segmentation dataset, sharded over DDP ranks and gathered.

The in-context and kNN segmentation evaluations compare patches *across* images, so every rank
needs every image's patch grid: each rank encodes its strided shard, the shards are gathered
(``procedural_perception.core.distributed.gather_shards``) and all ranks continue with identical tensors, exactly what
one process computes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from rich.progress import track
from torch.utils.data import Dataset

from procedural_perception.core.distributed import gather_shards, rank_and_world, shard_indices
from procedural_perception.datasets.segmentation import IGNORE, iterate_batches


@torch.no_grad()
def embed_patches(encoder: torch.nn.Module, dataset: Dataset, batch_size: int = 16,
                  device: torch.device | str | None = None, progress: bool = True,
                  description: str = "patch features") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Encode ``(image [3, S, S], mask [M, M])`` items of ``dataset``.

    Returns ``features [N, D, h, w]`` (float32, L2-normalised over D, on the CPU),
    ``masks [N, M, M]`` (long) and ``loaded [N]`` (bool; False for items that failed to load, whose
    rows are zeros / ``IGNORE``).
    """
    rank, world = rank_and_world()
    device = torch.device(device) if device is not None else next(encoder.parameters(), torch.empty(0)).device
    size, mask_size = dataset.image_size, dataset.mask_size
    # The output shape from a blank image, so a rank with an empty shard can still join the gather.
    _, d, h, w = encoder.patch_features(torch.zeros(1, 3, size, size, device=device)).shape
    indices = list(shard_indices(len(dataset), rank, world))
    features = torch.zeros(len(indices), d, h, w)
    masks = torch.full((len(indices), mask_size, mask_size), IGNORE, dtype=torch.long)
    loaded = torch.zeros(len(indices), dtype=torch.bool)
    batches = iterate_batches(dataset, indices, batch_size)
    if progress and rank == 0:
        batches = track(batches, total=math.ceil(len(indices) / batch_size), description=description)
    for positions, images, batch_masks in batches:
        features[positions] = F.normalize(encoder.patch_features(images.to(device)).float(), dim=1).cpu()
        masks[positions] = batch_masks
        loaded[positions] = True
    n = len(dataset)
    # uint8 because gloo has no bool collectives
    return gather_shards(features, n), gather_shards(masks, n), gather_shards(loaded.to(torch.uint8), n).bool()


def label_fractions(masks: torch.Tensor, n_classes: int, grid: tuple[int, int]) -> torch.Tensor:
    """Share of each label inside each patch cell.

    ``masks [N, M, M]`` (long, ``IGNORE`` allowed) -> ``[N, n_classes + 1, h, w]`` float; the last
    channel is the ignored share. Cells are the mask pooled to the patch grid (area averaging).
    """
    labels = torch.where(masks == IGNORE, torch.full_like(masks, n_classes), masks.clamp(max=n_classes))
    one_hot = F.one_hot(labels, n_classes + 1).permute(0, 3, 1, 2).float()
    return F.adaptive_avg_pool2d(one_hot, grid)
