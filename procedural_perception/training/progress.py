"""Progress a person can follow in a terminal and in a batch job's log.

In a terminal the live Rich bar redraws one line. Without one (SLURM, ``nohup``, a pipe) that bar
writes nothing readable until the end, so :class:`LineProgress` prints one plain line every N steps
instead: step / total, epoch, loss, the share of time waiting for data, images per second and the
estimated time left. The config entry
``callbacks.progress_bar`` (``configs/callbacks/basic.yaml``) calls :func:`progress_bar`, which picks one.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

import lightning as L
import torch
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar

from procedural_perception.training.data_wait import DataWait


def progress_bar(every_n_steps: int = 20, stream: TextIO | None = None) -> ProgressBar:
    """The Rich bar when ``stream`` (default stdout) is a terminal, else plain lines every ``every_n_steps``."""
    stream = stream or sys.stdout
    return RichProgressBar() if stream.isatty() else LineProgress(every_n_steps, stream)


class LineProgress(ProgressBar):
    """One line every ``every_n_steps`` optimisation steps (and at the end), rank 0 only::

        step 240/960 (25%) | epoch 4 | loss 5.412 | data wait 3% | 98.3 img/s | ETA 7m 20s
    """

    def __init__(self, every_n_steps: int = 20, stream: TextIO | None = None) -> None:
        super().__init__()
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}.")
        self.every_n_steps = every_n_steps
        self.stream = stream or sys.stdout
        self._enabled = True
        self._start: tuple[float, int] | None = None  # (time, step) when training started
        self._images = 0  # images trained on since then (all ranks)

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = (time.perf_counter(), trainer.global_step)
        self._images = 0
        self._print(trainer, f"training from step {trainer.global_step} to {self._total(trainer)}")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._images += _batch_images(batch) * trainer.world_size
        step = trainer.global_step
        if step % self.every_n_steps == 0 and step > 0:
            self._print(trainer, self.line(trainer))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._print(trainer, self.line(trainer) + " | done")

    def line(self, trainer: L.Trainer) -> str:
        """The progress line for the trainer's current state."""
        step, total = trainer.global_step, self._total(trainer)
        parts = [f"step {step}/{total}" + (f" ({100 * step / total:.0f}%)" if total else ""),
                 f"epoch {trainer.current_epoch}"]
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None:
            parts.append(f"loss {float(loss):.3f}")
        wait = next((c for c in trainer.callbacks if isinstance(c, DataWait)), None)
        if wait is not None and wait.steps > 0:
            parts.append(f"data wait {wait.percent():.0f}%")  # over the fit so far (TensorBoard: per log window)
        programs = trainer.callback_metrics.get("data/distinct_programs")
        if programs is not None:
            parts.append(f"{int(programs)} programs")
        if self._start is not None:
            seconds = time.perf_counter() - self._start[0]
            steps = step - self._start[1]
            if seconds > 0 and steps > 0:
                parts.append(f"{self._images / seconds:.1f} img/s")
                if total:
                    parts.append(f"ETA {_duration((total - step) * seconds / steps)}")
        return " | ".join(parts)

    @staticmethod
    def _total(trainer: L.Trainer) -> int:
        total = trainer.estimated_stepping_batches
        return int(total) if total not in (None, float("inf")) else 0

    def _print(self, trainer: L.Trainer, text: str) -> None:
        if self._enabled and trainer.is_global_zero:
            print(text, file=self.stream, flush=True)


def _batch_images(batch: Any) -> int:
    """Images in a batch: a tensor's first dimension, or the first crop's for a multi-crop list."""
    while isinstance(batch, (list, tuple)) and batch:
        batch = batch[0]
    return int(batch.shape[0]) if isinstance(batch, torch.Tensor) else 0


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"
