"""Shared skeleton of the evaluation callbacks: every ``every_n_epochs`` epochs, wrap the model's
teacher backbone as a frozen-mode :class:`~lightning_modules.encoders.Encoder`, run an evaluation on
all ranks (each evaluation shards and gathers itself, so every rank gets one process's numbers),
log the scalars, and append one row to ``<log_dir>/results.jsonl`` on rank 0.

Subclasses implement ``evaluate(encoder) -> dict[str, float]`` (also what the DDP tests call).
"""

from __future__ import annotations

import lightning
import torch

from core.log_dir import run_log_dir
from core.results import append_results
from lightning_modules.encoders import Encoder, encoder_from_backbone


def backbone_of(pl_module: lightning.LightningModule) -> torch.nn.Module:
    """The network to evaluate: DINO's ``teacher_backbone``, else a ``backbone`` attribute."""
    for name in ("teacher_backbone", "backbone"):
        net = getattr(pl_module, name, None)
        if isinstance(net, torch.nn.Module):
            return net
    raise TypeError(f"{type(pl_module).__name__} has no teacher_backbone or backbone to evaluate; the "
                    "evaluation callbacks need a ViT backbone (model=dino).")


class PeriodicEvaluation(lightning.Callback):
    """Base class. ``every_n_epochs``: run after every n-th training epoch (1 = every epoch)."""

    name = "evaluation"

    def __init__(self, every_n_epochs: int = 1) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}.")
        self.every_n_epochs = every_n_epochs
        self.progress = False  # Rich progress bars; off inside a fit (its bar owns the console), on in cli.eval

    def evaluate(self, encoder: Encoder) -> dict[str, float]:
        raise NotImplementedError

    def on_train_epoch_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        backbone = backbone_of(pl_module)
        was_training = backbone.training
        backbone.eval()
        try:
            with torch.no_grad():
                metrics = self.evaluate(encoder_from_backbone(backbone).to(pl_module.device))
        finally:
            backbone.train(was_training)
        scalars = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        pl_module.log_dict(scalars, rank_zero_only=True, sync_dist=False)
        self.after_evaluation(trainer, pl_module, metrics)
        if trainer.is_global_zero:
            log_dir = run_log_dir(trainer)
            append_results(log_dir / "results.jsonl", [{"epoch": trainer.current_epoch, "step": trainer.global_step,
                                                        "evaluation": self.name, **metrics}])

    def after_evaluation(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule,
                         metrics: dict) -> None:
        """Hook for extra logging (images); called on every rank after the scalars are logged."""
