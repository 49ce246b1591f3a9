"""Pictures of patch features: PCA-as-RGB maps (paper Figs. 9, 12) and hard K-means segmentations
(Fig. 18), laid out as one image grid (rows: image | PCA map | K-means map).

PCA map: the first 3 principal components of an image's patch tokens, each min-max normalised and
shown as R, G, B (the same projection PCA R^2 scores). K-means map: the patch tokens (L2-normalised)
clustered into ``k`` groups per image, each cluster a fixed colour. Maps are nearest-upsampled to
the image size so single patches stay visible.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from torchvision.utils import make_grid

from lightning_modules.encoders import Encoder
from procedural_perception.datasets.photos import visual_samples
from procedural_perception.evaluations.pca_r2 import pca_components
from procedural_perception.evaluations.task import EvaluationTask

DEFAULT_CLUSTERS = 5  # Fig. 18 style: a handful of segments per image
KMEANS_RESTARTS = 3  # K-means initialisations per image; the best inertia is kept


def pca_rgb(patch_features: torch.Tensor) -> torch.Tensor:
    """``[B, D, h, w]`` -> ``[B, 3, h, w]`` in [0, 1], a PCA fitted per image."""
    b, d, h, w = patch_features.shape
    return pca_components(patch_features.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, 3, h, w).float()


def kmeans_labels(patch_features: torch.Tensor, k: int = DEFAULT_CLUSTERS, seed: int = 0) -> torch.Tensor:
    """``[B, D, h, w]`` -> cluster index ``[B, h, w]`` (per-image K-means on normalised tokens)."""
    b, d, h, w = patch_features.shape
    out = torch.zeros(b, h, w, dtype=torch.long)
    for i in range(b):
        tokens = F.normalize(patch_features[i].flatten(1).T.double(), dim=1).numpy()
        n_clusters = min(k, len(np.unique(tokens.round(12), axis=0)))
        labels = KMeans(n_clusters=n_clusters, n_init=KMEANS_RESTARTS, random_state=seed).fit_predict(tokens)
        out[i] = torch.from_numpy(labels).reshape(h, w)
    return out


def colour_labels(labels: torch.Tensor) -> torch.Tensor:
    """``[B, h, w]`` cluster indices -> ``[B, 3, h, w]`` colours (matplotlib's tab10 cycle)."""
    palette = torch.tensor(matplotlib.colormaps["tab10"].colors, dtype=torch.float32)
    return palette[labels % len(palette)].permute(0, 3, 1, 2)


@torch.no_grad()
def feature_grid(encoder: torch.nn.Module, images: torch.Tensor, k: int = DEFAULT_CLUSTERS,
                 seed: int = 0) -> torch.Tensor:
    """``images [B, 3, H, W]`` in [0, 1] -> grid ``[3, H', W']``: one row per image with the image,
    its PCA-RGB map and its K-means segmentation."""
    device = next(encoder.parameters(), torch.empty(0)).device
    features = encoder.patch_features(images.to(device)).float().cpu()
    size = images.shape[-2:]
    maps = [F.interpolate(pca_rgb(features), size=size, mode="nearest"),
            F.interpolate(colour_labels(kmeans_labels(features, k, seed)), size=size, mode="nearest")]
    rows = torch.stack([images.cpu().float(), *maps], dim=1).flatten(0, 1)  # image, pca, kmeans per row
    return make_grid(rows, nrow=3, padding=2, pad_value=1.0)


class FeatureMaps(EvaluationTask):
    """PCA-RGB maps and K-means segmentations of fixed real images (paper Figs. 9, 12, 18), as a figure.

    ``images``: ``photos`` (scikit-image's sample photographs), a segmentation spec or a folder;
    ``n_images``: rows of the grid; ``image_size``: encoder input (None: its own); ``clusters``: K of
    the K-means maps. No metrics: :meth:`figures` holds the grid of the last evaluation.
    """

    name = "feature_maps"

    def __init__(self, images: str = "photos", n_images: int = 6, image_size: int | None = None,
                 clusters: int = DEFAULT_CLUSTERS) -> None:
        self.images, self.n_images, self.image_size, self.clusters = images, n_images, image_size, clusters
        self._samples: dict[int, torch.Tensor] = {}
        self._grid: torch.Tensor | None = None

    def samples(self, size: int) -> torch.Tensor:
        if size not in self._samples:
            self._samples[size] = visual_samples(self.images, self.n_images, size)
        return self._samples[size]

    def evaluate(self, encoder: Encoder) -> dict[str, float]:
        self._grid = feature_grid(encoder, self.samples(self.size_for(encoder, self.image_size)), self.clusters)
        return {}

    def figures(self) -> dict[str, torch.Tensor]:
        return {} if self._grid is None else {"image_pca_kmeans": self._grid}
