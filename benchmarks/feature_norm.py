"""Feature centring / whitening with procedural statistics, measured on Fashion-MNIST kNN:
``make bench-feature-norm CKPT=runs/<run>/checkpoints/last.ckpt`` (QUICK=1: a small check).

    python -m benchmarks.feature_norm [--checkpoint a.ckpt [b.ckpt ...]] [--encoders efficientnet_lite0]

Rows: for each encoder (the checkpoints, their random-initialisation twin, EfficientNet-Lite0) and each
mode (``centre``, ``whiten``): DINO-vote kNN top-1 at k = 20, the memory's mean pairwise cosine and
its effective rank, each against the same encoder's raw features measured in the same run (the
baseline). Memory 5,000 Fashion-MNIST training images, 1,000 test queries (seeded subsets, the kNN
task's own), 64 px, statistics from 2,048 procedural images of the encoder's training process
(``procedural_perception/evaluations/feature_norm.py``; no real image enters them).

The features of each encoder are computed once and every mode is applied to them with
:meth:`FeatureNormEncoder.transform`, the function the ``--feature-norm`` evaluation runs inside the
encoder, so the numbers equal ``make eval ... ARGS="--feature-norm whiten"`` at these settings.
The rows also go to ``benchmarks/results/<name>.md`` as one table (``--name``, default feature_norm).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from lightning_modules.encoders import build_encoder, random_twin
from procedural_perception.core.atomic import atomic_write_text
from procedural_perception.core.benchmark_rows import RESULTS_DIR, quick, row, write_rows
from procedural_perception.core.checkpoints import read_checkpoint
from procedural_perception.core.run_config import run_dir_of
from procedural_perception.evaluations.embedding import embed_dataset
from procedural_perception.evaluations.embedding_geometry import anisotropy_metrics
from procedural_perception.evaluations.feature_norm import MODES, FeatureNormEncoder, feature_statistics
from procedural_perception.evaluations.knn import KNNClassification, accuracy_metrics, search_neighbours

IMAGE_SIZE = 64
K, RULE = 20, "dino"
FULL = {"memory_size": 5000, "query_size": 1000, "samples": 2048}
SMALL = {"memory_size": 300, "query_size": 100, "samples": 256}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.feature_norm", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", nargs="+", default=[], metavar="CKPT",
                   help="DINO checkpoints: a row each (named by run), and one random twin per architecture")
    p.add_argument("--encoders", default="efficientnet_lite0", help="reference rows, comma-separated ('' for none)")
    p.add_argument("--memory-size", type=int, default=None, help=f"memory images (default {FULL['memory_size']})")
    p.add_argument("--query-size", type=int, default=None, help=f"query images (default {FULL['query_size']})")
    p.add_argument("--samples", type=int, default=None, help=f"procedural images (default {FULL['samples']})")
    p.add_argument("--name", default="feature_norm",
                   help="results name: benchmarks/results/<name>.json and .md (default feature_norm)")
    return p.parse_args(argv)


def knn_row(memory: torch.Tensor, memory_labels: torch.Tensor, query: torch.Tensor,
            query_labels: torch.Tensor) -> dict[str, float]:
    """Top-1 (DINO vote, k = 20) and the memory's anisotropy, for raw or transformed features."""
    memory, query = F.normalize(memory.float(), dim=1), F.normalize(query.float(), dim=1)
    neighbours = search_neighbours(memory, memory_labels, query, query_labels, K, num_classes=10)
    top1 = accuracy_metrics(neighbours, (K,), (RULE,))[f"knn/{RULE}/k{K}/top1"]
    return {"top1": top1, **anisotropy_metrics(memory, prefix="memory")}


def measure(label: str, encoder, task: KNNClassification, samples: int) -> dict[str, dict[str, float]]:
    """``{mode: metrics}`` for raw features and every mode of one encoder."""
    memory_set, query_set = task.datasets(IMAGE_SIZE)
    memory, memory_labels = embed_dataset(encoder, memory_set, normalize=False)
    query, query_labels = embed_dataset(encoder, query_set, normalize=False)
    out = {"raw": knn_row(memory, memory_labels, query, query_labels)}
    statistics = feature_statistics(encoder, IMAGE_SIZE, samples)
    for mode in MODES:
        wrapped = FeatureNormEncoder(encoder, mode, statistics)
        out[mode] = knn_row(wrapped.transform(memory), memory_labels, wrapped.transform(query), query_labels)
        out[mode]["shrinkage"] = statistics.shrinkage
    print(label, statistics.process, out, flush=True)
    return out


ARCHITECTURE_KEYS = ("arch", "depth", "patch_size", "embed_dim", "num_heads", "global_crop_size")


def encoders(args: argparse.Namespace) -> dict[str, object]:
    """The checkpoints (labelled by run; one alone keeps the label "checkpoint"), a random twin for each
    distinct architecture (twins of one architecture are the same network: ``random_twin`` seeds them alike),
    then the reference encoders."""
    out, twins = {}, {}  # twins: architecture -> (first run of it, its twin)
    for checkpoint in args.checkpoint:
        label = "checkpoint" if len(args.checkpoint) == 1 else run_dir_of(checkpoint).name
        out[label] = build_encoder(checkpoint)
        hparams = read_checkpoint(checkpoint)["hyper_parameters"]
        architecture = tuple(hparams.get(key) for key in ARCHITECTURE_KEYS)
        if architecture not in twins:
            twins[architecture] = label, random_twin(checkpoint)
    for label, twin in twins.values():  # several architectures: each twin says whose network it is
        out["random init twin" + (f" of {label}" if len(twins) > 1 else "")] = twin
    for spec in [s for s in args.encoders.split(",") if s]:
        out[spec] = build_encoder(spec)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    sizes = dict(SMALL if quick() else FULL)
    sizes.update({k: v for k, v in (("memory_size", args.memory_size), ("query_size", args.query_size),
                                    ("samples", args.samples)) if v is not None})
    task = KNNClassification(memory_size=sizes["memory_size"], query_size=sizes["query_size"], image_size=IMAGE_SIZE)
    table = {label: measure(label, encoder, task, sizes["samples"]) for label, encoder in encoders(args).items()}
    rows, lines = [], ["| encoder | features | kNN top-1 % (dino, k=20) | memory mean cosine | memory effective rank |",
                       "|---|---|---:|---:|---:|"]
    for label, modes in table.items():
        for mode, metrics in modes.items():
            lines.append(f"| {label} | {mode} | {metrics['top1']:.2f} | {metrics['memory/mean_cosine']:.3f} | "
                         f"{metrics['memory/effective_rank']:.1f} |")
            if mode == "raw":
                continue
            base = modes["raw"]
            rows += [row(f"feature_norm/{label}/{mode}/knn_top1", metrics["top1"], "%", f"{label} raw", base["top1"]),
                     row(f"feature_norm/{label}/{mode}/mean_cosine", metrics["memory/mean_cosine"], "cosine",
                         f"{label} raw", base["memory/mean_cosine"], higher_is_better=False),
                     row(f"feature_norm/{label}/{mode}/effective_rank", metrics["memory/effective_rank"], "rank",
                         f"{label} raw", base["memory/effective_rank"])]
    write_rows(args.name, rows)
    settings = (f"Fashion-MNIST, memory {sizes['memory_size']} / queries {sizes['query_size']}, {IMAGE_SIZE} px; "
                f"statistics from {sizes['samples']} procedural images.")
    atomic_write_text(RESULTS_DIR / f"{args.name}.md", settings + "\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
