"""The folder a run's results go to (``results.jsonl``, images), safe to ask on one rank only.

``Trainer.log_dir`` broadcasts rank 0's answer to every rank: a collective. Called inside
``if trainer.is_global_zero:`` it leaves rank 0 waiting in a broadcast that the other ranks never
join, while they move on to the next collective (a gradient all-reduce): a multi-process run hangs.
:func:`run_log_dir` computes the same folder locally, without any communication.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger


def run_log_dir(trainer: L.Trainer) -> Path:
    """``trainer.log_dir`` (the first logger's folder, else ``default_root_dir``) without a broadcast."""
    if not trainer.loggers:
        return Path(trainer.default_root_dir)
    logger = trainer.loggers[0]
    path = logger.log_dir if isinstance(logger, (TensorBoardLogger, CSVLogger)) else logger.save_dir
    return Path(path or trainer.default_root_dir)
