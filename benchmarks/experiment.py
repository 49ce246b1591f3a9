"""The procedural-versus-real transfer experiment (``make experiment``; results under docs/results/).

    python -m benchmarks.experiment [--budget-steps 960] [--seeds 0 1] \\
        [--processes shaders mixup kml kml_mixup] [--quick] [--out docs/results] [--runs DIR]

1. Trains the cpu-profile DINO model on each procedural process and on the real-data controls under the
   same compute budget (same ``trainer.max_steps``, batch, recipe and seeds), one
   ``python -m procedural_perception.cli.train`` subprocess per run (a fresh process: its own EGL contexts
   and seeding). The controls are the paper's real-data rows at equal budget: ``photos``, the offline
   wallpaper photographs (out of domain, the analogue of its Places row) and ``fashion_mnist``, the
   Fashion-MNIST training images (in domain, the analogue of its ImageNet row). A run whose
   ``last.ckpt`` already reached the budget is skipped; an unfinished one resumes from it, so a killed
   experiment continues. A run whose checkpoint is absent but whose metrics are committed in
   ``<out>/evals/`` for the same evaluation settings is not trained again: its committed metrics are used
   (and the log says so), so the table can grow by a row without re-training the others.
2. Evaluates every checkpoint and the reference encoders (``random_vit`` = a random initialisation of
   the checkpoints' own architecture, ``rgb``, ``efficientnet_lite0``) with ``procedural_perception.cli.eval``'s own
   evaluations: kNN classification of Fashion-MNIST (every voting rule, every k) with the exact
   privacy audit, PCA R^2 and 2AFC. Each encoder's metrics are cached in ``<out>/evals/``.
3. Writes ``experiment.json`` and ``experiment.md`` (mean +- sample standard deviation over seeds,
   beside the paper's published GPU-scale numbers on other data sets) and two plots:
   ``knn_vs_k.png`` (accuracy versus k, a panel per voting rule, a line per encoder) and
   ``privacy.png`` (accuracy versus non-private fraction of the memory, the paper's Fig. 14).

``--quick`` (4 steps per process, 1 seed, tiny evaluation sizes) checks the whole pipeline in minutes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from rich.console import Console

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from datamodules.procedural.processes import PROCESSES as PROCESS_REGISTRY  # noqa: E402
from lightning_modules.encoders import REFERENCE_ENCODERS  # noqa: E402
from procedural_perception.core.atomic import atomic_path, atomic_write_json, atomic_write_text  # noqa: E402
from procedural_perception.core.checkpoints import read_checkpoint  # noqa: E402
from procedural_perception.core.config import compose  # noqa: E402
from procedural_perception.evaluations import suite  # noqa: E402
from procedural_perception.evaluations.embedding import query_seed  # noqa: E402
from procedural_perception.visual_memory.voting import PAPER_K as AUDIT_K  # noqa: E402
from procedural_perception.visual_memory.voting import PAPER_RULE as AUDIT_RULE  # noqa: E402
from procedural_perception.visual_memory.voting import RULES  # noqa: E402

PROCESSES = tuple(PROCESS_REGISTRY)  # every registered process: the paper's four and its baselines
HEADLINE_PROCESS = "kml_mixup"
# The GLSL processes train with one fixed generator, the one of the first committed results (4 programs of
# the 2D `patterns` family per block, fresh program seeds: today's defaults, spelled out so that a change
# of defaults cannot silently mix generators in one table); the ablations change one thing at a time.
PINNED_GENERATOR = ("data.programs_per_block=4", "data.program_pool=0")
# Real-data controls trained with the same recipe: row -> the procedural_perception.cli.train data overrides.
# Fashion-MNIST's 28 px images are resized to the 64 px of the procedural renders.
DATA_ROWS = {
    "photos": ("data=images", "data.root=wallpapers"),
    "fashion_mnist": ("data=images", "data.root=fashion_mnist:train", "data.resize=64"),
}
# kml_mixup at equal budget with one change each: the program pool of the cpu profile (128 programs per
# block from a pool of 5,120, so a run sees 5,120 programs instead of ~240), and every program family
# (the generator of the other rows otherwise).
ABLATIONS = {
    "kml_mixup_pool": ("data=kml_mixup_pool",),  # 128 programs per block from 5,120: configs/data/kml_mixup_pool.yaml
    # The same 128 programs per block from a pool of only 256, so the run sees about as many programs as
    # kml_mixup's ~240: separates diversity within a block (a batch) from the number of programs in a run.
    "kml_mixup_pool256": ("data=kml_mixup_pool", "data.program_pool=256"),
    "kml_mixup_families": ("data=kml_mixup_families", *PINNED_GENERATOR),  # weights: configs/data/kml_mixup_families.yaml
}
ROWS = PROCESSES + tuple(DATA_ROWS) + tuple(ABLATIONS)
# What each training row saw (the table's second column).
TRAINED_ON = {**{p: "procedural (GLSL, patterns, 4 programs per block)" for p in ("shaders", "mixup", "kml", "kml_mixup")},
              "stylegan": "procedural (random-init StyleGAN-Oriented)", "dead_leaves": "procedural (dead leaves)",
              "kml_mixup_pool": "ablation: 128 programs per block from a pool of 5,120",
              "kml_mixup_pool256": "ablation: 128 programs per block from a pool of 256",
              "kml_mixup_families": "ablation: every program family (configs/data/kml_mixup_families.yaml)",
              "photos": "real, out of domain: 28 wallpaper photographs (2,076 tiles)",
              "fashion_mnist": "real, in domain: Fashion-MNIST train (60k)"}
# Seeds per row when --seeds is not given: the headline rows get two, so they have a spread.
DEFAULT_SEEDS = {HEADLINE_PROCESS: (0, 1), "photos": (0, 1), "fashion_mnist": (0, 1), "kml_mixup_families": (0, 1),
                 "stylegan": (0, 1), "dead_leaves": (0, 1), "kml_mixup_pool": (0, 1),
                 "kml_mixup_pool256": (0, 1)}
# The cpu profile's own length (20 epochs x 48 steps of 32 images): ~6 min per run on 2 idle cores.
DEFAULT_BUDGET_STEPS = 960
EVALS = ("knn", "pca_r2", "twoafc")
# The voting rule and k of the headline accuracy: the privacy audit's (paper section 6), fixed in advance
# rather than picked as the best k on the test queries.
HEADLINE_KEY = f"knn/{AUDIT_RULE}/k{AUDIT_K}/top1"
PRIVATE_KEY = f"privacy/{AUDIT_RULE}/k{AUDIT_K}/non_private_fraction"
PRIVATE_COUNT_KEY = f"privacy/{AUDIT_RULE}/k{AUDIT_K}/non_private_count"
# knn/<rule>/k<k>/<metric>
KNN_KEY = re.compile(r"^knn/([a-z_]+)/k(\d+)/")
# (column title, metric key, scale for display)
SUMMARY_COLUMNS = [
    (f"kNN top-1 % ({AUDIT_RULE}, k={AUDIT_K})", HEADLINE_KEY, 1.0),
    ("kNN top-1 % (rank, k=200)", "knn/rank/k200/top1", 1.0),
    ("non-private % of memory", PRIVATE_KEY, 100.0),
    ("non-private count", PRIVATE_COUNT_KEY, 1.0),
    ("PCA R² %", "pca_r2", 100.0),
    ("2AFC", "twoafc/score", 1.0),
    # Anisotropy of the kNN memory (embedding_geometry.py): near 1 / near 1 means a degenerate vote.
    ("memory mean cosine", "knn/anisotropy/mean_cosine", 1.0),
    ("memory effective rank", "knn/anisotropy/effective_rank", 1.0),
]
# Quick mode: a pipeline check, not a measurement.
# The memory keeps 200 images, the largest k of the sweep; 64 px is the training crop size.
QUICK = {"budget_steps": 4, "batch_size": 8, "block_size": 32, "limit_memory": 200, "limit_query": 32,
         "pca_limit": 4, "twoafc_limit": 8, "image_size": 64}

# The paper's figures (REFERENCE.md sections 3-6): ViT-S trained on 1.3M images on GPUs, evaluated on
# ImageNet-1K (kNN, privacy), COCO (PCA R^2) and NIGHTS (2AFC) - other data sets than ours.
PAPER_LABELS = {"shaders": "Shaders", "mixup": "S. Mixup", "kml": "S. KML", "kml_mixup": "S. KML Mixup",
                "stylegan": "StyleGAN", "photos": "Places", "fashion_mnist": "ImageNet-trained (ViT-S)",
                "random_vit": "random init", "rgb": "RGB", "efficientnet_lite0": "ImageNet-trained (ViT-S)"}
PAPER = {  # label: (ImageNet kNN top-1 %, Flowers kNN top-1 %, COCO PCA R^2 %, NIGHTS 2AFC, non-private count, %)
    "Shaders": (30.69, 66.18, 55.0, 0.817, 6547, None),
    "S. Mixup": (35.45, 73.33, 51.4, 0.811, 6685, None),
    "S. KML": (35.38, 71.86, 55.9, 0.824, 6976, None),
    "S. KML Mixup": (37.88, 75.20, 53.7, 0.811, 7187, 0.56),
    "StyleGAN": (13.73, 41.86, 48.5, 0.761, 4036, None),
    "Places": (47.30, 59.51, 62.1, 0.833, None, None),
    "random init": (1.84, 11.18, 36.7, None, None, None),
    "RGB": (None, None, 19.4, None, None, None),
    "ImageNet-trained (ViT-S)": (68.89, 83.43, 63.7, 0.873, None, None),
}
PAPER_COLUMNS = ("kNN top-1 % ImageNet-1K (Table 1)", "kNN top-1 % Flowers (Table 1)", "PCA R² % COCO (Table 2)",
                 "2AFC NIGHTS-val", "non-private samples ImageNet (sec. 6)", "non-private %")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.experiment", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget-steps", type=int, default=None,
                   help=f"optimisation steps per run, the same for every process (default {DEFAULT_BUDGET_STEPS})")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="seeds of every process (default: 0 1 for kml_mixup, 0 for the others)")
    p.add_argument("--processes", nargs="+", default=list(ROWS), choices=ROWS, metavar="ROW",
                   help=f"training rows: procedural processes and real-data controls (default all: {' '.join(ROWS)})")
    p.add_argument("--batch-size", type=int, default=None, help="training batch (default: the cpu profile's 32)")
    p.add_argument("--quick", action="store_true", help="4 steps per process, 1 seed, tiny evaluations")
    p.add_argument("--out", type=Path, default=Path("docs/results"))
    p.add_argument("--runs", type=Path, default=None,
                   help="training runs folder (default <out>/runs); another --out can evaluate the same runs")
    p.add_argument("--limit-memory", type=int, default=None, help="kNN memory images (default: make eval's)")
    p.add_argument("--limit-query", type=int, default=None, help="kNN query images (default: make eval's)")
    p.add_argument("--pca-limit", type=int, default=None, help="PCA R^2 images (default: make eval's)")
    p.add_argument("--twoafc-limit", type=int, default=None, help="2AFC triplets (default: make eval's)")
    p.add_argument("--image-size", type=int, default=None, help="evaluation input size (default: make eval's)")
    p.add_argument("--train-arg", action="append", default=[], help="extra procedural_perception.cli.train override key=value")
    args = p.parse_args(argv)
    if args.quick:
        for key in ("budget_steps", "batch_size", "limit_memory", "limit_query", "pca_limit", "twoafc_limit",
                    "image_size"):
            if getattr(args, key) is None:
                setattr(args, key, QUICK[key])
        args.seeds = args.seeds or [0]
    args.budget_steps = args.budget_steps or DEFAULT_BUDGET_STEPS
    args.runs = args.runs or args.out / "runs"
    if args.budget_steps < 1:
        p.error("--budget-steps must be at least 1")
    return args


def seeds_of(process: str, seeds: Sequence[int] | None) -> list[int]:
    return list(seeds) if seeds else list(DEFAULT_SEEDS.get(process, (0,)))


def run_name(process: str, seed: int) -> str:
    return f"exp_{process}_s{seed}"


def train_command(args: argparse.Namespace, process: str, seed: int) -> list[str]:
    """The procedural_perception.cli.train call of one run: cpu profile, no evaluation callbacks, the budget in steps."""
    # callbacks=none: the evaluations run afterwards on the final checkpoint, and procedural_perception.cli.train still keeps
    # a last.ckpt every epoch (resuming) without the profile's kept 55 MB checkpoints.
    if process in DATA_ROWS or process in ABLATIONS:
        data = list({**DATA_ROWS, **ABLATIONS}[process])
    else:
        generated = process in PROCESS_REGISTRY and PROCESS_REGISTRY[process].generate is not None  # no GL
        data = [f"data={process}", *(() if generated else PINNED_GENERATOR)]
    overrides = [*data, "profile=cpu", "callbacks=none", f"seed={seed}",
                 f"trainer.max_steps={args.budget_steps}",
                 "trainer.max_epochs=-1",  # the budget is the step count, not the profile's epochs
                 f"run_name={run_name(process, seed)}", f"runs_dir={args.runs}"]
    if args.batch_size:
        overrides.append(f"data.batch_size={args.batch_size}")
    if args.quick:
        overrides.append("data.num_workers=0")
        if process not in DATA_ROWS:  # smaller stream blocks: the first batch does not wait for 512 renders
            overrides.append(f"data.block_size={QUICK['block_size']}")
    return [sys.executable, "-m", "procedural_perception.cli.train", *overrides, *args.train_arg]


def training_setup(args: argparse.Namespace) -> dict[str, Any]:
    """What every run trains with, read from the composed procedural_perception.cli.train configuration (same for all processes)."""
    cfg = compose(train_command(args, PROCESSES[0], 0)[3:])
    return {"max_steps": cfg.trainer.max_steps, "batch_size": cfg.data.batch_size, "arch": cfg.model.arch,
            "depth": cfg.model.depth, "global_crop_size": cfg.model.global_crop_size,
            "image_size": cfg.data.image_size}


def finished_steps(checkpoint: Path) -> int:
    """The optimisation steps a checkpoint has done (0 when there is none)."""
    if not checkpoint.exists():
        return 0
    return int(read_checkpoint(checkpoint).get("global_step", 0))


def committed_metrics(args: argparse.Namespace, label: str) -> Path | None:
    """The committed metrics of run ``label`` (``<out>/evals/<label>.json``) for this experiment's evaluation
    settings, or None. Used when the run's checkpoint is not on this machine (checkpoints are not committed)."""
    cache = args.out / "evals" / f"{label}.json"
    if not cache.exists():
        return None
    stored = json.loads(cache.read_text()).get("fingerprint", {}).get("config", {})
    return cache if decisive_settings(stored) == decisive_settings(eval_config_of(args)) else None


