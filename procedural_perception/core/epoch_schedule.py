"""When an evaluation callback runs and where its results row goes.

:class:`EpochEvaluation` is the schedule (every ``every_n_epochs`` training epochs) and the record
(one row per evaluation appended to ``<log_dir>/results.jsonl`` on rank 0) shared by every callback
that evaluates during training: the DINO evaluation adapter (``callbacks/``) and the compositional
study's metrics (``procedural_perception.compositional``). It knows nothing of what is evaluated.
"""

from __future__ import annotations

import lightning

from procedural_perception.core.log_dir import run_log_dir
from procedural_perception.core.results import append_results


class EpochEvaluation(lightning.Callback):
    """Schedule and record of an evaluation callback. ``every_n_epochs``: run after every n-th
    training epoch (1 = every epoch); subclasses check :meth:`due` and write rows with :meth:`record`."""

    name = "evaluation"

    def __init__(self, every_n_epochs: int = 1) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}.")
        self.every_n_epochs = every_n_epochs

    def due(self, trainer: lightning.Trainer) -> bool:
        """Whether the epoch that just ended is an evaluation epoch."""
        return (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def record(self, trainer: lightning.Trainer, fields: dict) -> None:
        """Append one row (epoch, step, evaluation name, ``fields``) to ``<log_dir>/results.jsonl``; rank 0 only."""
        if trainer.is_global_zero:
            append_results(run_log_dir(trainer) / "results.jsonl", [{"epoch": trainer.current_epoch,
                                                                     "step": trainer.global_step,
                                                                     "evaluation": self.name, **fields}])
