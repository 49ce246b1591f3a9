"""Logs what the training data has covered so far: ``data/distinct_programs`` (TensorBoard, progress line).

The count comes from the data module (``distinct_programs()``, e.g. :class:`datamodules.shaders.ShaderDataModule`,
which derives it from the block schedule and the samples consumed); data modules without it log nothing.
"""

from __future__ import annotations

from typing import Any

import lightning as L


class DataStats(L.Callback):
    """Every ``log_every_n_steps`` steps, logs ``data/distinct_programs`` when the data module reports it."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        count = getattr(trainer.datamodule, "distinct_programs", None)
        if count is None or trainer.global_step % max(trainer.log_every_n_steps, 1):
            return
        pl_module.log("data/distinct_programs", float(count()), on_step=True, on_epoch=False, rank_zero_only=True)