def decisive_settings(config: dict) -> dict:
    """The evaluation settings that decide the numbers, from a fingerprint's ``config``: today's per-task
    form, or the flat form of the first committed results (same tasks, ks and rules).

    The flat form drew its query subset with the memory's seed (0); today's tasks draw it with
    :func:`~procedural_perception.evaluations.embedding.query_seed`. Other 2,000 test queries move the same
    encoder's kNN accuracy by up to ~2 points (raw pixels: 81.50 then, 79.65 now), so ``query_seed`` keeps
    a first-results file from being mixed into a table of today's results."""
    if "knn" in config:
        knn, pca, twoafc = config["knn"], config["pca_r2"], config["twoafc"]
        flat = {"memory": knn["memory"], "query": knn["query"], "limit_memory": knn["memory_size"],
                "limit_query": knn["query_size"], "image_size": knn["image_size"], "pca_data": pca["data"],
                "pca_limit": pca["limit"], "twoafc_data": twoafc["data"], "twoafc_limit": twoafc["limit"],
                "query_seed": query_seed(knn.get("seed", 0))}
    else:
        flat = {**config, "query_seed": 0}
    keys = ("memory", "query", "limit_memory", "limit_query", "image_size", "pca_data", "pca_limit", "twoafc_data",
            "twoafc_limit", "query_seed")
    return {key: flat.get(key) for key in keys}


