"""Which token a ViT's kNN reads: the CLS token against the mean of the patch tokens, on Fashion-MNIST.

    python -m benchmarks.readout CKPT [CKPT ...]     (QUICK=1: 300 / 100 images)

A short DINO run might leave the CLS token behind the patch tokens (DINO trains the CLS output only), so a
mean-pooled readout could be the better memory key. Rows per checkpoint and for its random-initialisation
twin: DINO-vote kNN top-1 (k = 20) with the CLS token (the baseline, what every evaluation uses), the mean
patch token, and both concatenated (each unit-normalised). Memory 5,000 training images, 1,000 test queries
(the kNN task's seeded subsets), at the checkpoint's 64 px.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from lightning_modules.encoders import build_encoder, random_twin
from procedural_perception.core.benchmark_rows import quick, row, write_rows
from procedural_perception.evaluations.embedding import labelled_subset
from procedural_perception.evaluations.knn import accuracy_metrics, search_neighbours

IMAGE_SIZE, K, RULE = 64, 20, "dino"


def tokens(encoder, spec: str, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``cls [N, D]``, ``mean patch token [N, D]``, ``labels [N]`` of a seeded Fashion-MNIST subset."""
    loader = torch.utils.data.DataLoader(labelled_subset(spec, IMAGE_SIZE, size, seed), batch_size=256)
    cls, mean, labels = [], [], []
    with torch.no_grad():
        for images, y in loader:
            t = encoder.vit.forward_features(encoder.normalise(images))
            cls.append(t[:, 0])
            mean.append(t[:, encoder.vit.num_prefix_tokens:].mean(1))
            labels.append(y)
    return torch.cat(cls), torch.cat(mean), torch.cat(labels)


def knn_top1(memory: torch.Tensor, memory_labels, queries: torch.Tensor, query_labels) -> float:
    """DINO-vote top-1 (%) at k = K, through the kNN task's own search and vote (features unit-normalised)."""
    neighbours = search_neighbours(F.normalize(memory, dim=1), memory_labels, F.normalize(queries, dim=1),
                                   query_labels, K, num_classes=10, device="cpu")
    return accuracy_metrics(neighbours, ks=[K], rules=[RULE])[f"knn/{RULE}/k{K}/top1"]


def readout_rows(name: str, encoder, sizes: tuple[int, int]) -> list[dict]:
    m_cls, m_mean, m_y = tokens(encoder, "fashion_mnist:train", sizes[0], 0)
    q_cls, q_mean, q_y = tokens(encoder, "fashion_mnist:test", sizes[1], 1)
    both = lambda a, b: torch.cat([F.normalize(a, dim=1), F.normalize(b, dim=1)], 1)  # noqa: E731
    base = knn_top1(m_cls, m_y, q_cls, q_y)
    reads = {"mean patch token": knn_top1(m_mean, m_y, q_mean, q_y),
             "CLS + mean patch token": knn_top1(both(m_cls, m_mean), m_y, both(q_cls, q_mean), q_y)}
    return [row(f"readout/{name}/{what}", value, "% kNN top-1", "CLS token", base, memory=sizes[0], queries=sizes[1])
            for what, value in reads.items()]


def main(checkpoints: list[str]) -> list[dict]:
    sizes = (300, 100) if quick() else (5000, 1000)
    rows = []
    for path in checkpoints:
        run = Path(path).parent.parent.name
        rows += readout_rows(run, build_encoder(path), sizes)
        rows += readout_rows(f"{run} random-init twin", random_twin(path).freeze(), sizes)
    write_rows("readout", rows)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
