"""Training images/s of the cpu-profile DINO with a convolutional backbone against the default ViT.

``make bench-backbones`` (``QUICK=1`` for < 60 s on 2 cores). The baseline is the cpu profile's own
backbone (ViT-tiny/16, depth 4); each convnet (``resnet18``, ``resnet10t``) gets the same recipe
(64 px global / 32 px local crops, 2 + 4 crops, batch 32, the same head), as ``profile=cpu
model.arch=<convnet>`` gives it.

Two measurements:

* **model step** (always): one DINO optimisation step in plain PyTorch (``benchmarks.train``'s
  ``PlainDINOStep``: teacher and student forward, loss, backward, clipping, AdamW, EMA) on the same
  in-memory multi-crop batches, data loading excluded. The backbones take turns in blocks of steps
  (round robin), so all see the same machine load; the first round is warm-up; medians of the
  per-step times are compared.
* **end to end** (not QUICK): ``python -m procedural_perception.cli.train data=kml_mixup profile=cpu
  callbacks=none`` for ``--steps`` steps per backbone (rendering included), one after the other;
  images/s over the steps after the first five, from the batch-start times a callback records.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch

from benchmarks.train import PlainDINOStep, make_batches
from procedural_perception.core.atomic import atomic_write_json
from procedural_perception.core.benchmark_rows import quick, row, write_rows
from procedural_perception.core.config import compose, instantiate

BASELINE = "vit_tiny_patch16_224"  # the cpu profile's backbone (depth 4)
CONVNETS = ("resnet18", "resnet10t")
WARMUP_STEPS = 5  # end to end: the first steps (worker start, first renders, allocator) are not timed


def cpu_profile(arch: str, *extra: str) -> list[str]:
    """Overrides that give ``arch`` the cpu profile's recipe (the profile's ViT shape drops for a convnet)."""
    return ["data=kml_mixup", "profile=cpu", f"model.arch={arch}", *extra]


def model_step_rates(archs: Sequence[str], rounds: int, block: int) -> dict[str, list[float]]:
    """Per-step seconds of each arch's plain DINO step, measured in round-robin blocks (first round: warm-up)."""
    cfg = compose(cpu_profile(BASELINE, "model.freeze_last_layer_epochs=0", "model.warmup_epochs=0"))
    batch_size = int(cfg.data.batch_size)
    steppers, batches = {}, None
    for arch in archs:
        L.seed_everything(0, verbose=False)
        model = instantiate(compose(cpu_profile(arch, "model.freeze_last_layer_epochs=0",
                                                "model.warmup_epochs=0")).model)
        if batches is None:  # the crops depend on the recipe only, the same for every arch
            batches = make_batches(model, n_batches=4, batch_size=batch_size, image_size=int(cfg.data.image_size))
        steppers[arch] = PlainDINOStep(model, total_steps=rounds * block, batch_size=batch_size)
    times: dict[str, list[float]] = {arch: [] for arch in archs}
    for r in range(rounds):
        for arch, step in steppers.items():
            for _ in range(block):
                start = time.perf_counter()
                step(batches[step.step_index % len(batches)])
                if r > 0:
                    times[arch].append(time.perf_counter() - start)
        print(f"round {r + 1}/{rounds}: " + ", ".join(
            f"{a} {statistics.median(t):.2f} s/step" for a, t in times.items() if t), flush=True)
    return times


class StepTimes(L.Callback):
    """Writes the time of every batch start to ``path`` (JSON list) when the fit ends."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.times: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.times.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module) -> None:
        atomic_write_json(Path(self.path), self.times)


def end_to_end_rate(arch: str, steps: int, folder: Path) -> float:
    """Images/s of ``steps`` cpu-profile training steps of ``arch`` on kml_mixup (rendering included)."""
    from procedural_perception.cli.train import main as train

    times = folder / f"{arch}_times.json"
    args = cpu_profile(arch, "callbacks=none", f"trainer.max_steps={steps}", f"runs_dir={folder}", f"run_name={arch}",
                       f"+callbacks.step_times={{_target_: benchmarks.backbones.StepTimes, path: '{times}'}}")
    if train(args) != 0:
        raise RuntimeError(f"training {arch} failed")
    starts = json.loads(times.read_text())[WARMUP_STEPS:]
    batch_size = int(compose(cpu_profile(arch)).data.batch_size)
    return batch_size * (len(starts) - 1) / (starts[-1] - starts[0])


def parameters_m(arch: str) -> float:
    """Backbone parameters (millions) under the cpu profile's recipe."""
    model = instantiate(compose(cpu_profile(arch)).model)
    return sum(p.numel() for p in model.teacher_backbone.parameters()) / 1e6


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.backbones", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=30, help="end-to-end training steps per backbone (not QUICK)")
    args = p.parse_args(argv)
    is_quick = quick()
    archs = (BASELINE, *CONVNETS)
    rounds, block = (3, 3) if is_quick else (6, 5)
    times = model_step_rates(archs, rounds, block)
    batch_size = int(compose(cpu_profile(BASELINE)).data.batch_size)
    rate = {arch: batch_size / statistics.median(t) for arch, t in times.items()}
    extra = {"threads": torch.get_num_threads(), "load_average": round(os.getloadavg()[0], 1),
             "batch_size": batch_size, "steps_timed": len(times[BASELINE]),
             "recipe": "cpu profile: 64/32 px, 2+4 crops, out_dim 1024, head 512",
             "note": "model step only (data excluded), backbones interleaved in blocks; medians"}
    baseline_name = f"{BASELINE} depth 4 (cpu profile default)"
    rows = [row(f"DINO step images/s, {arch} backbone (cpu profile)", rate[arch], "images/s", baseline_name,
                rate[BASELINE], parameters_m=round(parameters_m(arch), 2), **extra) for arch in CONVNETS]
    if not is_quick:
        with tempfile.TemporaryDirectory() as folder:
            e2e = {arch: end_to_end_rate(arch, args.steps, Path(folder)) for arch in archs}
        note = {"threads": torch.get_num_threads(), "load_average": round(os.getloadavg()[0], 1), "steps": args.steps,
                "steps_timed": args.steps - WARMUP_STEPS - 1,
                "note": "train CLI, data=kml_mixup callbacks=none, rendering included; backbones one after the other"}
        rows += [row(f"end-to-end training images/s, {arch} backbone (cpu profile, kml_mixup)", e2e[arch], "images/s",
                     baseline_name, e2e[BASELINE], **note) for arch in CONVNETS]
    write_rows("backbones", rows)


if __name__ == "__main__":
    main()
