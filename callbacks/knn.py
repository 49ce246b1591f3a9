"""kNN accuracy of the teacher during training, with a grid of queries and their nearest neighbours.

Every ``every_n_epochs`` epochs the teacher backbone embeds a labelled memory and a query set (all
ranks, each a shard, gathered), every voting rule votes for every k, and top-1/top-5 go to
TensorBoard and ``results.jsonl``. The embeddings and neighbours of an epoch are cached here, so
:class:`callbacks.privacy.PrivacyCallback` audits the same neighbours without embedding again.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torchvision.transforms.v2 import functional as TF
from torchvision.utils import make_grid

from callbacks.periodic import PeriodicEvaluation
from lightning_modules.encoders import Encoder
from procedural_perception.core.atomic import atomic_path
from procedural_perception.core.log_dir import run_log_dir
from procedural_perception.datasets.labelled import LabelledImages, load_labelled
from procedural_perception.evaluations.embedding import embed_dataset, eval_transform
from procedural_perception.evaluations.knn import DEFAULT_KS, Neighbours, accuracy_metrics, search_neighbours
from procedural_perception.visual_memory.voting import DEFAULT_TEMPERATURE, RULES

GRID_TILE = 64  # pixels per image in the neighbour grid


class KNNCallback(PeriodicEvaluation):
    """Args:
        every_n_epochs: evaluation period in epochs.
        memory / query: labelled data specs (``procedural_perception.datasets.labelled.load_labelled``).
        memory_size / query_size: deterministic random subsets (``None``: the whole set); small
            sizes keep a CPU run short.
        seed: the subsets' seed.
        image_size / resize: evaluation preprocessing (resize the shorter side, centre crop).
        ks / rules / temperature: voting rules and neighbour counts reported.
        batch_size / num_workers: embedding data loader.
        grid_queries / grid_neighbours: the logged image grid (0 queries: no grid).
    """

    name = "knn"

    def __init__(
        self,
        every_n_epochs: int = 1,
        memory: str = "fashion_mnist:train",
        query: str = "fashion_mnist:test",
        memory_size: int | None = 10000,
        query_size: int | None = 2000,
        seed: int = 0,
        image_size: int = 224,
        resize: int | None = None,
        ks: Sequence[int] = DEFAULT_KS,
        rules: Sequence[str] = RULES,
        temperature: float = DEFAULT_TEMPERATURE,
        batch_size: int = 256,
        num_workers: int = 0,
        grid_queries: int = 8,
        grid_neighbours: int = 8,
    ) -> None:
        super().__init__(every_n_epochs)
        self.memory_spec, self.query_spec = memory, query
        self.memory_size, self.query_size, self.seed = memory_size, query_size, seed
        self.image_size, self.resize = image_size, resize
        self.ks, self.rules, self.temperature = tuple(ks), tuple(rules), temperature
        self.batch_size, self.num_workers = batch_size, num_workers
        self.grid_queries, self.grid_neighbours = grid_queries, grid_neighbours
        self._data: tuple[LabelledImages, LabelledImages] | None = None
        self._stamp: tuple[int, int] | None = None  # (epoch, step) of the current evaluation
        self._features: tuple[tuple[int, int] | None, tuple] = (None, ())
        self._neighbours: tuple[tuple[int, int] | None, Neighbours | None] = (None, None)

    # --- data and cached computation (shared with PrivacyCallback) ---------------------------------
    def datasets(self) -> tuple[LabelledImages, LabelledImages]:
        if self._data is None:
            transform = eval_transform(self.image_size, self.resize)
            memory = load_labelled(self.memory_spec, transform).subset(self.memory_size, self.seed)
            query = load_labelled(self.query_spec, transform).subset(self.query_size, self.seed + 1)
            self._data = (memory, query)
        return self._data

    def stamp(self, trainer: lightning.Trainer) -> None:
        """Mark the evaluation of this epoch: later calls reuse what it computed."""
        self._stamp = (trainer.current_epoch, trainer.global_step)

    def neighbours(self, encoder: Encoder, width: int | None = None) -> Neighbours:
        """Top-``width`` (default ``max(ks)``) neighbours of the query set, computed once per epoch."""
        memory, query = self.datasets()
        width = min(width or max(self.ks), len(memory))
        if self._features[0] != self._stamp or self._stamp is None:
            device = next(encoder.parameters()).device
            embedded = [embed_dataset(encoder, d, self.batch_size, self.num_workers, device, progress=False)
                        for d in (memory, query)]
            self._features = (self._stamp, tuple(embedded))
        cached_stamp, cached = self._neighbours
        if cached_stamp == self._stamp and cached is not None and cached.ids.shape[1] >= width:
            return cached
        (memory_features, memory_labels), (query_features, query_labels) = self._features[1]
        width = max(width, min(max(self.ks), len(memory)))
        num_classes = max(len(memory.classes), len(query.classes))
        result = search_neighbours(memory_features, memory_labels, query_features, query_labels, width, num_classes)
        self._neighbours = (self._stamp, result)
        return result

    # --- PeriodicEvaluation ----------------------------------------------------------------------
    def on_train_epoch_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        self.stamp(trainer)
        super().on_train_epoch_end(trainer, pl_module)

    def evaluate(self, encoder: Encoder) -> dict[str, float]:
        return accuracy_metrics(self.neighbours(encoder), self.ks, self.rules, self.temperature)

    def after_evaluation(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, metrics: dict) -> None:
        if not trainer.is_global_zero or self.grid_queries <= 0:
            return
        grid = self.neighbour_grid(self._neighbours[1])
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("knn/queries_and_neighbours", grid, trainer.global_step)
        log_dir = run_log_dir(trainer)
        with atomic_path(log_dir / "knn" / f"neighbours_epoch{trainer.current_epoch:04d}.png") as tmp:
            TF.to_pil_image(grid).save(tmp, format="PNG")

    def neighbour_grid(self, neighbours: Neighbours) -> torch.Tensor:
        """``[3, H, W]`` grid: one row per query, the query then its nearest neighbours, each framed
        green when its label equals the query's and red otherwise (the query is framed white)."""
        memory, query = self.datasets()
        rows = min(self.grid_queries, len(query))
        cols = min(self.grid_neighbours, neighbours.ids.shape[1])
        tiles = []
        for q in range(rows):
            tiles.append(_tile(query.image(q), (1.0, 1.0, 1.0)))
            for j in range(cols):
                same = int(neighbours.labels[q, j]) == int(neighbours.query_labels[q])
                tiles.append(_tile(memory.image(int(neighbours.ids[q, j])), (0.1, 0.8, 0.1) if same else (0.9, 0.1, 0.1)))
        return make_grid(torch.stack(tiles), nrow=cols + 1, padding=2, pad_value=0.0)


def _tile(image, colour: tuple[float, float, float], border: int = 3) -> torch.Tensor:
    pixels = TF.to_dtype(TF.to_image(image), torch.float32, scale=True)
    pixels = F.interpolate(pixels[None], size=(GRID_TILE - 2 * border,) * 2, mode="bilinear", antialias=True)[0]
    framed = torch.tensor(colour).view(3, 1, 1).expand(3, GRID_TILE, GRID_TILE).clone()
    framed[:, border:-border, border:-border] = pixels.clamp(0, 1)
    return framed
