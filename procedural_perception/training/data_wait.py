"""How much of training is spent waiting for data: ``time/data_wait_pct`` (TensorBoard, progress line).

A step's wait is the time from the end of the previous step to the start of this one: the loader's
``next()`` (rendering, decoding or augmenting that the workers did not do ahead; a worker restarting at an
epoch boundary) plus the loop's own bookkeeping between steps. At an epoch boundary the clock restarts at
the new epoch's start, so what runs between epochs (evaluation callbacks, validation, epoch-end
checkpoints) is not counted as waiting for data; the new epoch's loader start-up (Lightning creates the
iterator after ``on_train_epoch_start``) still is. Its share of wait + step time is what
faster data could still buy; the target for the cpu profile is at most 5 %. The first batch (worker
start-up, the first block of renders) is kept apart as ``startup_s``: it is paid once per fit.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L


class DataWait(L.Callback):
    """Every ``log_every_n_steps`` steps, logs ``time/data_wait_pct``: the wait's share (%) of the steps
    since the last log. :meth:`percent` gives it over the whole fit; ``wait_s`` / ``busy_s`` the totals."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.wait_s = self.busy_s = 0.0  # seconds waiting for batches / inside steps, first batch excluded
        self.startup_s: float | None = None  # train start -> first batch
        self.steps = 0  # steps whose wait was measured (all but the first)
        self._window = [0.0, 0.0]  # (wait, busy) since the last log
        self._train_start: float | None = None
        self._step_start: float | None = None
        self._step_end: float | None = None

    def percent(self) -> float:
        """Wait as a share (%) of wait + step time over the fit so far (0 before the second step)."""
        total = self.wait_s + self.busy_s
        return 100.0 * self.wait_s / total if total > 0 else 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.reset()
        self._train_start = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._step_end is not None:  # between epochs: evaluations and checkpoints are not data
            self._step_end = time.perf_counter()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        now = time.perf_counter()
        if self._step_end is None:
            self.startup_s = now - (self._train_start if self._train_start is not None else now)
        else:
            wait = now - self._step_end
            self.wait_s += wait
            self._window[0] += wait
            self.steps += 1
        self._step_start = now

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._step_end = time.perf_counter()
        if self.steps > 0:  # the first step (after worker start-up) is kept out, like its wait
            busy = self._step_end - self._step_start
            self.busy_s += busy
            self._window[1] += busy
        if trainer.global_step % max(trainer.log_every_n_steps, 1) == 0 and sum(self._window) > 0:
            wait, busy = self._window
            pl_module.log("time/data_wait_pct", 100.0 * wait / (wait + busy), on_step=True, on_epoch=False,
                          rank_zero_only=True)
            self._window = [0.0, 0.0]
