"""The one evaluation callback: every ``every_n_epochs`` epochs, run an evaluation task on the
model's teacher backbone and log what it returns.

The task (``procedural_perception.evaluations``: kNN with the privacy audit, linear probe, PCA R^2,
in-context and kNN segmentation, 2AFC, feature maps) holds the data and the maths; this adapter only
wraps the backbone as a frozen-mode :class:`~lightning_modules.encoders.Encoder` (at the model's own
input size), runs the task on all ranks (each task shards and gathers itself, so every rank gets one
process's numbers), logs the scalars, draws the task's figures in TensorBoard and as PNG files under
``<log_dir>/<task>/``, and appends one row to ``<log_dir>/results.jsonl`` on rank 0. The task is the
same object ``make eval`` runs, so the logged numbers are the ones it prints.

Config (``configs/callbacks/*.yaml``)::

    knn:
      _target_: callbacks.evaluation.PeriodicEvaluation
      every_n_epochs: 5
      task: {_target_: procedural_perception.evaluations.knn.KNNClassification, memory_size: 5000}
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import lightning
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_modules.encoders import Encoder, encoder_from_backbone
from procedural_perception.core.epoch_schedule import EpochEvaluation
from procedural_perception.core.log_dir import run_log_dir
from procedural_perception.evaluations.figures import save_figure
from procedural_perception.evaluations.task import EvaluationTask


def backbone_of(pl_module: lightning.LightningModule) -> torch.nn.Module:
    """The network to evaluate: DINO's ``teacher_backbone``, else a ``backbone`` attribute."""
    for name in ("teacher_backbone", "backbone"):
        net = getattr(pl_module, name, None)
        if isinstance(net, torch.nn.Module):
            return net
    raise TypeError(f"{type(pl_module).__name__} has no teacher_backbone or backbone to evaluate; the "
                    "evaluation callbacks need a timm ViT or convnet backbone (model=dino).")


@contextmanager
def frozen_encoder(pl_module: lightning.LightningModule) -> Iterator[Encoder]:
    """The model's backbone as an :class:`Encoder` in eval mode at the model's training input size
    (``global_crop_size``), its training mode restored afterwards."""
    backbone = backbone_of(pl_module)
    was_training = backbone.training
    backbone.eval()
    encoder = encoder_from_backbone(backbone).to(pl_module.device)
    size = getattr(getattr(pl_module, "hparams", {}), "get", lambda *_: None)("global_crop_size")
    if size:
        encoder.image_size = int(size)
    try:
        yield encoder
    finally:
        backbone.train(was_training)


class PeriodicEvaluation(EpochEvaluation):
    """Args:
        task: the evaluation (an :class:`~procedural_perception.evaluations.task.EvaluationTask`).
        every_n_epochs: run after every n-th training epoch.
    """

    def __init__(self, task: EvaluationTask, every_n_epochs: int = 1) -> None:
        super().__init__(every_n_epochs)
        if not isinstance(task, EvaluationTask):
            raise TypeError(f"task must be an EvaluationTask (procedural_perception.evaluations), got {type(task).__name__}.")
        self.task = task
        self.name = task.name

    def on_train_epoch_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        if not self.due(trainer):
            return
        with frozen_encoder(pl_module) as encoder, torch.no_grad():
            metrics = self.task.evaluate(encoder)
        scalars = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        if scalars:
            pl_module.log_dict(scalars, rank_zero_only=True, sync_dist=False)
        figures = self._draw(trainer) if trainer.is_global_zero else {}
        self.record(trainer, {**metrics, **figures})

    def _draw(self, trainer: lightning.Trainer) -> dict[str, str]:
        """The task's figures to TensorBoard and ``<log_dir>/<task>/<figure>_epochNNNN.png``; returns their paths."""
        paths = {}
        for figure, image in self.task.figures().items():
            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_image(f"{self.name}/{figure}", image, trainer.global_step)
            path = run_log_dir(trainer) / self.name / f"{figure}_epoch{trainer.current_epoch:04d}.png"
            save_figure(image, path)
            paths[f"{self.name}/{figure}"] = str(path)
        return paths
