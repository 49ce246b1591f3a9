"""Memory pruning (Geirhos et al.): find samples that keep misleading other samples and act on them.

A sample's *wrong count* is how often it appears among the top-k neighbours of a sample of a
different class. The memory itself serves as the queries by default (each sample's own entry is
excluded), so no held-out data is needed.

* Hard pruning removes samples with a wrong count >= ``threshold``. The paper's 128 was set on
  ImageNet-1k with a DINOv2 ViT-L/14 (26,257 samples removed, +0.1 points); a sample appears on
  average ``k`` times in total when the memory queries itself, so rescale the threshold with
  ``scale`` for another k or data set (e.g. ``scale = k / k_used_for_128``).
* Soft pruning keeps every sample but multiplies its vote by ``1.75 / (1 + wrong_count)``
  (meant for the rank rule: rank weight x that factor).
"""

from __future__ import annotations

import numpy as np
import torch

from procedural_perception.visual_memory.memory import VisualMemory

HARD_THRESHOLD = 128  # wrong-class appearances (ImageNet-1k, paper setting)
SOFT_NUMERATOR = 1.75  # soft-pruning factor numerator: 1.75 / (1 + wrong_count)


def wrong_counts(
    memory: VisualMemory,
    k: int,
    queries: torch.Tensor | None = None,
    query_labels: torch.Tensor | None = None,
    batch: int = 4096,
) -> np.ndarray:
    """Wrong-class neighbour count per id: a dense ``[max_id + 1]`` int64 array (0 for absent ids).

    ``queries [Q, D]`` with ``query_labels [Q]``; default: the memory's own vectors and labels,
    each query skipping its own entry.
    """
    self_query = queries is None
    ids = memory.ids
    if self_query:
        queries, query_labels = torch.from_numpy(memory.index.vectors(ids)), memory.labels_of(torch.from_numpy(ids))
    counts = np.zeros(int(ids.max(initial=-1)) + 1, dtype=np.int64)
    width = k + 1 if self_query else k
    for start in range(0, len(queries), batch):
        _, nbr = memory.query(queries[start : start + batch], min(width, len(memory)))
        if self_query:  # drop each query's own entry (wherever ties put it), keep k others
            own = torch.from_numpy(ids[start : start + batch])[:, None]
            keep = nbr != own
            nbr = torch.stack([row[mask][:k] for row, mask in zip(nbr, keep, strict=True)])
        wrong = memory.labels_of(nbr) != torch.as_tensor(query_labels[start : start + batch])[:, None]
        np.add.at(counts, nbr[wrong].numpy(), 1)
    return counts


def hard_prune(
    memory: VisualMemory,
    counts: np.ndarray,
    threshold: float = HARD_THRESHOLD,
    scale: float = 1.0,
    reason: str | None = None,
) -> np.ndarray:
    """Remove samples whose wrong count is >= ``threshold * scale``; returns the removed ids."""
    limit = threshold * scale
    ids = memory.ids
    drop = ids[counts[ids] >= limit]
    if len(drop):
        memory.remove(drop, reason or f"hard pruning: wrong-class neighbour >= {limit:g} times")
    return drop


def soft_prune_weights(counts: np.ndarray) -> np.ndarray:
    """Per-id vote factor ``1.75 / (1 + wrong_count)``, for ``VisualMemory.classify(sample_weights=...)``."""
    return SOFT_NUMERATOR / (1.0 + counts.astype(np.float64))
