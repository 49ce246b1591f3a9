"""Compositional generalisation on two-object sprites: encoder-only versus generative inference.

`make bench-compositional` (``python -m procedural_perception.compositional.benchmark``) trains, on ID scenes only:

* encoder-only: ``SlotRegressor`` (supervised, Hungarian-matched slot regression);
* VAE: ``SlotVAE`` with ``alpha = 0`` (no interaction regulariser);
* VAE + regulariser: ``SlotVAE`` with ``alpha > 0`` (switched on after 30% of training, ramped over 25%);
* VAE + regulariser + replay: the same, with generative replay (``REPLAY``) from half-way through training,
* encoder-only with pre-training (beyond the paper): the same regression through the teacher ViT of a
  procedural DINO checkpoint (``PRETRAINED``, ``slot_encoder.PretrainedSlotEncoder``, fine-tuned), beside the
  same ViT from random initialisation (its twin), so that only the start differs,

then scores each (readouts fitted on ID slots, applied unchanged to held-out ID and to OOD scenes;
``evaluation.py``), the regularised models also with MAP search on the same scenes, scored by the
same readout (``search``) and by a readout fitted on searched ID slots (``search_fit``).
Rows: ``<split>_<metric>/<method>`` with the encoder-only value of the same metric as the baseline,
plus ``id_recon_ratio/<model>`` (ID MSE / all-black MSE) and ``id_min_slot_share/<model>``.

A generative model whose ID reconstruction ratio is above ``MAX_RECON_RATIO`` (it does not reproduce
its training scenes) or whose training stopped on a slot collapse gets **no** OOD numbers: its OOD
rows carry ``value: null`` and a ``note`` saying why. A PNG beside the JSON shows OOD scenes (top
row) and each generative model's reconstructions. TensorBoard (``make tensorboard``, under
``runs/compositional/seed<k>/<model>``): each model's training losses, its scores, and for the generative
models the same OOD grid (scenes above their reconstructions).

Environment: ``QUICK=1`` shrinks everything to check the mechanics in under a minute (32 px, a few
steps; the numbers then mean nothing and every generative row is refused); ``SEEDS=0,1`` runs
several seeds (rows get ``/seed<k>``), in parallel processes (``BENCH_WORKERS``, default one per seed up to the
core count); ``BENCH_THREADS`` sets torch threads per process (default 1); ``RUNS_DIR`` the TensorBoard
folder (default ``runs``);
``MODELS=vae+reg+replay`` reruns only the named models (and the encoder-only baseline) and replaces their rows
in the committed table; ``DINO_CHECKPOINT`` the procedural DINO checkpoint of the pre-trained rows (default :data:`PRETRAINED`; absent,
those rows say so and carry no value).
"""

from __future__ import annotations

import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import lightning
import torch
import torchvision
from lightning.pytorch.loggers import TensorBoardLogger

from procedural_perception.compositional.data import CompositionalDataModule
from procedural_perception.compositional.evaluation import (
    evaluate_compositional,
    infer_slots,
    recon_ratio,
    slot_usage,
)
from procedural_perception.compositional.replay import replay_recoverability
from procedural_perception.compositional.slot_encoder import PretrainedSlotEncoder
from procedural_perception.compositional.slot_regressor import SlotRegressor
from procedural_perception.compositional.slot_vae import SlotVAE
from procedural_perception.core.atomic import atomic_path
from procedural_perception.core.benchmark_rows import RESULTS_DIR, quick, row, write_rows

# A decoder must reproduce its training scenes before its OOD scores say anything (issue 13, Deliver 1).
MAX_RECON_RATIO = 0.10


@dataclass
class Sizes:
    image_size: int  # scene side in pixels (64: the authors' size, shapes legible)
    n_train: int  # ID training scenes
    n_eval: int  # held-out ID scenes and OOD scenes scored (each), with and without search
    steps: int  # optimiser steps of every generative model
    regressor_steps: int  # optimiser steps of the encoder-only model
    search_steps: int  # Adam steps of MAP search
    search_fit: int  # ID training scenes searched to fit the search_fit readout
    readout_steps: int = 400  # full-batch Adam steps of each readout fit
    batch_size: int = 32
    train_pixels: int | None = None  # pixels per image per step (None: the full image; conv_alpha draws it anyway)


