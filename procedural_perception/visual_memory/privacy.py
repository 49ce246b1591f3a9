"""Exact privacy audit: which memory samples change at least one query's prediction when removed.

A memory sample is *non-private* (paper section 6) when deleting it from the memory changes the
prediction of at least one query, for a given voting rule and k. Deleting a sample outside a
query's top-k leaves that query's neighbour list, hence its vote, unchanged. Deleting the
neighbour at rank ``j < k`` turns the list into ranks ``0..k`` without ``j``: the (k+1)-th
neighbour moves in and every later neighbour moves up a rank (rank weights and the softmax
rule's min-max normalisation are recomputed on the new list). So each query's top-(k+1) decide
the audit exactly: ``k`` re-votes per query instead of one full re-evaluation per memory sample.

Neighbour lists are ordered by (similarity descending, id ascending) (see
:mod:`procedural_perception.visual_memory.index`); that total order is what makes the shortcut equal brute-force
leave-one-out, ties included.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from procedural_perception.visual_memory.voting import DEFAULT_POWER, DEFAULT_TEMPERATURE, predict


@dataclass
class AuditReport:
    """Result of a privacy audit of a memory of ``memory_size`` samples against ``num_queries``.

    ``non_private_ids [M]``: sorted ids of the non-private samples; ``influence [M]``: for each,
    the number of queries whose prediction its removal changes.
    """

    rule: str
    k: int
    num_queries: int
    memory_size: int
    non_private_ids: np.ndarray
    influence: np.ndarray

    @property
    def count(self) -> int:
        return len(self.non_private_ids)

    @property
    def fraction(self) -> float:
        return self.count / self.memory_size if self.memory_size else 0.0

    def metrics(self, prefix: str = "privacy") -> dict[str, float]:
        name = f"{prefix}/{self.rule}/k{self.k}"
        return {f"{name}/non_private_count": float(self.count), f"{name}/non_private_fraction": self.fraction}


def removal_changes(
    similarities: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    k: int,
    rule: str,
    temperature: float = DEFAULT_TEMPERATURE,
    power: float = DEFAULT_POWER,
    sample_weights: torch.Tensor | None = None,
    chunk: int = 2048,
) -> torch.Tensor:
    """``[Q, k]`` bool: does removing the neighbour at rank ``j`` change query ``q``'s prediction?

    ``similarities``, ``labels`` (and ``sample_weights``): ``[Q, k+1]`` top-(k+1) neighbours in rank
    order; ``[Q, k]`` is accepted when the memory holds exactly ``k`` samples (a removal then
    leaves ``k - 1`` neighbours).
    """
    width = min(similarities.shape[1], k + 1)
    if width < 2 or width < k:
        raise ValueError(f"the audit needs the top-{k + 1} neighbours (or all of a memory of {k}), got {similarities.shape[1]}")
    kept = width - 1  # neighbours left after one removal
    # drop[j] lists the ranks that remain, in order, when rank j is removed.
    drop = torch.stack([torch.cat([torch.arange(j), torch.arange(j + 1, width)]) for j in range(k)])
    out = torch.empty(labels.shape[0], k, dtype=torch.bool)
    for start in range(0, labels.shape[0], chunk):
        part = slice(start, start + chunk)
        sims, labs = similarities[part, :width], labels[part, :width]
        weights = None if sample_weights is None else sample_weights[part, :width]
        before = predict(sims, labs, num_classes, rule, k, temperature, power, None if weights is None else weights)
        q = labs.shape[0]
        after = predict(
            sims[:, drop].reshape(q * k, kept),
            labs[:, drop].reshape(q * k, kept),
            num_classes, rule, kept, temperature, power,
            None if weights is None else weights[:, drop].reshape(q * k, kept),
        ).view(q, k)
        out[part] = after != before[:, None]
    return out


def exact_audit(
    similarities: torch.Tensor,
    ids: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    k: int,
    rule: str,
    memory_size: int,
    temperature: float = DEFAULT_TEMPERATURE,
    power: float = DEFAULT_POWER,
    sample_weights: torch.Tensor | None = None,
) -> AuditReport:
    """Audit from each query's top-(k+1) neighbours ``similarities``, ``ids``, ``labels`` ``[Q, k+1]``."""
    changed = removal_changes(similarities, labels, num_classes, k, rule, temperature, power, sample_weights)
    flipped = ids[:, :k][changed].numpy()
    found, counts = np.unique(flipped, return_counts=True)
    return AuditReport(rule, k, int(labels.shape[0]), int(memory_size), found.astype(np.int64), counts)
