"""Privacy during training: the fraction of memory samples whose removal flips a query's prediction.

Logged beside the kNN accuracy of the same rule and k (paper section 6: k = 20, DINO vote). It
reuses the embeddings and neighbours the :class:`callbacks.knn.KNNCallback` of the same trainer
computed this epoch (it asks that callback, which embeds once per epoch whichever runs first), so
the training loop never embeds the memory twice. Add both callbacks (configs/callbacks/knn.yaml).
"""

from __future__ import annotations

import lightning

from callbacks.knn import KNNCallback
from callbacks.periodic import PeriodicEvaluation
from lightning_modules.encoders import Encoder
from procedural_perception.evaluations.knn import AUDIT_K, AUDIT_RULE, privacy_audit
from procedural_perception.visual_memory.voting import DEFAULT_TEMPERATURE, predict


class PrivacyCallback(PeriodicEvaluation):
    """Args:
        every_n_epochs: audit period in epochs.
        k / rule / temperature: the vote audited (the paper: k = 20, ``dino``, T = 0.07).
    """

    name = "privacy"

    def __init__(self, every_n_epochs: int = 1, k: int = AUDIT_K, rule: str = AUDIT_RULE,
                 temperature: float = DEFAULT_TEMPERATURE) -> None:
        super().__init__(every_n_epochs)
        self.k, self.rule, self.temperature = k, rule, temperature
        self.knn: KNNCallback | None = None

    def setup(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, stage: str) -> None:
        found = [c for c in trainer.callbacks if isinstance(c, KNNCallback)]
        if not found:
            raise ValueError("PrivacyCallback audits the neighbours of a KNNCallback: add callbacks.knn "
                             "(configs/callbacks/knn.yaml enables both).")
        self.knn = found[0]

    def on_train_epoch_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        if self.knn is not None:
            self.knn.stamp(trainer)
        super().on_train_epoch_end(trainer, pl_module)

    def evaluate(self, encoder: Encoder) -> dict[str, float]:
        if self.knn is None:
            raise RuntimeError("PrivacyCallback was not set up by a Trainer (no KNNCallback found).")
        neighbours = self.knn.neighbours(encoder, self.k + 1)
        report = privacy_audit(neighbours, self.k, self.rule, self.temperature)
        width = min(self.k, neighbours.memory_size)
        correct = predict(neighbours.similarities[:, :width], neighbours.labels[:, :width], neighbours.num_classes,
                          self.rule, width, self.temperature) == neighbours.query_labels
        return {**report.metrics(), f"privacy/{self.rule}/k{self.k}/top1": 100.0 * correct.float().mean().item()}