# FULL: 32 px, the authors' object sizes (scale 0.09-0.133 of the side). ID recon ratios of the conv_alpha VAE
# (S/4 encoder, 10,000 scenes, one thread; trials of seed 0, 5,000 steps):
#   beta 1e-5:                     0.135 (0.130 after 8,000 steps; the S/16 encoder: 0.155)
#   beta 1e-6, alpha 0:            0.094      beta 1e-6, alpha 1e-4:                        0.091
#   + replay weight 1 (from 0.5):  0.968      + replay 1e-3: 0.096      + replay 1e-4:      0.098
# Objects drawn twice as large (object_scale=2, the pixel sizes of the authors' 64 px scenes) reach 0.043.
# beta 1e-6 is the anchor's relative KL weight (Brady et al.: 5 x summed squared error + 0.05 KL, i.e. 8e-7 in
# per-pixel-mean units at 64 px); 1e-5 spent a quarter of the loss on the KL and blurred the objects. 6,000 steps
# leave a margin under the 0.10 criterion (the trials above stop at 5,000).
FULL = Sizes(image_size=32, n_train=10000, n_eval=500, steps=6000, regressor_steps=4000, search_steps=20,
             search_fit=500)
QUICK = Sizes(image_size=32, n_train=128, n_eval=48, steps=4, regressor_steps=4, search_steps=3, search_fit=16,
              readout_steps=30)

ENCODER = "mlp_s4"  # every model's encoder, the encoder-only baseline's too (slot_encoder.py)
# Model settings shared by every generative variant (SlotVAE's docstring explains each): per-slot upsampling
# decoder with alpha masks normalised over slots and linear colours (conv_alpha_decoder.py; slot MLP 256 wide,
# 32-channel convolutions as Burgess et al.), a background slot (K = objects + 1), lr 1e-3 after a 100-step
# warm-up, KL and regulariser at Brady et al.'s relative weights (per-pixel-mean units).
VAE = dict(decoder="conv_alpha", encoder=ENCODER, n_slots=3, n_objects=2, slot_dim=8, d_model=256, channels=32, lr=1e-3,
           lr_warmup=100, beta=1e-6, alpha_start=0.3, alpha_warmup=0.25, search_lr=0.1, search_prior="encoder")
ALPHA = 1e-4  # interaction weight of the regularised variants (per-pixel-mean units)
# Replay from half-way, weighted in the loss's per-pixel-mean units: its standardised slot error is ~1 where the
# reconstruction term is ~1e-3, so weight 1 let replay rule the encoder (ID recon ratio 0.968: the encoder
# collapsed towards slots replay recovers trivially). Table runs (32 px, seeds 0 and 1): weight 1e-3, background
# slot kept (committed): ratio 0.090, id_replay_recovery 0.45 (chance 1.17; 0.81 without replay), OOD R^2 0.382;
# the same pooling every slot: 0.096, 0.48, 0.356; weight 1e-2, background kept: ratio 0.110 (refused), 0.46.
# A 16 px trial (2,000 steps, background kept): 1e-3 -> recovery 0.44, ratio 0.11; 1e-2 -> 0.24, 0.12;
# 1e-1 -> 0.07, 0.15: recoverable targets cost the fit. At 32 px (seed 0, 6,000 steps) 1e-1 gives ratio 0.183
# (refused) and recovery 0.50 (chance 0.93): no better recovered, and a worse fit.
REPLAY = dict(replay_weight=1e-3, replay_start=0.5)
# The procedural DINO checkpoint the pre-trained encoder-only row starts from: the cpu_long kml_mixup run
# (3,840 steps of the cpu recipe, ViT-tiny depth 4, patch 16, trained at 64 px; docs/results/cpu_long). Runs
# are not committed (gitignored): train it with the command in docs/results/cpu_long/experiment.md or pass any
# DINO checkpoint in DINO_CHECKPOINT.
PRETRAINED = "docs/results/runs_long/exp_kml_mixup_s0/checkpoints/last.ckpt"
# Fine-tuning rate of the pre-trained (and twin) ViT; its new slot MLP keeps the regressor's 1e-3.
BACKBONE_LR = 1e-4
VIT_ROWS = ("encoder-only+dino", "encoder-only+vit")


def tensorboard(seed: int, name: str) -> TensorBoardLogger:
    """The TensorBoard run of model ``name`` at ``seed``: ``runs/compositional[_quick]/seed<seed>/<name>``."""
    folder = Path(os.environ.get("RUNS_DIR", "runs")) / ("compositional_quick" if quick() else "compositional")
    return TensorBoardLogger(folder, name=f"seed{seed}", version=name, default_hp_metric=False)


