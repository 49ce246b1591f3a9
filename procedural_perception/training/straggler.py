"""A rank much slower than the others: warn instead of leaving everyone to wonder why the job crawls.

DDP makes every rank wait for the slowest at each gradient all-reduce, so one overloaded node (a
noisy neighbour, a throttled GPU, a slow disk feeding its workers) sets the pace of the whole job
without any error. Every rank measures its *busy* time per step: the time between batch starts
(data loading, forward, optimizer step) minus the backward pass, where DDP's gradient all-reduce
makes the fast ranks wait for the slow one (so total step times are equal on every rank). Every
``every_n_steps`` steps the mean busy times are all-gathered (one tiny collective) and rank 0 warns
when the slowest rank is ``ratio`` times busier than the median. A rank slow in its backward pass
alone is not singled out. With one process it does nothing.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_warn


class StragglerWarning(Callback):
    """Args:
        every_n_steps: how often the step times are compared.
        ratio: warn when the slowest rank's mean busy time per step is this many times the median rank's.
    """

    def __init__(self, every_n_steps: int = 50, ratio: float = 3.0) -> None:
        self.every_n_steps, self.ratio = every_n_steps, ratio
        self._last: float | None = None
        self._backward_start: float | None = None
        self._seconds, self._steps = 0.0, 0

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        self._backward_start = time.perf_counter()

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._backward_start is not None:
            self._seconds -= time.perf_counter() - self._backward_start  # the all-reduce wait is in here
            self._backward_start = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self._seconds += now - self._last
            self._steps += 1
        self._last = now

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.world_size < 2 or not dist.is_initialized() or trainer.global_step % self.every_n_steps:
            return
        mean = torch.tensor([self._seconds / max(self._steps, 1)], dtype=torch.float64, device=pl_module.device)
        times = [torch.zeros_like(mean) for _ in range(trainer.world_size)]
        dist.all_gather(times, mean)
        per_rank = torch.cat(times).cpu()
        median = float(per_rank.median())
        slowest = int(per_rank.argmax())
        if median > 0 and float(per_rank[slowest]) >= self.ratio * median:
            rank_zero_warn(f"Rank {slowest} of {trainer.world_size} is {float(per_rank[slowest]) / median:.1f}x slower "
                           f"than the median rank ({float(per_rank[slowest]):.2f} s against {median:.2f} s of work per step "
                           f"over the last {self._steps} steps): every rank waits for it at each step. Check that "
                           "node's load, its GPU clocks and its data-loader workers.")
        self._seconds, self._steps = 0.0, 0
