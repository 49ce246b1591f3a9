"""Compositional generalisation on two-object sprites: encoder-only versus generative inference.

`make bench-compositional` (``python -m procedural_perception.compositional.benchmark``) trains, on ID scenes only:

* encoder-only: ``SlotRegressor`` (supervised, Hungarian-matched slot regression);
* VAE: ``SlotVAE`` with ``alpha = 0`` (no interaction regulariser);
* VAE + regulariser: ``SlotVAE`` with ``alpha > 0``;
* VAE + regulariser + replay: the same, with generative replay switched on half-way through training,

then scores each (readouts fitted on ID slots, applied unchanged to held-out ID and to OOD scenes;
``procedural_perception/compositional/evaluation.py``), the regularised models with and without gradient-based search.
Rows: ``<split>_<metric>/<method>`` with the encoder-only value of the same metric as the baseline.
``QUICK=1`` shrinks everything to finish in under a minute (numbers then mean little).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

import lightning
import torch
from lightning.pytorch.callbacks import RichProgressBar

from procedural_perception.compositional.data import CompositionalDataModule
from procedural_perception.compositional.evaluation import evaluate_compositional, slot_usage
from procedural_perception.compositional.slot_regressor import SlotRegressor
from procedural_perception.compositional.slot_vae import SlotVAE
from procedural_perception.core.benchmark_rows import quick, row, write_rows


@dataclass
class Sizes:
    n_train: int  # ID training scenes
    n_eval: int  # held-out ID scenes and OOD scenes scored (each)
    epochs: int  # training epochs of every model
    search_steps: int  # Adam steps of gradient-based search
    search_eval: int  # scenes per split scored with search (search is the slow part)
    readout_steps: int = 400  # full-batch Adam steps of each readout fit
    batch_size: int = 64
    seed: int = 0


FULL = Sizes(n_train=4000, n_eval=1000, epochs=20, search_steps=30, search_eval=100)
QUICK = Sizes(n_train=256, n_eval=128, epochs=1, search_steps=5, search_eval=32, readout_steps=50)

# Model settings shared by every generative variant (configs/model/slot_vae.yaml documents each).
VAE = dict(slot_dim=8, d_model=32, heads=4, layers=2, lr=1e-3, beta=1e-5, alpha_warmup_steps=300, search_lr=0.05,
           train_pixels=256)
ALPHA = 0.01  # interaction weight of the regularised variants
REPLAY_WEIGHT = 0.1  # weight of the replay loss once it starts (half-way through training)


def train(model: lightning.LightningModule, data: CompositionalDataModule, epochs: int, seed: int) -> float:
    """Fit ``model`` on ID training scenes; return the wall-clock seconds."""
    lightning.seed_everything(seed, verbose=False)
    trainer = lightning.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                                enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                                callbacks=[RichProgressBar()])
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    return time.perf_counter() - start


def main() -> None:
    # One thread: on a shared 2-core machine a second thread waits on the busy core (measured 10x slower).
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    sizes = QUICK if quick() else FULL
    data = CompositionalDataModule(seed=sizes.seed, n_train=sizes.n_train, n_val=sizes.n_eval, n_test=sizes.n_eval,
                                   batch_size=sizes.batch_size)
    data.setup()
    steps = sizes.epochs * (sizes.n_train // sizes.batch_size)
    n_shapes = len(data.shapes)
    id_fit = data.train_set

    models = {
        "encoder-only": SlotRegressor(),
        "vae": SlotVAE(alpha=0.0, **VAE),
        "vae+reg": SlotVAE(alpha=ALPHA, **VAE),
        "vae+reg+replay": SlotVAE(alpha=ALPHA, replay_weight=REPLAY_WEIGHT, replay_start_step=steps // 2, **VAE),
    }
    seconds = {}
    for name, model in models.items():
        print(f"training {name} ({sizes.epochs} epochs, {sizes.n_train} ID scenes)")
        seconds[name] = train(model, data, sizes.epochs, sizes.seed)

    # method -> (trained model, whether its slots are refined by search)
    methods = {
        "encoder-only": ("encoder-only", False),
        "vae": ("vae", False),
        "vae+reg": ("vae+reg", False),
        "vae+reg+search": ("vae+reg", True),
        "vae+reg+replay": ("vae+reg+replay", False),
        "vae+reg+replay+search": ("vae+reg+replay", True),
    }
    searched = {name for name, search in methods.values() if search}
    evaluated = {}
    for name, model in models.items():
        start = time.perf_counter()
        evaluated[name] = evaluate_compositional(
            model, id_fit, data.val_set, data.ood_set, n_shapes, search=name in searched,
            search_scenes=sizes.search_eval, readout_steps=sizes.readout_steps, seed=sizes.seed,
            steps=sizes.search_steps)
        if hasattr(model, "decode"):
            evaluated[name].update({f"id/{k}": v for k, v in slot_usage(model, data.val_set.images).items()})
        print(name, {k: round(v, 4) for k, v in evaluated[name].items()}, f"{time.perf_counter() - start:.0f}s")

    extra = dict(asdict(sizes), alpha=ALPHA, replay_weight=REPLAY_WEIGHT, quick=quick(), threads=torch.get_num_threads(), **VAE)
    rows = []
    for metric, unit in (("r2/mean", "R^2"), ("shape_acc", "accuracy")):
        for split in ("id", "ood"):
            base = evaluated["encoder-only"][f"{split}/{metric}"]
            for method, (name, search) in methods.items():
                prefix = "search/" if search else ""
                scores = {k[len(prefix):]: v for k, v in evaluated[name].items() if k.startswith(prefix + split)}
                is_base = method == "encoder-only"
                rows.append(row(f"{split}_{metric.replace('/', '_')}/{method}", scores[f"{split}/{metric}"], unit,
                                baseline=None if is_base else "encoder-only", baseline_value=None if is_base else base,
                                scenes_scored=sizes.search_eval if search else sizes.n_eval,
                                train_seconds=round(seconds[name], 1), **extra, **scores))
    # Why the decoders do or do not compose: how their pixels share the two slots (ID scenes).
    for name, values in evaluated.items():
        if "id/interaction" in values:
            rows.append(row(f"id_interaction/{name}", values["id/interaction"], "penalty", id_min_slot_share=values["id/min_slot_share"], **extra))
            rows.append(row(f"id_min_slot_share/{name}", values["id/min_slot_share"], "fraction", **extra))
    write_rows("compositional", rows)


if __name__ == "__main__":
    main()