def train_all(args: argparse.Namespace, console: Console) -> dict[str, list[Path]]:
    """Train (or resume, or skip) every run; returns the final checkpoints of each process."""
    checkpoints: dict[str, list[Path]] = {}
    env = {**os.environ, "PYOPENGL_PLATFORM": "egl"}
    for process in args.processes:
        for seed in seeds_of(process, args.seeds):
            last = args.runs / run_name(process, seed) / "checkpoints" / "last.ckpt"
            done = finished_steps(last)
            committed = committed_metrics(args, run_name(process, seed)) if done == 0 else None
            if committed is not None:
                console.print(f"[green]committed[/green] {run_name(process, seed)}: no checkpoint here; "
                              f"its metrics come from {committed}")
            elif done >= args.budget_steps:
                console.print(f"[green]skip[/green] {run_name(process, seed)}: {last} has {done} steps")
            else:
                command = train_command(args, process, seed)
                console.rule(f"[bold]train {run_name(process, seed)} ({done}/{args.budget_steps} steps done)")
                start = time.perf_counter()
                status = subprocess.run(command, env=env).returncode
                if status != 0 or finished_steps(last) < args.budget_steps:
                    raise SystemExit(f"training {run_name(process, seed)} failed (exit {status}): "
                                     f"{' '.join(command)}")
                console.print(f"trained {run_name(process, seed)} in {time.perf_counter() - start:.0f} s")
            checkpoints.setdefault(process, []).append(last)
    return checkpoints


