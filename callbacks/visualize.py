"""Feature pictures during training: PCA-RGB maps and K-means segmentations of a fixed set of real
images (``procedural_perception.evaluations.feature_maps``), logged as a TensorBoard image and saved as
``<log_dir>/feature_maps/epoch_XXXX.png`` every ``every_n_epochs`` epochs.

``images``: ``photos`` (scikit-image's sample photographs, centre squares), a segmentation spec
(``nuclei``, ``coco:<root>``, ...) or a folder of images; ``n_images``: rows of the grid;
``image_size``: encoder input; ``clusters``: K of the K-means maps. Rank 0 draws (nothing to gather).
"""

from __future__ import annotations

import lightning
import torch

from procedural_perception.core.log_dir import run_log_dir
from procedural_perception.datasets.photos import visual_samples
from procedural_perception.evaluations.feature_maps import DEFAULT_CLUSTERS, feature_grid, save_grid

from .periodic import EpochEvaluation, frozen_encoder


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
