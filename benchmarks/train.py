"""Training throughput of the DINO LightningModule against the same step in plain PyTorch.

Both run in one process on the cpu-profile model (``make bench-train``; ``QUICK=1`` for < 60 s),
on the same batches of multi-crops generated once in memory (data loading excluded), with the
same initial weights. The plain step does what the module does per step (schedules, teacher and
student forward, loss, non-finite check, backward, per-tensor clipping, AdamW, teacher EMA) with no
Lightning. The two are interleaved in blocks inside one Lightning fit (a callback runs a block of
plain steps after every block of Lightning steps), so both see the same machine load; the first
steps of each are warm-up. Medians of the per-step times are compared, robust to a shared CPU.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, default_collate

from lightning_modules.dino import DINO
from lightning_modules.schedules import cosine_schedule, scaled_lr
from procedural_perception.core.benchmark_rows import quick, row, write_rows
from procedural_perception.core.config import compose, instantiate


def make_batches(model: DINO, n_batches: int, batch_size: int, image_size: int, seed: int = 0) -> list:
    """Collated multi-crop batches (lists of ``[B, 3, S, S]``) from random images, made once."""
    torch.manual_seed(seed)
    transform = model.train_transform()
    images = torch.rand(n_batches * batch_size, 3, image_size, image_size)
    return [default_collate([transform(x) for x in images[i * batch_size:(i + 1) * batch_size]])
            for i in range(n_batches)]


class PlainDINOStep:
    """One DINO optimisation step in plain PyTorch, on its own copy of the model."""

    def __init__(self, model: DINO, total_steps: int, batch_size: int) -> None:
        self.model = model
        h = model.hparams
        self.h = h
        self.total = total_steps
        self.peak_lr = scaled_lr(h.base_lr, batch_size)
        self.optimizer = model.configure_optimizers()  # the same two AdamW parameter groups
        self.step_index = 0

    def __call__(self, crops: list[torch.Tensor]) -> float:
        h, step, model = self.h, self.step_index, self.model
        lr = cosine_schedule(step, self.total, self.peak_lr, h.min_lr)
        wd = cosine_schedule(step, self.total, h.weight_decay, h.weight_decay_end)
        momentum = cosine_schedule(step, self.total, h.momentum_teacher, 1.0)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            if group["scheduled_weight_decay"]:
                group["weight_decay"] = wd
        with torch.no_grad():
            _, teacher_out = model.teacher(crops[:2])
        _, student_out = model.student(crops)
        loss = model.loss_fn(student_out, teacher_out, step)
        value = loss.item()
        if value != value or abs(value) == float("inf"):
            raise RuntimeError(f"non-finite loss {value}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        model.configure_gradient_clipping(self.optimizer)  # pure torch: per-tensor clip (no trainer)
        self.optimizer.step()
        model.update_teacher(momentum)
        self.step_index += 1
        return value


class Interleave(L.Callback):
    """Times each Lightning step (batch start to next batch start) and runs blocks of plain steps."""

    def __init__(self, plain: PlainDINOStep, batches: list, block: int, warmup: int) -> None:
        self.plain, self.batches, self.block, self.warmup = plain, batches, block, warmup
        self.lightning_times: list[float] = []
        self.plain_times: list[float] = []
        self._start: float | None = None
        self._paused = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._start is not None and batch_idx > self.warmup:
            self.lightning_times.append(now - self._start - self._paused)
        self._start, self._paused = now, 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (batch_idx + 1) % self.block:
            return
        begin = time.perf_counter()
        for _ in range(self.block):
            crops = self.batches[self.plain.step_index % len(self.batches)]
            t0 = time.perf_counter()
            self.plain(crops)
            if self.plain.step_index > self.warmup + 1:
                self.plain_times.append(time.perf_counter() - t0)
        self._paused = time.perf_counter() - begin


def main() -> None:
    is_quick = quick()
    cfg = compose(["data=kml_mixup", "profile=cpu", "model.freeze_last_layer_epochs=0", "model.warmup_epochs=0"])
    batch_size = int(cfg.data.batch_size)
    steps, block, warmup = (24, 4, 2) if is_quick else (96, 8, 4)
    L.seed_everything(0, verbose=False)
    model = instantiate(cfg.model)
    plain = PlainDINOStep(copy.deepcopy(model), total_steps=steps, batch_size=batch_size)
    batches = make_batches(model, n_batches=4, batch_size=batch_size, image_size=int(cfg.data.image_size))
    loader = DataLoader([batches[i % len(batches)] for i in range(steps)], batch_size=None)
    timer = Interleave(plain, batches, block, warmup)
    with tempfile.TemporaryDirectory() as logs:
        trainer = L.Trainer(
            accelerator="cpu", devices=1, precision="32-true", max_steps=steps, max_epochs=1,
            logger=TensorBoardLogger(logs, name="bench"), log_every_n_steps=int(cfg.trainer.log_every_n_steps),
            callbacks=[timer], enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        )
        trainer.fit(model, loader)
    lightning_s = statistics.median(timer.lightning_times)
    plain_s = statistics.median(timer.plain_times)
    overhead = (lightning_s / plain_s - 1) * 100
    extra = {"batch_size": batch_size, "steps_timed": [len(timer.lightning_times), len(timer.plain_times)],
             "threads": torch.get_num_threads(), "model": f"{cfg.model.arch} depth {cfg.model.depth}, "
             f"{cfg.model.global_crop_size}/{cfg.model.local_crop_size} px, 2+{cfg.model.n_local_crops} crops",
             "note": "shared CPU: medians of per-step times, both measured interleaved in one process"}
    rows = [
        row("DINO LightningModule (cpu profile) images/s", batch_size / lightning_s, "images/s",
            "same step in plain PyTorch", batch_size / plain_s, **extra),
        row("Lightning overhead per step", overhead, "%", **extra),
    ]
    write_rows("train", rows)
    verdict = "within" if overhead <= 5 else "above"
    print(f"Lightning overhead {overhead:+.1f}% ({verdict} the 5% target)")


if __name__ == "__main__":
    main()
