"""A small trial: which generative configuration reproduces its training scenes (ID recon ratio <= 0.10)?

Trains, on the same ID scenes (32 px, 2,000 scenes, batch 32, one thread), the slot VAE

* ``old``: as the committed table configured it (32-wide attention decoder, linear head, 2 slots,
  regulariser 0.01 from the first steps, 256 pixels per step);
* ``alpha``: the first rebuild (per-pixel MLP alpha-mask decoder with sigmoid colours, a background
  slot, regulariser 1e-4 after 30% of training, 256 pixels per step);
* ``conv_alpha``: the configuration the benchmark uses (``benchmark.VAE``: per-slot upsampling
  decoder with linear colours, alpha masks normalised over slots, full images, lr warm-up),

and reports for each the ID reconstruction ratio (``evaluation.recon_ratio``: MSE / all-black MSE; the
table's criterion is <= 0.10), the min slot share, the steps and the training CPU seconds. The old
configurations get ``TRIAL_STEPS`` steps (800: their figures stay at the all-black image), the new one
``TRIAL_NEW_STEPS`` (5,000: the benchmark's 32 px step count). Configurations train in parallel
processes of one thread each (``TRIAL_WORKERS``).

    python -m procedural_perception.compositional.decoder_trial      (TRIAL_STEPS, TRIAL_NEW_STEPS override)
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import torch

from procedural_perception.compositional.benchmark import VAE, train
from procedural_perception.compositional.data import CompositionalDataModule
from procedural_perception.compositional.evaluation import recon_ratio, slot_usage
from procedural_perception.compositional.slot_vae import SlotVAE
from procedural_perception.core.benchmark_rows import row, write_rows

OLD = dict(decoder="attention", d_model=32, heads=4, out_hidden=0, train_pixels=256, alpha=0.01, alpha_start=0.0,
           min_slot_share=0.0)
ALPHA = dict(decoder="alpha", n_slots=3, d_model=64, layers=3, train_pixels=256, alpha=1e-4, alpha_start=0.3,
             alpha_warmup=0.25)
NEW = dict({k: v for k, v in VAE.items() if k not in ("n_objects", "search_lr", "search_prior")}, alpha=1e-4)


def configs(steps: int, new_steps: int) -> list[tuple[str, dict, int]]:
    """(name, SlotVAE options, steps) of every configuration, the baseline first."""
    old = {"alpha_warmup": min(1.0, 300 / steps), **OLD}
    return [("old", old, steps), ("alpha", ALPHA, steps), ("conv_alpha", NEW, new_steps)]


def trial(name: str, options: dict, steps: int, data: CompositionalDataModule, size: int) -> dict:
    """Train one configuration on one thread; its figures (ratio, share, steps, seconds) as a dict."""
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    model = SlotVAE(n_objects=2, image_size=size, **options)
    cpu = time.process_time()
    seconds = train(model, data, steps, seed=0)
    cpu = time.process_time() - cpu
    model.eval()
    ratio = recon_ratio(model, data.val_set.images)
    share = slot_usage(model, data.val_set.images, n_objects=2)["min_slot_share"]
    print(name, f"recon ratio {ratio:.3f}", f"min slot share {share:.3f}", f"{cpu:.0f} CPU-s", flush=True)
    return dict(ratio=ratio, id_min_slot_share=share, steps=steps, image_size=size, train_seconds=round(seconds, 1),
                train_cpu_seconds=round(cpu, 1), collapsed_at_step=model.collapsed_at_step)


def main() -> None:
    steps, new_steps = int(os.environ.get("TRIAL_STEPS", "800")), int(os.environ.get("TRIAL_NEW_STEPS", "5000"))
    size = int(os.environ.get("TRIAL_SIZE", "32"))
    data = CompositionalDataModule(seed=0, image_size=size, n_train=2000, n_val=500, n_test=16, batch_size=32)
    data.setup()
    # One process (one thread) per configuration, in parallel: the figures compared are CPU seconds.
    runs = configs(steps, new_steps)
    with ProcessPoolExecutor(int(os.environ.get("TRIAL_WORKERS", str(len(runs)))), mp_context=get_context("fork")) as pool:
        futures = [pool.submit(trial, name, options, n, data, size) for name, options, n in runs]
        results = [f.result() for f in futures]
    rows, baseline = [], results[0]["ratio"]
    for (name, options, _), result in zip(runs, results, strict=True):
        is_base = name == runs[0][0]
        rows.append(row(f"id_recon_ratio/{name}", result.pop("ratio"), "MSE / all-black MSE",
                        baseline=None if is_base else runs[0][0], baseline_value=None if is_base else baseline,
                        higher_is_better=False, **result, **options))
    write_rows("compositional_decoder_trial", rows)


if __name__ == "__main__":
    main()
