"""Feature pictures during training: PCA-RGB maps and K-means segmentations of a fixed set of real
images (``procedural_perception.evaluations.feature_maps``), logged as a TensorBoard image and saved as
``<log_dir>/feature_maps/epoch_XXXX.png`` every ``every_n_epochs`` epochs.

``images``: ``photos`` (scikit-image's sample photographs, centre squares), a segmentation spec
(``nuclei``, ``coco:<root>``, ...) or a folder of images; ``n_images``: rows of the grid;
``image_size``: encoder input; ``clusters``: K of the K-means maps. Rank 0 draws (nothing to gather).
"""

from __future__ import annotations

from pathlib import Path

import lightning
import numpy as np
import torch
import torch.nn.functional as F

from procedural_perception.core.log_dir import run_log_dir
from procedural_perception.datasets.segmentation import BUILTINS, image_to_tensor, load_segmentation
from procedural_perception.evaluations.feature_maps import DEFAULT_CLUSTERS, feature_grid, save_grid

from .periodic import EpochEvaluation, frozen_encoder


def visual_samples(spec: str, n: int, size: int) -> torch.Tensor:
    """``[n, 3, size, size]`` float images in [0, 1] from ``spec`` (see the module docstring)."""
    if spec == "photos":
        import skimage.data

        from procedural_perception.datasets.twoafc import PHOTOS

        images = []
        for name in PHOTOS[:n]:
            a = np.asarray(getattr(skimage.data, name)())
            side = min(a.shape[:2])
            y, x = (a.shape[0] - side) // 2, (a.shape[1] - side) // 2
            images.append(image_to_tensor(a[y:y + side, x:x + side]))
        return torch.stack([F.interpolate(i[None], size=(size, size), mode="bicubic", antialias=True)[0]
                            for i in images]).clamp(0, 1)
    if spec.partition(":")[0] in BUILTINS + ("coco", "voc", "ade20k") or (Path(spec) / "masks").is_dir():
        data = load_segmentation(spec, size, size, n)
        return torch.stack([item[0] for item in (data[i] for i in range(len(data))) if item is not None])
    from datamodules.images import find_images, load_rgb

    return torch.stack([F.interpolate(load_rgb(p)[None], size=(size, size), mode="bicubic", antialias=True)[0]
                        for p in find_images(spec)[:n]]).clamp(0, 1)


class FeatureMaps(EpochEvaluation):
    name = "feature_maps"

    def __init__(self, every_n_epochs: int = 1, images: str = "photos", n_images: int = 6, image_size: int = 224,
                 clusters: int = DEFAULT_CLUSTERS) -> None:
        super().__init__(every_n_epochs)
        self.images, self.n_images, self.image_size, self.clusters = images, n_images, image_size, clusters
        self._samples: torch.Tensor | None = None

    def samples(self) -> torch.Tensor:
        if self._samples is None:
            self._samples = visual_samples(self.images, self.n_images, self.image_size)
        return self._samples

    def on_train_epoch_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        if not self.due(trainer) or not trainer.is_global_zero:
            return
        with frozen_encoder(pl_module) as encoder:
            grid = feature_grid(encoder, self.samples(), self.clusters)
        experiment = getattr(trainer.logger, "experiment", None)
        if hasattr(experiment, "add_image"):
            experiment.add_image("feature_maps/image_pca_kmeans", grid, trainer.global_step)
        path = run_log_dir(trainer) / "feature_maps" / f"epoch_{trainer.current_epoch:04d}.png"
        save_grid(grid, path)
        self.record(trainer, {"image": str(path)})
