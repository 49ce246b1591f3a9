"""kNN classification of frozen embeddings with a labelled memory, plus the exact privacy audit.

One search for the top-K neighbours (K = the largest k needed, or the audit's k + 1) serves every
voting rule, every k and the audit. Under DDP each rank embeds a shard (``embed_dataset`` gathers
them), then every rank runs the same search on the same gathered features, so the numbers equal
one process's on every rank.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from procedural_perception.evaluations.embedding import embed_dataset
from procedural_perception.visual_memory.index import FlatIndex
from procedural_perception.visual_memory.privacy import AuditReport, exact_audit
from procedural_perception.visual_memory.voting import (
    DEFAULT_TEMPERATURE,
    PAPER_K,
    PAPER_RULE,
    RULES,
    accuracy_for_ks,
)

# The paper's (DINO eval_knn) k values; reporting all of them avoids picking the best k on test data.
DEFAULT_KS = (10, 20, 100, 200)
# Paper section 6: privacy at k = 20 with the DINO vote.
AUDIT_K = PAPER_K
AUDIT_RULE = PAPER_RULE


@dataclass
class Neighbours:
    """Top-``K`` neighbours of ``Q`` queries in a memory of ``memory_size`` samples.

    ``similarities [Q, K]`` cosine, ``ids [Q, K]`` positions in the memory data set, ``labels [Q, K]``
    their labels, ``query_labels [Q]``; order: similarity descending, position ascending.
    """

    similarities: torch.Tensor
    ids: torch.Tensor
    labels: torch.Tensor
    query_labels: torch.Tensor
    num_classes: int
    memory_size: int


def search_neighbours(
    memory_features: torch.Tensor,
    memory_labels: torch.Tensor,
    query_features: torch.Tensor,
    query_labels: torch.Tensor,
    k: int,
    num_classes: int | None = None,
    device: str = "auto",
) -> Neighbours:
    """Exact top-``k`` search of ``query_features [Q, D]`` in ``memory_features [N, D]`` (L2-normalised)."""
    if k > len(memory_labels):
        raise ValueError(f"k = {k} needs a memory of at least {k} samples, this one has {len(memory_labels)}; "
                         "lower ks / audit_k or use a larger memory.")
    index = FlatIndex(memory_features.shape[1], device)
    index.add(memory_features.float().numpy(), torch.arange(len(memory_labels)).numpy())
    sims, ids = index.search(query_features.float().numpy(), k)
    ids_t = torch.from_numpy(ids)
    classes = num_classes or int(max(memory_labels.max(), query_labels.max())) + 1
    return Neighbours(torch.from_numpy(sims), ids_t, memory_labels[ids_t], query_labels, classes, len(memory_labels))


def accuracy_metrics(
    neighbours: Neighbours,
    ks: Sequence[int] = DEFAULT_KS,
    rules: Sequence[str] = RULES,
    temperature: float = DEFAULT_TEMPERATURE,
    prefix: str = "knn",
) -> dict[str, float]:
    """``{prefix}/{rule}/k{k}/top1`` and ``.../top5`` (percent) for every rule and k."""
    out = {}
    for rule in rules:
        accuracy = accuracy_for_ks(neighbours.similarities, neighbours.labels, neighbours.query_labels,
                                   neighbours.num_classes, rule, ks, temperature)
        for k, (top1, top5) in accuracy.items():
            out[f"{prefix}/{rule}/k{k}/top1"] = top1
            out[f"{prefix}/{rule}/k{k}/top5"] = top5
    return out


def privacy_audit(neighbours: Neighbours, k: int = AUDIT_K, rule: str = AUDIT_RULE,
                  temperature: float = DEFAULT_TEMPERATURE) -> AuditReport:
    """Exact audit (memory samples whose removal flips a query) from neighbours with ``K >= k + 1``."""
    width = min(k + 1, neighbours.memory_size)
    if neighbours.ids.shape[1] < width:
        raise ValueError(f"the audit at k = {k} needs {width} neighbours per query, got {neighbours.ids.shape[1]}")
    return exact_audit(neighbours.similarities[:, :width], neighbours.ids[:, :width], neighbours.labels[:, :width],
                       neighbours.num_classes, k, rule, neighbours.memory_size, temperature)


def neighbours_needed(ks: Sequence[int], audit_k: int | None, memory_size: int) -> int:
    return min(max([*ks, (audit_k + 1) if audit_k else 0]), memory_size)


def evaluate_knn(
    encoder: torch.nn.Module,
    memory: Dataset,
    query: Dataset,
    ks: Sequence[int] = DEFAULT_KS,
    rules: Sequence[str] = RULES,
    temperature: float = DEFAULT_TEMPERATURE,
    audit_k: int | None = AUDIT_K,
    audit_rule: str = AUDIT_RULE,
    batch_size: int = 256,
    num_workers: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Embed ``memory`` and ``query`` (``(image, label)`` data sets) with ``encoder`` and return flat
    metrics: ``knn/{rule}/k{k}/top1|top5`` (percent) and, unless ``audit_k`` is None,
    ``privacy/{audit_rule}/k{audit_k}/non_private_count|non_private_fraction``."""
    memory_features, memory_labels = embed_dataset(encoder, memory, batch_size, num_workers, device, progress=progress)
    query_features, query_labels = embed_dataset(encoder, query, batch_size, num_workers, device, progress=progress)
    num_classes = max(len(getattr(memory, "classes", [])), int(memory_labels.max()) + 1, int(query_labels.max()) + 1)
    neighbours = search_neighbours(memory_features, memory_labels, query_features, query_labels,
                                   neighbours_needed(ks, audit_k, len(memory_labels)), num_classes)
    metrics = accuracy_metrics(neighbours, ks, rules, temperature)
    if audit_k:
        metrics.update(privacy_audit(neighbours, audit_k, audit_rule, temperature).metrics())
    return metrics
