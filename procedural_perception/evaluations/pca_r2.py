"""Zero-shot segmentation quality of patch features: the paper's PCA R^2 (Table 2).

Per image (the anchor notebook's recipe):

1. patch tokens of the image resized to 448 x 448 (28 x 28 tokens for patch 16; ``448 / patch``
   in general), CLS dropped;
2. PCA to 3 components fitted on that image's tokens; each component min-max normalised to [0, 1]
   (the map one would show as RGB);
3. the 3-channel token map bilinearly upsampled to the mask resolution (112 x 112);
4. the category mask nearest-resized to 112 x 112; background (0) and ignore (255) pixels removed;
5. ``inertia = sum_s sum_{x in s} ||x - c_s||^2 / sum_x ||x - m||^2`` with segment centroids ``c_s``
   and a *scalar* global mean ``m`` (the mean of every remaining value, as in the notebook);
   ``R^2 = 1 - inertia``.

The score is the mean over images, skipping NaN (images without foreground). Higher means the
features' main directions of variation follow object boundaries.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from lightning_modules.encoders import Encoder
from procedural_perception.datasets.segmentation import IGNORE, SegmentationImages, load_segmentation
from procedural_perception.evaluations.embedding import map_shards
from procedural_perception.evaluations.task import EvaluationTask, optional_int

PCA_COMPONENTS = 3  # the paper reduces to 3 components so the map can be shown as an RGB image
PAPER_IMAGE_SIZE = 448  # COCO images are resized to 448 x 448 -> 28 x 28 tokens at patch 16
PAPER_MASK_SIZE = 112  # tokens upsampled and masks resized to 112 x 112


def pca_components(tokens: torch.Tensor, n_components: int = PCA_COMPONENTS) -> torch.Tensor:
    """Per-sample PCA projection, min-max normalised.

    ``tokens [B, N, D]`` -> ``[B, N, n_components]`` in [0, 1]. Computed in float64; the sign of
    each component follows scikit-learn's convention (the loading with the largest magnitude is
    positive), which matters because R^2 uses a scalar mean across components.
    """
    x = tokens.double()
    x = x - x.mean(dim=1, keepdim=True)
    _, _, vt = torch.linalg.svd(x, full_matrices=False)  # vt [B, min(N, D), D]
    vt = vt[:, :n_components]
    largest = vt.abs().argmax(dim=-1, keepdim=True)
    vt = vt * torch.sign(torch.gather(vt, -1, largest))
    projected = x @ vt.transpose(1, 2)  # [B, N, k]
    low = projected.amin(dim=1, keepdim=True)
    high = projected.amax(dim=1, keepdim=True)
    return (projected - low) / (high - low).clamp_min(1e-12)


def segment_r2(features: torch.Tensor, mask: torch.Tensor) -> float:
    """R^2 of one image's segmentation.

    ``features [C, H, W]``, ``mask [H, W]`` (long; 0 = background and ``IGNORE`` are removed).
    Returns NaN when no foreground pixel remains (or the features are constant on it).
    """
    keep = (mask != 0) & (mask != IGNORE)
    x = features.double().flatten(1)[:, keep.flatten()].T  # [P, C]
    if x.shape[0] == 0:
        return math.nan
    _, segment = torch.unique(mask.flatten()[keep.flatten()], return_inverse=True)
    counts = torch.bincount(segment).double()
    centroids = torch.zeros(len(counts), x.shape[1], dtype=x.dtype).index_add_(0, segment, x) / counts[:, None]
    within = ((x - centroids[segment]) ** 2).sum()
    total = ((x - x.mean()) ** 2).sum()  # scalar mean over every value, as in the paper's notebook
    if total == 0:
        return math.nan
    return float(1.0 - within / total)


def pca_r2_batch(patch_features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``patch_features [B, D, h, w]``, ``masks [B, M, M]`` -> per-image R^2 ``[B]`` (NaN allowed)."""
    b, d, h, w = patch_features.shape
    rgb = pca_components(patch_features.flatten(2).transpose(1, 2))  # [B, h*w, 3]
    rgb = rgb.transpose(1, 2).reshape(b, PCA_COMPONENTS, h, w)
    rgb = F.interpolate(rgb, size=masks.shape[-2:], mode="bilinear", align_corners=False)
    return torch.tensor([segment_r2(rgb[i], masks[i].cpu()) for i in range(b)], dtype=torch.float64)


@torch.no_grad()
def evaluate_pca_r2(encoder: torch.nn.Module, dataset: Dataset, batch_size: int = 8,
                    device: torch.device | str | None = None, progress: bool = True) -> dict[str, float]:
    """Mean PCA R^2 of ``encoder.patch_features`` over a segmentation dataset.

    ``dataset`` items are ``(image [3, S, S], mask [M, M])`` (see ``procedural_perception.datasets.segmentation``; the
    paper uses S = 448, M = 112). Under DDP each rank scores its strided shard and the per-image
    values are gathered, so every rank returns what one process would.
    Returns ``{"pca_r2": mean over scored images, "pca_r2/images": how many were scored}``.
    """
    device = torch.device(device) if device is not None else next(encoder.parameters(), torch.empty(0)).device

    def compute(batch):
        images, masks = batch
        return {"r2": pca_r2_batch(encoder.patch_features(images.to(device)).float().cpu(), masks)}

    values = map_shards(dataset, compute, fill={"r2": math.nan}, batch_size=batch_size, progress=progress,
                        description="PCA R^2")["r2"]
    scored = values[~values.isnan()]
    return {"pca_r2": float(scored.mean()) if len(scored) else math.nan, "pca_r2/images": int(len(scored))}


class PCAR2(EvaluationTask):
    """Mean PCA R^2 (``pca_r2``). ``data``: segmentation spec (``nuclei_instances``: every nucleus a
    segment; the paper: ``coco:<root>``); ``limit``: images used (None = all); ``image_size`` /
    ``mask_size``: 448 / 112 as in the paper; ``batch_size``: images per forward pass."""

    name = "pca_r2"
    HEADLINES = (("PCA R²", "pca_r2"),)

    def __init__(self, data: str = "nuclei_instances", limit: int | None = None, image_size: int | None = PAPER_IMAGE_SIZE,
                 mask_size: int = PAPER_MASK_SIZE, batch_size: int = 8) -> None:
        self.data, self.limit, self.image_size, self.mask_size, self.batch_size = data, limit, image_size, mask_size, batch_size
        self._datasets: dict[int, SegmentationImages] = {}

    def dataset(self, size: int) -> SegmentationImages:
        if size not in self._datasets:
            self._datasets[size] = load_segmentation(self.data, size, self.mask_size, self.limit)
        return self._datasets[size]

    def evaluate(self, encoder: Encoder) -> dict[str, float]:
        return evaluate_pca_r2(encoder, self.dataset(self.size_for(encoder, self.image_size)), self.batch_size,
                               progress=self.progress)

    @classmethod
    def add_arguments(cls, parser) -> None:
        parser.add_argument("--pca-data", default=None, help="PCA R^2 source (default nuclei_instances; paper: coco:<root>)")
        parser.add_argument("--pca-limit", type=optional_int, default=None, help="PCA R^2 images (default: all)")

    @classmethod
    def own_flags(cls) -> dict[str, str]:
        return {"pca_data": "data", "pca_limit": "limit"}