def eval_args(args: argparse.Namespace) -> argparse.Namespace:
    """The evaluation suite's flags: the sizes given here, everything else the tasks' defaults."""
    return argparse.Namespace(limit_memory=args.limit_memory, limit_query=args.limit_query, pca_limit=args.pca_limit,
                              twoafc_limit=args.twoafc_limit, image_size=args.image_size)


def eval_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The evaluation sizes and data the experiment's tables quote."""
    tasks = suite.build_tasks(EVALS, eval_args(args), progress=False)
    knn, pca, twoafc = tasks["knn"], tasks["pca_r2"], tasks["twoafc"]
    return {"limit_memory": knn.memory_size, "limit_query": knn.query_size,
            "image_size": knn.image_size or "each encoder's own", "pca_data": pca.data, "pca_limit": pca.limit,
            "twoafc_data": twoafc.data, "twoafc_limit": twoafc.limit}


def eval_config_of(args: argparse.Namespace, tasks: dict | None = None) -> dict[str, dict]:
    """Every evaluation task's settings (the part of a cached result's fingerprint that must match), of
    ``tasks`` when given (else built from ``args``)."""
    tasks = tasks or suite.build_tasks(EVALS, eval_args(args), progress=False)
    return {name: {k: v for k, v in vars(task).items() if not k.startswith("_") and k != "progress"}
            for name, task in tasks.items()}


