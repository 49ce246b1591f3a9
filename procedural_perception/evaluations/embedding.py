"""The one embedding path shared by callbacks, commands and the experiment.

A number logged during training therefore equals the number ``make eval`` prints for the same
checkpoint: both embed with :func:`eval_transform` and :func:`map_shards`.

:func:`map_shards` is the one "each rank computes its shard, then every rank gathers all of it"
step: rank ``r`` of ``w`` takes items ``r, r + w, ...`` (``core.distributed.shard_indices``), computes
per-item rows batch by batch, and the rows are all-gathered back into dataset order, so every rank
ends with exactly what one process computes. :func:`embed_dataset` (global embeddings),
:func:`embed_patches` (dense features of a segmentation set) and the PCA R^2 scores are built on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from rich.progress import track
from torch.utils.data import DataLoader, Dataset
from torch.utils.data._utils.collate import default_collate
from torchvision.transforms import v2

from procedural_perception.core.distributed import gather_shards, rank_and_world, shard_indices
from procedural_perception.datasets.labelled import LabelledImages, load_labelled
from procedural_perception.datasets.segmentation import IGNORE


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


def query_seed(seed: int) -> int:
    """The subset seed of a query set whose memory is drawn with ``seed``: another draw, so memory and
    queries taken from one source do not coincide."""
    return seed + 1


def labelled_subset(spec: str, image_size: int, limit: int | None, seed: int = 0,
                    resize: int | None = None) -> LabelledImages:
    """A seeded random ``limit`` items (in dataset order; all when None) of a labelled source,
    transformed for the encoders. Memories use ``seed``, query sets :func:`query_seed` (disjoint draws
    when memory and queries come from the same source)."""
    return load_labelled(spec, transform=eval_transform(image_size, resize)).subset(limit, seed)


class _Positioned(Dataset):
    """``(position in the shard, item)`` for the shard ``indices`` of ``dataset``."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[int, Any]:
        return position, self.dataset[self.indices[position]]


def _collate_present(items: list[tuple[int, Any]]) -> tuple[torch.Tensor, Any] | None:
    """Collate the items that loaded; an item that failed to load is ``None`` and left out."""
    kept = [(p, item) for p, item in items if item is not None]
    if not kept:
        return None
    return torch.tensor([p for p, _ in kept]), default_collate([item for _, item in kept])


def _batches(dataset: Dataset, indices: Sequence[int], batch_size: int, num_workers: int,
             progress: bool, description: str) -> Iterator[tuple[torch.Tensor, Any]]:
    loader = DataLoader(_Positioned(dataset, indices), batch_size=batch_size, num_workers=num_workers,
                        shuffle=False, collate_fn=_collate_present)
    if progress:
        loader = track(loader, total=math.ceil(len(indices) / batch_size), description=description)
    for batch in loader:
        if batch is not None:
            yield batch


def _template(dataset: Dataset, compute: Callable[[Any], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """One item's outputs, for the shapes of a rank whose shard produced nothing (empty or unreadable)."""
    for index in range(len(dataset)):
        item = dataset[index]
        if item is not None:
            return compute(default_collate([item]))
    raise ValueError(f"None of the {len(dataset)} items of {getattr(dataset, 'name', 'the data set')} can be read.")


@torch.no_grad()
def map_shards(dataset: Dataset, compute: Callable[[Any], dict[str, torch.Tensor]], fill: dict[str, float] | None = None,
               batch_size: int = 64, num_workers: int = 0, progress: bool = True,
               description: str = "embedding") -> dict[str, torch.Tensor]:
    """Run ``compute`` over ``dataset`` sharded across DDP ranks and gather the rows on every rank.

    ``compute(batch) -> {name: tensor [b, ...]}`` gets a collated batch of the items that loaded
    (items that are ``None`` are left out). Returns ``{name: tensor [N, ...]}`` in dataset order, on
    the CPU, plus ``"loaded"`` (bool ``[N]``); rows of items that did not load hold ``fill[name]``
    (default 0). Shapes and dtypes come from the first computed batch.
    """
    rank, world = rank_and_world()
    indices = list(shard_indices(len(dataset), rank, world))
    local: dict[str, torch.Tensor] = {}
    loaded = torch.zeros(len(indices), dtype=torch.uint8)  # uint8: gloo has no bool collectives
    fill = fill or {}
    for positions, batch in _batches(dataset, indices, batch_size, num_workers, progress and rank == 0, description):
        for name, rows in compute(batch).items():
            rows = rows.detach().cpu()
            if name not in local:
                local[name] = torch.full((len(indices), *rows.shape[1:]), fill.get(name, 0), dtype=rows.dtype)
            local[name][positions] = rows
        loaded[positions] = 1
    if not local:
        local = {name: torch.full((len(indices), *rows.shape[1:]), fill.get(name, 0), dtype=rows.dtype)
                 for name, rows in _template(dataset, compute).items()}
    out = {name: gather_shards(rows, len(dataset)) for name, rows in sorted(local.items())}
    out["loaded"] = gather_shards(loaded, len(dataset)).bool()
    return out


def _device(encoder: torch.nn.Module, device: torch.device | str | None) -> torch.device:
    return torch.device(device) if device is not None else next(encoder.parameters(), torch.empty(0)).device


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
    ``labels [N]`` (long), in dataset order; every DDP rank returns what one process would.
    Keep ``progress=False`` inside a Lightning run (its progress bar already owns the console).
    """
    device = _device(encoder, device)

    def compute(batch):
        images, targets = batch
        out = encoder(images.to(device)).float()
        return {"features": F.normalize(out, dim=-1) if normalize else out, "labels": torch.as_tensor(targets).long()}

    rows = map_shards(dataset, compute, batch_size=batch_size, num_workers=num_workers, progress=progress,
                      description=f"embedding {len(dataset)} images")
    return rows["features"], rows["labels"]


def embed_patches(encoder: torch.nn.Module, dataset: Dataset, batch_size: int = 16,
                  device: torch.device | str | None = None, progress: bool = True,
                  description: str = "patch features") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dense features of ``(image [3, S, S], mask [M, M])`` items (in-context and kNN segmentation
    compare patches *across* images, so every rank needs every image's patch grid).

    Returns ``features [N, D, h, w]`` (float32, L2-normalised over D, on the CPU),
    ``masks [N, M, M]`` (long) and ``loaded [N]`` (bool; False for items that failed to load, whose
    rows are zeros / ``IGNORE``).
    """
    device = _device(encoder, device)

    def compute(batch):
        images, masks = batch
        return {"features": F.normalize(encoder.patch_features(images.to(device)).float(), dim=1), "masks": masks}

    rows = map_shards(dataset, compute, fill={"masks": IGNORE}, batch_size=batch_size, progress=progress,
                      description=description)
    return rows["features"], rows["masks"], rows["loaded"]


def label_fractions(masks: torch.Tensor, n_classes: int, grid: tuple[int, int]) -> torch.Tensor:
    """Share of each label inside each patch cell.

    ``masks [N, M, M]`` (long, ``IGNORE`` allowed) -> ``[N, n_classes + 1, h, w]`` float; the last
    channel is the ignored share. Cells are the mask pooled to the patch grid (area averaging).
    """
    labels = torch.where(masks == IGNORE, torch.full_like(masks, n_classes), masks.clamp(max=n_classes))
    one_hot = F.one_hot(labels, n_classes + 1).permute(0, 3, 1, 2).float()
    return F.adaptive_avg_pool2d(one_hot, grid)