def train(model: lightning.LightningModule, data: CompositionalDataModule, steps: int, seed: int,
          logger: TensorBoardLogger | bool = False) -> float:
    """Fit ``model`` on ID training scenes for ``steps`` steps (losses to ``logger``); return the wall-clock seconds."""
    lightning.seed_everything(seed, verbose=False)
    trainer = lightning.Trainer(max_steps=steps, accelerator="cpu", logger=logger, enable_checkpointing=False,
                                enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                                enable_progress_bar=False)
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    return time.perf_counter() - start


def build_models(sizes: Sizes, seed: int = 0) -> dict[str, lightning.LightningModule]:
    vae = dict(VAE, image_size=sizes.image_size, train_pixels=sizes.train_pixels, search_steps=sizes.search_steps)
    if quick():
        vae["min_slot_share"] = 0.0  # a few steps cannot separate objects; QUICK checks the mechanics only
    chosen = selected_models()
    chosen = None if chosen is None else chosen | {"encoder-only"}  # the baseline of every row
    builders = {
        "encoder-only": lambda: SlotRegressor(image_size=sizes.image_size, encoder=ENCODER),
        "vae": lambda: SlotVAE(alpha=0.0, **vae),
        "vae+reg": lambda: SlotVAE(alpha=ALPHA, **vae),
        "vae+reg+replay": lambda: SlotVAE(alpha=ALPHA, **REPLAY, **vae),
    }
    models = {name: build() for name, build in builders.items() if chosen is None or name in chosen}
    if chosen is None or set(VIT_ROWS) & chosen:
        models |= {n: m for n, m in pretrained_models(checkpoint_path(), seed).items() if chosen is None or n in chosen}
    return models


def selected_models() -> set[str] | None:
    """The models named in ``MODELS`` (comma-separated; None: all). The encoder-only baseline trains with any
    choice, but its rows are rewritten only when it is named."""
    names = os.environ.get("MODELS")
    if not names:
        return None
    chosen = {n.strip() for n in names.split(",") if n.strip()}
    known = {"encoder-only", "vae", "vae+reg", "vae+reg+replay", *VIT_ROWS}
    if chosen - known:
        raise SystemExit(f"MODELS: unknown {sorted(chosen - known)}; choose from {sorted(known)}")
    return chosen


def checkpoint_path() -> str | None:
    """The DINO checkpoint of the pre-trained rows, or None (with a message) when there is none."""
    path = os.environ.get("DINO_CHECKPOINT", PRETRAINED)
    if os.path.isfile(path):
        return path
    print(f"no DINO checkpoint at {path}: the pre-trained encoder-only rows are not run "
          "(train one with `make train DATA=kml_mixup`, then DINO_CHECKPOINT=<run>/checkpoints/last.ckpt)", flush=True)
    return None


def pretrained_models(checkpoint: str | None, seed: int) -> dict[str, lightning.LightningModule]:
    """Encoder-only regressors through the checkpoint's teacher ViT and through its random twin (same
    architecture, random weights of ``seed``), both fine-tuned alike; empty without a checkpoint."""
    if checkpoint is None:
        return {}
    from lightning_modules.encoders import load_dino_checkpoint, random_twin

    starts = {"encoder-only+dino": load_dino_checkpoint(checkpoint), "encoder-only+vit": random_twin(checkpoint, seed)}
    return {name: SlotRegressor(encoder=PretrainedSlotEncoder(backbone, n_slots=2, out_dim=5),
                                backbone_lr=BACKBONE_LR) for name, backbone in starts.items()}


# method -> (trained model, whether its slots are refined by search)
METHODS = {
    "encoder-only": ("encoder-only", ""),
    "vae": ("vae", ""),
    "vae+reg": ("vae+reg", ""),
    "vae+reg+search": ("vae+reg", "search/"),
    "vae+reg+search_fit": ("vae+reg", "search_fit/"),
    "vae+reg+replay": ("vae+reg+replay", ""),
    "vae+reg+replay+search": ("vae+reg+replay", "search/"),
    "encoder-only+dino": ("encoder-only+dino", ""),
    "encoder-only+vit": ("encoder-only+vit", ""),
}


def refusal(model, ratio: float | None) -> str | None:
    """Why a model's OOD scores are not reported (None: they are)."""
    if getattr(model, "collapsed_at_step", None) is not None:
        return f"not reported: training stopped on a slot collapse at step {model.collapsed_at_step}"
    if ratio is not None and ratio > MAX_RECON_RATIO:
        return (f"not reported: ID recon ratio {ratio:.3f} > {MAX_RECON_RATIO} "
                "(the decoder does not reproduce its training scenes)")
    return None