def evaluate_all(args: argparse.Namespace, encoders: dict[str, str], checkpoints: list[str],
                 console: Console) -> dict[str, dict]:
    """Metrics of every encoder (label -> spec), cached in ``<out>/evals/<label>.json`` per configuration."""
    tasks = suite.build_tasks(EVALS, eval_args(args))
    config = eval_config_of(args, tasks)
    evaluation = suite.EvaluationSuite(tasks)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = {}
    for label, spec in encoders.items():
        cache = args.out / "evals" / f"{label}.json"
        # A run whose checkpoint is not here, or a reference row, with committed metrics for these settings.
        reusable = not spec.endswith(".ckpt") or not Path(spec).exists()
        if reusable and committed_metrics(args, label) is not None:
            console.print(f"[green]committed[/green] {label}: {cache}")
            results[label] = json.loads(cache.read_text())["metrics"]
            continue
        fingerprint = {"spec": spec, "config": config,
                       "mtime": Path(spec).stat().st_mtime if spec.endswith(".ckpt") else None}
        if cache.exists():
            stored = json.loads(cache.read_text())
            if stored.get("fingerprint") == json.loads(json.dumps(fingerprint, default=str)):
                console.print(f"[green]cached[/green] {label}: {cache}")
                results[label] = stored["metrics"]
                continue
        console.rule(f"[bold]evaluate {label}")
        metrics = evaluation.evaluate(suite.make_encoder(spec, checkpoints).to(device), label, console)
        errors = {k: v for k, v in metrics.items() if k.endswith("/error")}
        if errors:
            raise SystemExit(f"evaluating {label} failed: {errors}")
        atomic_write_json(cache, {"fingerprint": fingerprint, "metrics": metrics})
        results[label] = metrics
    return results


