"""Evaluate frozen encoders and print one table: ``make eval CKPT=... MEMORY=... QUERY=... EVALS=all``.

    python -m procedural_perception.cli.eval --encoder runs/x/checkpoints/last.ckpt --memory fashion_mnist:train \\
        --query fashion_mnist:test --evals all [--out runs/eval/results.json]

Rows are encoders: the ``--encoder`` specs (repeat the flag or separate with commas) followed by
the reference rows of ``--references`` (random initialisation, raw pixels, ImageNet EfficientNet-Lite0;
``--references none`` to skip). Given a DINO checkpoint, the ``random_vit`` row is a fresh random
initialisation of that checkpoint's own architecture. Columns are each evaluation's headline metric;
the JSON file holds every metric, the Markdown file beside it the table.

Every evaluation is the training callback's own ``evaluate`` (same data, same code), so a number
printed here equals the one logged during training for the same weights. Data sizes default to a
few minutes on a CPU; ``--limit-*`` / ``--*-data`` select the paper's data sets and sizes.
Under ``torchrun`` every evaluation is sharded over the processes and rank 0 prints and writes.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from callbacks.linear_probe import LinearProbe, labelled_subset
from callbacks.segmentation import PCAR2, InContextSegmentation, KnnSegmentation
from callbacks.twoafc import TwoAFC
from lightning_modules.encoders import REFERENCE_ENCODERS, Encoder, ViTEncoder, build_encoder
from procedural_perception.core.atomic import atomic_write_json, atomic_write_text
from procedural_perception.core.distributed import rank_and_world

# headline metric of each evaluation: (column title, result key)
HEADLINES = {
    "knn": [("kNN top-1 %", "knn/dino/k20/top1"), ("non-private %", "privacy/dino/k20/non_private_fraction")],
    "pca_r2": [("PCA R²", "pca_r2")],
    "in_context": [("in-context mIoU", "in_context/miou")],
    "knn_seg": [("kNN-seg mIoU", "knn_seg/miou")],
    "twoafc": [("2AFC", "twoafc/score")],
    "linear_probe": [("linear probe %", "linear_probe/top1")],
}
EVALUATIONS = tuple(HEADLINES)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m procedural_perception.cli.eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", action="append", default=[], help="checkpoint path or reference name; repeatable, "
                   "comma-separated allowed")
    p.add_argument("--references", default=",".join(REFERENCE_ENCODERS),
                   help="reference rows added after the encoders ('none' for none)")
    p.add_argument("--memory", default="fashion_mnist:train", help="labelled source for kNN memory / probe training")
    p.add_argument("--query", default="fashion_mnist:test", help="labelled source for kNN queries / probe testing")
    p.add_argument("--evals", default="all", help=f"comma-separated subset of {', '.join(EVALUATIONS)} or 'all'")
    p.add_argument("--out", default="runs/eval/results.json", help="results JSON (a .md table is written beside it)")
    p.add_argument("--limit-memory", type=_optional_int, default=400, help="seeded random N memory images ('none' = all)")
    p.add_argument("--limit-query", type=_optional_int, default=200, help="seeded random N query images ('none' = all)")
    p.add_argument("--image-size", type=int, default=224, help="encoder input for kNN, probe, 2AFC, in-context, kNN-seg")
    p.add_argument("--pca-data", default="nuclei_instances", help="PCA R^2 source (paper: coco:<root>)")
    p.add_argument("--pca-limit", type=_optional_int, default=None, help="PCA R^2 images ('none' = all)")
    p.add_argument("--in-context-data", default="nuclei", help="in-context source (paper: ade20k:<root>)")
    p.add_argument("--knn-seg-data", default="nuclei", help="kNN-seg memory images (paper: voc:<root>:train)")
    p.add_argument("--knn-seg-query", default=None, help="kNN-seg queries (default: odd items of --knn-seg-data)")
    p.add_argument("--seg-limit", type=_optional_int, default=None, help="in-context / kNN-seg images ('none' = all)")
    p.add_argument("--twoafc-data", default="distortion_2afc",
                   help="2AFC triplets: distortion_2afc (NOT human judgments) or nights:<root>[:split]")
    p.add_argument("--twoafc-limit", type=_optional_int, default=100, help="2AFC triplets ('none' = all)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    args = p.parse_args(argv)
    args.encoders = [s for group in args.encoder for s in group.split(",") if s]
    if not args.encoders:
        p.error("give at least one --encoder (a DINO .ckpt, random_vit, rgb or efficientnet_lite0)")
    args.evals = list(EVALUATIONS) if args.evals == "all" else [e for e in args.evals.split(",") if e]
    unknown = sorted(set(args.evals) - set(EVALUATIONS))
    if unknown:
        p.error(f"unknown evaluation(s) {', '.join(unknown)}; choose from {', '.join(EVALUATIONS)} or all")
    return args


def _optional_int(text: str) -> int | None:
    return None if text.lower() in ("none", "null", "all") else int(text)


def encoder_rows(specs: Sequence[str], references: str) -> list[str]:
    """The encoder specs followed by the reference rows not already given."""
    rows = list(dict.fromkeys(specs))
    extra = [] if references.lower() in ("none", "") else references.split(",")
    return rows + [r for r in extra if r not in rows]


def random_twin(checkpoint: str) -> Encoder:
    """A fresh random initialisation (seed 0) of a DINO checkpoint's architecture: the paper's
    "random init" row for that model."""
    from lightning_modules.dino import DINO

    hparams = torch.load(checkpoint, map_location="cpu", weights_only=False)["hyper_parameters"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        backbone = DINO(**hparams).teacher_backbone
    return ViTEncoder(backbone, f"random_init:{Path(checkpoint).stem}").freeze()


def make_encoder(spec: str, checkpoints: Sequence[str]) -> Encoder:
    if spec == "random_vit" and checkpoints:
        return random_twin(checkpoints[0])
    return build_encoder(spec)


def build_evaluations(args: argparse.Namespace) -> dict[str, Callable[[Encoder], dict]]:
    """One callable per requested evaluation; data are loaded on first use and shared by all rows."""
    size, batch = args.image_size, args.batch_size
    callbacks = {
        "pca_r2": PCAR2(data=args.pca_data, limit=args.pca_limit, batch_size=max(1, batch // 4)),
        "in_context": InContextSegmentation(data=args.in_context_data, limit=args.seg_limit, image_size=size,
                                            batch_size=batch),
        "knn_seg": KnnSegmentation(data=args.knn_seg_data, query=args.knn_seg_query, limit=args.seg_limit,
                                   image_size=size, batch_size=batch),
        "twoafc": TwoAFC(data=args.twoafc_data, limit=args.twoafc_limit, image_size=size, batch_size=batch),
        "linear_probe": LinearProbe(train=args.memory, test=args.query, train_limit=args.limit_memory,
                                    test_limit=args.limit_query, image_size=size, batch_size=batch),
    }
    for callback in callbacks.values():
        callback.progress = True
    out: dict[str, Callable[[Encoder], dict]] = {name: cb.evaluate for name, cb in callbacks.items()}
    cache: dict[str, object] = {}

    def knn(encoder: Encoder) -> dict:
        from procedural_perception.evaluations.knn import evaluate_knn

        if not cache:
            cache["memory"] = labelled_subset(args.memory, size, args.limit_memory)
            cache["query"] = labelled_subset(args.query, size, args.limit_query)
        return evaluate_knn(encoder, cache["memory"], cache["query"])

    out["knn"] = knn
    return {name: out[name] for name in args.evals}


def run(args: argparse.Namespace, console: Console) -> dict[str, dict]:
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    rows = encoder_rows(args.encoders, args.references)
    checkpoints = [s for s in rows if s.endswith(".ckpt")]
    evaluations = build_evaluations(args)
    results: dict[str, dict] = {}
    for spec in rows:
        console.rule(f"[bold]{spec}")
        start = time.perf_counter()
        try:
            encoder = make_encoder(spec, checkpoints).to(device)
        except (ImportError, OSError, ValueError, KeyError) as err:
            console.print(f"[red]cannot build encoder {spec}: {err}")
            results[spec] = {"error": str(err)}
            continue
        row: dict = {}
        for name, evaluate in evaluations.items():
            try:
                row.update(evaluate(encoder))
            except (ImportError, OSError, ValueError, RuntimeError) as err:
                console.print(f"[red]{name} failed for {spec}: {err}")
                row[f"{name}/error"] = str(err)
        row["seconds"] = round(time.perf_counter() - start, 1)
        results[spec] = row
    return results


def headline_columns(evals: Sequence[str]) -> list[tuple[str, str]]:
    return [column for name in evals for column in HEADLINES[name]]


def _cell(row: dict, key: str) -> str:
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if key == "seconds":
        return f"{value:.0f}"
    if key.endswith("fraction"):
        return f"{100 * value:.2f}"
    if key.endswith("top1"):
        return f"{value:.2f}"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def render(results: dict[str, dict], evals: Sequence[str]) -> tuple[Table, str]:
    """A Rich table and the same table as Markdown."""
    columns = headline_columns(evals)
    table = Table(title="Evaluation (rows: encoders)")
    table.add_column("encoder", style="bold")
    for title, _ in columns:
        table.add_column(title, justify="right")
    table.add_column("s", justify="right")
    lines = ["| encoder | " + " | ".join(t for t, _ in columns) + " | s |",
             "|---|" + "---:|" * (len(columns) + 1)]
    for spec, row in results.items():
        cells = [_cell(row, key) for _, key in columns] + [_cell(row, "seconds")]
        table.add_row(spec, *cells)
        lines.append(f"| {spec} | " + " | ".join(cells) + " |")
    return table, "\n".join(lines) + "\n"


def _init_distributed() -> None:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def main(argv: Sequence[str] | None = None) -> dict[str, dict]:
    args = parse_args(argv)
    _init_distributed()
    rank, _ = rank_and_world()
    console = Console(quiet=rank != 0)
    results = run(args, console)
    table, markdown = render(results, args.evals)
    console.print(table)
    if "twoafc" in args.evals and args.twoafc_data.startswith("distortion_2afc"):
        console.print("[dim]2AFC on distortion_2afc orders synthetic distortions of real photos; it is not "
                      "a human-judgment (NIGHTS) score.")
    if rank == 0:
        out = Path(args.out)
        config = {k: v for k, v in vars(args).items() if k != "encoder"}
        atomic_write_json(out, {"config": config, "results": results})
        atomic_write_text(out.with_suffix(".md"), markdown)
        console.print(f"results: {out} and {out.with_suffix('.md')}")
    failed = any("error" in k for row in results.values() for k in row)
    if failed:
        raise SystemExit(1)
    return results


if __name__ == "__main__":
    main()
