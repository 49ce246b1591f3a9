"""Seed the global random generators at every training step, so a resumed run draws what an
uninterrupted one would have drawn.

Saving the generators' states in a checkpoint and restoring them is not enough for an exact resume:
Lightning's data fetcher works one batch ahead, a fresh DataLoader iterator draws its base seed from
the global generator, and a resumed run re-creates that iterator and re-fetches the batch it had
prefetched, so the order in which data loading and the model (drop-path, any dropout) consume random
numbers differs after a restart. Instead this callback re-seeds torch (CPU and every CUDA device),
numpy and Python's ``random`` at the start of each training batch from (run seed, epoch, batch index,
global rank): the model's randomness at a step is then a pure function of where the run is, the same
on the first run and after any number of restarts, and different on every rank. (The procedural
stream seeds its own samples by position, so data loading does not depend on these generators.)
"""

from __future__ import annotations

import os
import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


def step_seed(seed: int, epoch: int, batch_idx: int, rank: int) -> int:
    """A 63-bit seed mixing the four integers (numpy's SeedSequence hash: nearby inputs -> unrelated seeds)."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, batch_idx, rank, 0x57E9]).generate_state(2, np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


class StepSeed(Callback):
    """Args:
        seed: the run's seed; ``None`` takes the one ``lightning.seed_everything`` set (``PL_GLOBAL_SEED``), else 0.
    """

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        seed = self.seed if self.seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))
        value = step_seed(seed, trainer.current_epoch, batch_idx, trainer.global_rank)
        torch.manual_seed(value)  # CPU and all CUDA devices
        np.random.seed(value % 2**32)
        random.seed(value)
