"""The one embedding function shared by callbacks and commands.

A number logged during training therefore equals the number ``make eval`` prints for the same
checkpoint: both call :func:`embed_dataset` with the same encoder and :func:`eval_transform`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from rich.progress import track
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.transforms import v2

from procedural_perception.core.distributed import gather_shards, rank_and_world, shard_indices


def eval_transform(image_size: int = 224, resize: int | None = None) -> Callable:
    """PIL image / uint8 array -> float tensor ``[3, image_size, image_size]`` in [0, 1].

    The shorter side is resized (bicubic) to ``resize`` (default ``image_size * 256 / 224``, DINO's
    256 -> 224 evaluation protocol), then centre-cropped to ``image_size``.
    """
    resize = resize or round(image_size * 256 / 224)
    return v2.Compose([
        v2.ToImage(),
        v2.Resize(resize, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
        v2.CenterCrop(image_size),
        v2.ToDtype(torch.float32, scale=True),
        v2.Lambda(lambda x: x.clamp_(0.0, 1.0)),  # bicubic overshoots
    ])


@torch.no_grad()
def embed_dataset(
    encoder: torch.nn.Module,
    dataset: Dataset,
    batch_size: int = 256,
    num_workers: int = 0,
    device: torch.device | str | None = None,
    normalize: bool = True,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embed every ``(image, label)`` of ``dataset``.

    Returns ``features [N, D]`` (float32, L2-normalised unless ``normalize=False``) and
    ``labels [N]`` (long), in dataset order. Under DDP each rank embeds the strided shard
    ``rank::world`` and the shards are gathered, so every rank returns what one process would.
    Keep ``progress=False`` inside a Lightning run (its progress bar already owns the console).
    """
    rank, world = rank_and_world()
    device = torch.device(device) if device is not None else next(encoder.parameters(), torch.empty(0)).device
    shard = Subset(dataset, list(shard_indices(len(dataset), rank, world)))
    loader = DataLoader(shard, batch_size=batch_size, num_workers=num_workers, shuffle=False)
    batches = track(loader, description=f"embedding {len(dataset)} images") if progress and rank == 0 else loader
    features, labels = [], []
    for images, targets in batches:
        out = encoder(images.to(device)).float()
        features.append(F.normalize(out, dim=-1) if normalize else out)
        labels.append(torch.as_tensor(targets).long().to(device))
    dim = features[0].shape[1] if features else _embed_dim(encoder, dataset, device)
    local_features = torch.cat(features) if features else torch.empty(0, dim, device=device)
    local_labels = torch.cat(labels) if labels else torch.empty(0, dtype=torch.long, device=device)
    return gather_shards(local_features, len(dataset)).cpu(), gather_shards(local_labels, len(dataset)).cpu()


def _embed_dim(encoder: torch.nn.Module, dataset: Dataset, device: torch.device) -> int:
    """Embedding width for a rank whose shard is empty (more ranks than samples)."""
    image, _ = dataset[0]
    return encoder(image.unsqueeze(0).to(device)).shape[1]
