"""Callbacks that tests add to a real ``python -m procedural_perception.cli.train`` run (``+callbacks.<name>={_target_: ...}``):
record every step's loss exactly, and kill or pre-empt the process at a chosen step."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import lightning as L
import torch


class LossRecorder(L.Callback):
    """Appends ``global_step loss`` (the loss of the step just taken, full precision) to ``path``, rank 0."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.is_global_zero:
            with open(self.path, "a") as f:
                f.write(f"{trainer.global_step - 1} {float(outputs['loss']).hex()}\n")


class SignalAtStep(L.Callback):
    """Sends ``signal`` (``SIGKILL`` or ``SIGTERM``) to this process once ``step`` optimisation steps are done."""

    def __init__(self, step: int, signal: str = "SIGKILL") -> None:
        self.step, self.signal = step, getattr(signal_module, signal)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signal)


class SignalThenStall(L.Callback):
    """At ``step``: sends SIGTERM ``signals`` times to this process, then blocks for ``seconds`` (a step
    that does not finish: a paper-profile step on a CPU, workers still rendering the first block)."""

    def __init__(self, step: int, seconds: float = 600.0, signals: int = 1) -> None:
        self.step, self.seconds, self.signals = step, seconds, signals

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            import time

            for _ in range(self.signals):
                os.kill(os.getpid(), signal_module.SIGTERM)
                time.sleep(0.2)
            time.sleep(self.seconds)


signal_module = signal


def read_losses(path: str | Path) -> list[tuple[int, float]]:
    """(step, loss) in the order recorded; steps replayed after a resume appear twice."""
    pairs = (line.split() for line in Path(path).read_text().splitlines())
    return [(int(step), float.fromhex(value)) for step, value in pairs]


class ParameterChecksum(L.Callback):
    """At the end of training each rank writes the float64 sum of its model's parameters (as hex) to
    ``<default_root_dir>/checksum_rank<r>.txt``: equal files mean the ranks hold identical weights."""

    def on_train_end(self, trainer, pl_module) -> None:
        total = sum(p.detach().double().sum() for p in pl_module.parameters())
        path = Path(trainer.default_root_dir) / f"checksum_rank{trainer.global_rank}.txt"
        path.write_text(float(total).hex())


class PoisonWeights(L.Callback):
    """Puts a NaN into one of the model's floating-point weights just before optimisation step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            weight = next(p for p in pl_module.parameters() if p.requires_grad and p.is_floating_point())
            with torch.no_grad():
                weight.view(-1)[0] = float("nan")