def aggregate(per_run: dict[str, dict], groups: dict[str, list[str]]) -> dict[str, dict]:
    """``{encoder: {metric: {mean, std, n, values}}}``; std is the sample standard deviation (0 for one seed)."""
    out = {}
    for encoder, labels in groups.items():
        keys = sorted({k for label in labels for k, v in per_run[label].items() if isinstance(v, (int, float))})
        out[encoder] = {}
        for key in keys:
            values = [float(per_run[label][key]) for label in labels if key in per_run[label]]
            out[encoder][key] = {"mean": float(np.mean(values)),
                                 "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                                 "n": len(values), "values": values}
    return out


def k_of(key: str) -> int | None:
    """The k of a ``knn/<rule>/k<k>/...`` metric key (None for other keys, e.g. per-class accuracy)."""
    match = KNN_KEY.match(key)
    return int(match.group(2)) if match else None


def markdown(args: argparse.Namespace, table: dict[str, dict], seeds: dict[str, list[int]],
             eval_config: dict, setup: dict) -> str:
    title = "Procedural pre-training versus references (quick pipeline check, not a result)" if args.quick \
        else "Procedural pre-training versus references"
    lines = [f"# {title}", "",
             f"Compute budget: **{args.budget_steps} optimisation steps per run** (batch {setup['batch_size']}, "
             f"cpu profile: {setup['arch']} depth {setup['depth']}, {setup['global_crop_size']} px global crops from "
             f"{setup['image_size']} px renders), the same for every process. Seeds: " + "; ".join(f"{p} {', '.join(map(str, s))}" for p, s in seeds.items())
             + ". Where a process has several seeds a cell is mean ± sample standard deviation over them.", "",
             f"kNN: Fashion-MNIST, memory {eval_config['limit_memory']} train images, {eval_config['limit_query']} "
             f"test queries (seeded subsets), {eval_config['image_size']} px; headline rule {AUDIT_RULE} vote "
             f"(T = 0.07) at k = {AUDIT_K}, the privacy audit's k, fixed before looking at the results. "
             f"Privacy: exact audit, a memory sample is non-private when removing it flips a query's prediction. "
             f"PCA R²: {eval_config['pca_data']} ({eval_config['pca_limit'] or 'all'} images). "
             f"2AFC: {eval_config['twoafc_data']} ({eval_config['twoafc_limit']} triplets) - synthetic "
             "distortion ordering, NOT human judgments.", "",
             "## Results (this machine)", "",
             "| encoder | trained on | seeds | " + " | ".join(t for t, _, _ in SUMMARY_COLUMNS) + " |",
             "|---|---|---:|" + "---:|" * len(SUMMARY_COLUMNS)]
    for encoder, stats in table.items():
        n = max((s["n"] for s in stats.values()), default=0)
        cells = [_fmt_cell(stats.get(key), scale, key) for _, key, scale in SUMMARY_COLUMNS]
        trained = TRAINED_ON.get(encoder, "procedural" if encoder in PROCESSES else "reference (not trained here)")
        lines.append(f"| {encoder} | {trained} | {n} | " + " | ".join(cells) + " |")
    lines += ["", *goal_lines(table)]
    ks = sorted({k_of(key) for stats in table.values() for key in stats if k_of(key) is not None})
    lines += ["", "## kNN top-1 % for every voting rule and k", "",
              "| encoder | rule | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|---|" + "---:|" * len(ks)]
    for encoder, stats in table.items():
        for rule in RULES:
            cells = [_fmt_cell(stats.get(f"knn/{rule}/k{k}/top1"), 1.0, "top1") for k in ks]
            lines.append(f"| {encoder} | {rule} | " + " | ".join(cells) + " |")
    lines += ["", "## The paper's published figures (for comparison only)", "",
              "GPU scale: ViT-S trained on 1.3M procedural images for 100 epochs, evaluated on ImageNet-1K, "
              "Flowers, COCO and NIGHTS - other models, budgets and data sets than the table above "
              "(Rodríguez-Muñoz et al. 2025, Tables 1-2, section 6; REFERENCE.md sections 3-6). Our "
              "`efficientnet_lite0` row stands in for the paper's ImageNet-trained ViT-S.", "",
              "| ours | paper row | " + " | ".join(PAPER_COLUMNS) + " |", "|---|---|" + "---:|" * len(PAPER_COLUMNS)]
    for encoder in table:
        label = PAPER_LABELS.get(encoder)
        if label:
            cells = ["-" if v is None else str(v) for v in PAPER[label]]
            lines.append(f"| {encoder} | {label} | " + " | ".join(cells) + " |")
    lines += ["", "![kNN accuracy versus k](knn_vs_k.png)", "",
              "![accuracy versus non-private fraction](privacy.png)", ""]
    return "\n".join(lines)


def goal_lines(table: dict[str, dict]) -> list[str]:
    """The issue's goal, computed: the best procedural row against random init (+10 points wanted) and
    against the out-of-domain real-photo row at equal compute (within 10 % relative wanted)."""
    def mean(row: str) -> float | None:
        stat = table.get(row, {}).get(HEADLINE_KEY)
        return None if stat is None else stat["mean"]

    procedural = {row: mean(row) for row in table if (row in PROCESSES or row in ABLATIONS) and mean(row) is not None}
    if not procedural or mean("random_vit") is None:
        return []
    best = max(procedural, key=procedural.get)
    lines = ["## Goal (headline kNN, equal compute)", "",
             f"- Best procedural row: **{best}** {procedural[best]:.2f}; random init {mean('random_vit'):.2f}: "
             f"**{procedural[best] - mean('random_vit'):+.2f} points** (goal: at least +10)."]
    if mean("photos") is not None:
        gap = (mean("photos") - procedural[best]) / mean("photos") * 100
        lines.append(f"- Real photographs (out of domain) {mean('photos'):.2f}: the best procedural row is "
                     f"**{gap:.1f} % below** it, relative (goal: within 10 %); photographs over random init "
                     f"{mean('photos') - mean('random_vit'):+.2f} points.")
    if mean("fashion_mnist") is not None:
        lines.append(f"- In-domain real images (Fashion-MNIST train) {mean('fashion_mnist'):.2f}: "
                     f"{mean('fashion_mnist') - mean('random_vit'):+.2f} points over random init.")
    return lines + [""]


def _fmt_cell(stat: dict | None, scale: float, key: str) -> str:
    if not stat or not math.isfinite(stat["mean"]):
        return "-"
    digits = 0 if key.endswith("count") else 3 if key.startswith("twoafc") else 2
    text = f"{scale * stat['mean']:.{digits}f}"
    return text + (f" ± {scale * stat['std']:.{digits}f}" if stat["n"] > 1 else "")


def plot_knn_vs_k(table: dict[str, dict], path: Path) -> None:
    """One panel per voting rule: top-1 versus k, a line per encoder (error bars: std over seeds)."""
    fig, axes = plt.subplots(1, len(RULES), figsize=(3.4 * len(RULES), 3.4), sharey=True)
    for ax, rule in zip(np.atleast_1d(axes), RULES, strict=True):
        for encoder, stats in table.items():
            points = sorted((int(k.split("/")[2][1:]), s) for k, s in stats.items()
                            if k.startswith(f"knn/{rule}/") and k.endswith("/top1"))
            if points:
                ks, s = zip(*points, strict=True)
                ax.errorbar(ks, [x["mean"] for x in s], yerr=[x["std"] for x in s], marker="o", capsize=2,
                            label=encoder)
        ax.set_xscale("log")
        ax.set_title(rule)
        ax.set_xlabel("k")
    np.atleast_1d(axes)[0].set_ylabel("Fashion-MNIST kNN top-1 %")
    np.atleast_1d(axes)[-1].legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def plot_privacy(table: dict[str, dict], path: Path) -> None:
    """Accuracy versus the non-private fraction of the memory, one point per encoder (paper Fig. 14)."""
    fig, ax = plt.subplots(figsize=(5, 4))
    for encoder, stats in table.items():
        if HEADLINE_KEY in stats and PRIVATE_KEY in stats:
            x, y = stats[PRIVATE_KEY], stats[HEADLINE_KEY]
            ax.errorbar(100 * x["mean"], y["mean"], xerr=100 * x["std"], yerr=y["std"], marker="o", capsize=2,
                        linestyle="none", label=encoder)  # a legend, not annotations: close points overlap
    ax.set_xlabel(f"non-private memory samples % ({AUDIT_RULE} vote, k = {AUDIT_K})")
    ax.set_ylabel(f"kNN top-1 % ({AUDIT_RULE}, k = {AUDIT_K})")
    ax.set_title("Accuracy versus privacy (Fashion-MNIST)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    console = Console()
    start = time.perf_counter()
    checkpoints = train_all(args, console)
    encoders: dict[str, str] = {}
    groups: dict[str, list[str]] = {}
    for process, paths in checkpoints.items():
        for seed, path in zip(seeds_of(process, args.seeds), paths, strict=True):
            encoders[run_name(process, seed)] = str(path)
            groups.setdefault(process, []).append(run_name(process, seed))
    for reference in REFERENCE_ENCODERS:
        encoders[reference] = reference
        groups[reference] = [reference]
    # Random-init twins need an architecture from a checkpoint on this machine.
    all_checkpoints = [p for paths in checkpoints.values() for p in map(str, paths) if Path(p).exists()]
    per_run = evaluate_all(args, encoders, all_checkpoints, console)
    table = aggregate(per_run, groups)
    seeds = {p: seeds_of(p, args.seeds) for p in args.processes}
    eval_config = eval_settings(args)
    setup = training_setup(args)
    result = {"config": {"budget_steps": args.budget_steps, "training": setup, "seeds": seeds,
                         "quick": args.quick, "train_overrides": train_command(args, "<process>", 0)[3:],
                         "eval": eval_config},
              "per_run": per_run, "table": table,
              "paper": {"columns": list(PAPER_COLUMNS), "rows": PAPER, "ours_to_paper": PAPER_LABELS},
              "seconds": round(time.perf_counter() - start, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "experiment.json", result)
    atomic_write_text(args.out / "experiment.md", markdown(args, table, seeds, eval_config, setup))
    plot_knn_vs_k(table, args.out / "knn_vs_k.png")
    plot_privacy(table, args.out / "privacy.png")
    console.print(f"results: {args.out / 'experiment.md'}, {args.out / 'experiment.json'} "
                  f"and plots ({result['seconds']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
