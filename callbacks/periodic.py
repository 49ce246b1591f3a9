"""Shared skeleton of the evaluation callbacks: every ``every_n_epochs`` epochs, wrap the model's
teacher backbone as a frozen-mode :class:`~lightning_modules.encoders.Encoder`, run an evaluation on
all ranks (each evaluation shards and gathers itself, so every rank gets one process's numbers),
log the scalars, and append one row to ``<log_dir>/results.jsonl`` on rank 0.

Subclasses implement ``evaluate(encoder) -> dict[str, float]`` (also what the DDP tests call).
Callbacks that draw pictures or evaluate another kind of model take only the schedule and the
results row from :class:`EpochEvaluation`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import lightning
import torch

from lightning_modules.encoders import Encoder, encoder_from_backbone
from procedural_perception.core.epoch_schedule import EpochEvaluation


def backbone_of(pl_module: lightning.LightningModule) -> torch.nn.Module:
    """The network to evaluate: DINO's ``teacher_backbone``, else a ``backbone`` attribute."""
    for name in ("teacher_backbone", "backbone"):
        net = getattr(pl_module, name, None)
        if isinstance(net, torch.nn.Module):
            return net
    raise TypeError(f"{type(pl_module).__name__} has no teacher_backbone or backbone to evaluate; the "
                    "evaluation callbacks need a ViT backbone (model=dino).")


@contextmanager
def frozen_encoder(pl_module: lightning.LightningModule) -> Iterator[Encoder]:
    """The model's backbone as an :class:`Encoder` in eval mode, its training mode restored afterwards."""
    backbone = backbone_of(pl_module)
    was_training = backbone.training
    backbone.eval()
    try:
        yield encoder_from_backbone(backbone).to(pl_module.device)
    finally:
        backbone.train(was_training)


class PeriodicEvaluation(EpochEvaluation):
    """Base class of the encoder evaluations: ``evaluate(encoder)`` on the frozen backbone when due."""

    def __init__(self, every_n_epochs: int = 1) -> None:
        super().__init__(every_n_epochs)
        self.progress = False  # Rich progress bars; off inside a fit (its bar owns the console), on in procedural_perception.cli.eval

    def evaluate(self, encoder: Encoder) -> dict[str, float]:
        raise NotImplementedError(f"{type(self).__name__} must implement evaluate(encoder)")

    def on_train_epoch_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        if not self.due(trainer):
            return
        with frozen_encoder(pl_module) as encoder, torch.no_grad():
            metrics = self.evaluate(encoder)
        scalars = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        pl_module.log_dict(scalars, rank_zero_only=True, sync_dist=False)
        self.after_evaluation(trainer, pl_module, metrics)
        self.record(trainer, metrics)

    def after_evaluation(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule,
                         metrics: dict) -> None:
        """Hook for extra logging (images); called on every rank after the scalars are logged."""