def evaluate(models: dict, data: CompositionalDataModule, sizes: Sizes, seed: int) -> dict[str, dict[str, float]]:
    """Scores of every model (``evaluate_compositional`` keys, plus ``recon_ratio`` and slot usage)."""
    evaluated = {}
    for name, model in models.items():
        start = time.perf_counter()
        model.eval()
        search = any(m == name and p for m, p in METHODS.values())
        scores = evaluate_compositional(model, data.train_set, data.val_set, data.ood_set, len(data.shapes),
                                        search=search, readout_steps=sizes.readout_steps, seed=seed,
                                        search_fit_scenes=sizes.search_fit if search else 0, steps=sizes.search_steps)
        if hasattr(model, "decode"):
            scores["recon_ratio"] = recon_ratio(model, data.val_set.images)
            scores.update({f"id/{k}": v for k, v in slot_usage(model, data.val_set.images, n_objects=2).items()})
            encode = lambda x, m=model: m.encode(x)[0]  # noqa: E731  (posterior means)
            recovery = replay_recoverability(encode, model.render, data.val_set.images[:256],
                                             torch.Generator().manual_seed(seed), movable=model.movable_slots)
            scores.update({f"replay/{k}": v for k, v in recovery.items()})
        evaluated[name] = scores
        print(name, {k: round(v, 4) for k, v in scores.items()}, f"{time.perf_counter() - start:.0f}s", flush=True)
    return evaluated


def table_rows(evaluated: dict, models: dict, seconds: dict, sizes: Sizes, suffix: str, extra: dict) -> list[dict]:
    rows, partial = [], selected_models() is not None
    for metric, unit in (("r2/mean", "R^2"), ("shape_acc", "accuracy")):
        for split in ("id", "ood"):
            base = evaluated["encoder-only"][f"{split}/{metric}"]
            for method, (name, prefix) in METHODS.items():
                if name not in evaluated and partial:
                    continue  # not chosen in this run (MODELS): its committed rows stay
                if name not in evaluated:  # the pre-trained rows without a checkpoint
                    rows.append(row(f"{split}_{metric.replace('/', '_')}/{method}{suffix}", None, unit,
                                    baseline="encoder-only", baseline_value=base, note="not run: no DINO checkpoint",
                                    **extra))
                    continue
                scores = {k[len(prefix):]: v for k, v in evaluated[name].items() if k.startswith(prefix + split)}
                note = refusal(models[name], evaluated[name].get("recon_ratio")) if split == "ood" else None
                is_base = method == "encoder-only"
                rows.append(row(f"{split}_{metric.replace('/', '_')}/{method}{suffix}",
                                None if note else scores[f"{split}/{metric}"], unit,
                                baseline=None if is_base else "encoder-only", baseline_value=None if is_base else base,
                                note=note, scenes_scored=sizes.n_eval, train_seconds=round(seconds[name], 1),
                                **extra, **({} if note else scores)))
    for name, values in evaluated.items():
        if "recon_ratio" in values:
            rows.append(row(f"id_recon_ratio/{name}{suffix}", values["recon_ratio"], "MSE / all-black MSE",
                            criterion=MAX_RECON_RATIO, collapsed_at_step=models[name].collapsed_at_step, **extra))
            rows.append(row(f"id_min_slot_share/{name}{suffix}", values["id/min_slot_share"], "fraction",
                            id_interaction=values["id/interaction"], **extra))
            rows.append(row(f"id_replay_recovery/{name}{suffix}", values["replay/recombined"],
                            "standardised matched slot MSE", baseline="an encoder that ignores its input",
                            baseline_value=values["replay/chance"], higher_is_better=False,
                            reencoded=values["replay/reencoded"],
                            note="ID slots recombined, decoded and re-encoded: are replay's targets recoverable?",
                            **extra))
    return rows


