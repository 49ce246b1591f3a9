"""Compositional-generalisation metrics during training (slot models on ``CompositionalDataModule``).

Every ``every_n_epochs`` epochs: infer slots, fit readouts on ID training slots, apply them unchanged
to held-out ID and OOD scenes (``procedural_perception/compositional/evaluation.py``), log R^2 per factor, shape accuracy
and reconstruction errors, draw a TensorBoard grid of OOD scenes above their reconstructions, and
append a row to ``<log_dir>/results.jsonl``. The data are small and the evaluation deterministic, so
every rank computes the same numbers and only rank 0 logs and writes.
"""

from __future__ import annotations

import lightning
import torch
import torchvision

from procedural_perception.compositional.evaluation import evaluate_compositional, infer_slots
from procedural_perception.core.epoch_schedule import EpochEvaluation


class CompositionalMetrics(EpochEvaluation):
    """``every_n_epochs``: evaluation period; ``n_fit``: ID training scenes the readout is fitted on;
    ``n_eval``: held-out ID and OOD scenes scored (each); ``search``: also score slots refined by
    gradient-based search (``search_steps`` Adam steps, models with a decoder only); ``readout``:
    "mlp" or "linear", fitted with ``readout_steps`` Adam steps; ``grid_images``: OOD scenes drawn
    with their reconstructions (0: none)."""

    name = "compositional"

    def __init__(self, every_n_epochs: int = 1, n_fit: int = 2000, n_eval: int = 500, search: bool = False,
                 search_steps: int = 50, readout: str = "mlp", readout_steps: int = 400,
                 grid_images: int = 16) -> None:
        super().__init__(every_n_epochs)
        self.n_fit, self.n_eval = n_fit, n_eval
        self.search, self.search_steps, self.grid_images = search, search_steps, grid_images
        self.readout, self.readout_steps = readout, readout_steps

    def on_train_epoch_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        if not self.due(trainer):
            return
        data = trainer.datamodule
        if data is None or not hasattr(data, "ood_set"):
            raise TypeError("CompositionalMetrics needs the CompositionalDataModule (data=compositional).")
        data.setup("fit")
        was_training = pl_module.training
        id_fit, id_eval, ood = data.train_set.head(self.n_fit), data.val_set.head(self.n_eval), data.ood_set.head(self.n_eval)
        search = self.search and hasattr(pl_module, "render")
        scores = evaluate_compositional(pl_module, id_fit, id_eval, ood, len(data.shapes), search=search,
                                        readout=self.readout, readout_steps=self.readout_steps,
                                        **({"steps": self.search_steps} if search else {}))
        results = {f"compositional/{k}": v for k, v in scores.items()}
        pl_module.train(was_training)
        pl_module.log_dict(results, rank_zero_only=True, sync_dist=False)
        if trainer.is_global_zero:
            self._draw(trainer, pl_module, ood.images[: self.grid_images])
        self.record(trainer, results)

    @torch.no_grad()
    def _draw(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, images: torch.Tensor) -> None:
        """OOD scenes (top row) above their reconstructions (bottom row) in TensorBoard."""
        experiment = getattr(trainer.logger, "experiment", None)
        if not len(images) or not hasattr(pl_module, "render") or not hasattr(experiment, "add_image"):
            return
        recon = pl_module.render(infer_slots(pl_module, images).to(pl_module.device)).cpu().clamp(0, 1)
        grid = torchvision.utils.make_grid(torch.cat([images, recon]), nrow=len(images), padding=1)
        experiment.add_image("compositional/ood_reconstructions", grid, trainer.global_step)
