"""A small trial: does the rebuilt generative side reconstruct its training scenes better than the old one?

Trains, for the same number of steps on the same ID scenes, the slot VAE as the committed table
configured it (32-wide attention decoder with a linear head, 2 slots,
regulariser 0.01 from the first steps) and the rebuilt configuration (per-slot alpha-mask
decoder, a background slot, regulariser 1e-4 after 30% of training), both on 256 pixels per step, and
reports for each the ID reconstruction ratio (``evaluation.recon_ratio``: MSE / all-black MSE;
the table's criterion is <= 0.10) and the min slot share. It measures direction, not the final
figure: the full run trains far longer (``make bench-compositional``).

    python -m procedural_perception.compositional.decoder_trial      (TRIAL_STEPS, TRIAL_SIZE override)
"""

from __future__ import annotations

import os

import torch

from procedural_perception.compositional.benchmark import train
from procedural_perception.compositional.data import CompositionalDataModule
from procedural_perception.compositional.evaluation import recon_ratio, slot_usage
from procedural_perception.compositional.slot_vae import SlotVAE
from procedural_perception.core.benchmark_rows import row, write_rows

OLD = dict(decoder="attention", d_model=32, heads=4, out_hidden=0, train_pixels=256, alpha=0.01, alpha_start=0.0,
           min_slot_share=0.0)
NEW = dict(decoder="alpha", n_slots=3, d_model=64, layers=3, train_pixels=256, alpha=1e-4, alpha_start=0.3,
           alpha_warmup=0.25)


def main() -> None:
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    steps, size = int(os.environ.get("TRIAL_STEPS", "800")), int(os.environ.get("TRIAL_SIZE", "32"))
    data = CompositionalDataModule(seed=0, image_size=size, n_train=2000, n_val=500, n_test=16, batch_size=32)
    data.setup()
    rows, baseline = [], None
    for name, options in (("old", OLD), ("new", NEW)):
        options = {"alpha_warmup": min(1.0, 300 / steps), **options} if name == "old" else options
        model = SlotVAE(n_objects=2, image_size=size, **options)
        seconds = train(model, data, steps, seed=0)
        model.eval()
        ratio = recon_ratio(model, data.val_set.images)
        share = slot_usage(model, data.val_set.images, n_objects=2)["min_slot_share"]
        print(name, f"recon ratio {ratio:.3f}", f"min slot share {share:.3f}", f"{seconds:.0f}s", flush=True)
        rows.append(row(f"id_recon_ratio/{name}", ratio, "MSE / all-black MSE", baseline=None if name == "old" else "old",
                        baseline_value=baseline, higher_is_better=False, id_min_slot_share=share, steps=steps,
                        image_size=size, train_seconds=round(seconds, 1), collapsed_at_step=model.collapsed_at_step,
                        **{k: v for k, v in options.items() if k != "n_objects"}))
        baseline = ratio if name == "old" else baseline
    write_rows("compositional_decoder_trial", rows)


if __name__ == "__main__":
    main()