@torch.no_grad()
def reconstructions(models: dict, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each generative model's reconstructions [N, 3, H, W] of ``images`` (model order)."""
    return {name: model.render(infer_slots(model, images)).clamp(0, 1)
            for name, model in models.items() if hasattr(model, "render")}


def save_reconstructions(images: torch.Tensor, recons: dict[str, torch.Tensor], path) -> None:
    """One PNG: OOD scenes on the top row, each generative model's reconstructions below (model order)."""
    grid = torchvision.utils.make_grid(torch.cat([images, *recons.values()]), nrow=len(images), padding=1)
    with atomic_path(path) as tmp:
        torchvision.utils.save_image(grid, tmp, format="png")


def log_results(loggers: dict[str, TensorBoardLogger], evaluated: dict, images: torch.Tensor,
                recons: dict[str, torch.Tensor], steps: dict[str, int]) -> None:
    """Each model's scores, and for a generative one OOD ``images`` above its reconstructions, in its TensorBoard run."""
    for name, logger in loggers.items():
        scalars = {f"compositional/{k}": v for k, v in evaluated[name].items() if math.isfinite(v)}
        logger.log_metrics(scalars, step=steps[name])
        if name in recons:
            grid = torchvision.utils.make_grid(torch.cat([images, recons[name]]), nrow=len(images), padding=1)
            logger.experiment.add_image("compositional/ood_reconstructions", grid, steps[name])
        logger.finalize("success")


def run_seed(sizes: Sizes, seed: int, suffix: str) -> list[dict]:
    data = CompositionalDataModule(seed=seed, image_size=sizes.image_size, n_train=sizes.n_train,
                                   n_val=sizes.n_eval, n_test=sizes.n_eval, batch_size=sizes.batch_size)
    data.setup()
    models = build_models(sizes, seed)
    seconds, steps, loggers = {}, {}, {}
    for name, model in models.items():
        steps[name] = sizes.regressor_steps if name.startswith("encoder-only") else sizes.steps
        loggers[name] = tensorboard(seed, name)
        print(f"training {name} ({steps[name]} steps, {sizes.n_train} ID scenes, seed {seed}; "
              f"TensorBoard: {loggers[name].log_dir})", flush=True)
        seconds[name] = train(model, data, steps[name], seed, loggers[name])
    evaluated = evaluate(models, data, sizes, seed)
    images = data.ood_set.images[:12]
    recons = reconstructions(models, images)
    save_reconstructions(images, recons, RESULTS_DIR / f"compositional_ood_reconstructions{suffix.replace('/', '_')}.png")
    log_results(loggers, evaluated, images, recons, steps)
    extra = dict(asdict(sizes), seed=seed, alpha=ALPHA, **REPLAY, quick=quick(), threads=torch.get_num_threads(),
                 dino_checkpoint=next((m.encoder.backbone.checkpoint for n, m in models.items() if n in VIT_ROWS), None),
                 backbone_lr=BACKBONE_LR, **{k: v for k, v in VAE.items() if k != "n_objects"})
    return table_rows(evaluated, models, seconds, sizes, suffix, extra)


def _seed_rows(sizes: Sizes, seed: int, suffix: str) -> list[dict]:
    # One thread: on a shared 2-core machine a second thread waits on the busy core (measured 10x slower).
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    return run_seed(sizes, seed, suffix)


def main() -> None:
    """Every seed of ``SEEDS``, in ``BENCH_WORKERS`` processes (default: one per seed, at most one per core)."""
    sizes = QUICK if quick() else FULL
    seeds = [int(s) for s in os.environ.get("SEEDS", "0").split(",")]
    suffixes = [f"/seed{seed}" if len(seeds) > 1 else "" for seed in seeds]
    workers = int(os.environ.get("BENCH_WORKERS", str(min(len(seeds), os.cpu_count() or 1))))
    if workers <= 1:
        per_seed = [_seed_rows(sizes, seed, suffix) for seed, suffix in zip(seeds, suffixes, strict=True)]
    else:  # seeds are independent: the same rows as one after the other (each seeds its own generators)
        with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
            per_seed = list(pool.map(_seed_rows, [sizes] * len(seeds), seeds, suffixes))
    rows = [r for rows in per_seed for r in rows]
    chosen = selected_models()
    if chosen is not None:  # a partial rerun replaces its own rows in the committed table
        if "encoder-only" not in chosen:  # trained as the baseline only: its committed rows stay
            rows = [r for r in rows if r["name"].split("/")[1] != "encoder-only"]
        rows = merged_rows(RESULTS_DIR / "compositional.json", rows)
    write_rows("compositional", rows)


def merged_rows(path: Path, new: list[dict]) -> list[dict]:
    """The rows of ``path`` with every row of the same name replaced by ``new``'s, new names appended."""
    old = json.loads(path.read_text()) if path.exists() else []
    by_name = {r["name"]: r for r in new}
    merged = [by_name.pop(r["name"], r) for r in old]
    return merged + list(by_name.values())


if __name__ == "__main__":
    main()
