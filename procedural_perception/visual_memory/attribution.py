"""Attribution: which stored samples decided a prediction, and with what share of the vote."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from procedural_perception.visual_memory.voting import (
    DEFAULT_POWER,
    DEFAULT_TEMPERATURE,
    neighbour_weights,
    rank_classes,
)


@dataclass
class Attribution:
    """One query's prediction explained by its ``k`` neighbours.

    ``neighbours``: one dict per neighbour in rank order with ``rank, id, label, similarity,
    weight, share`` (share = weight / total weight of the k votes) plus whatever metadata the
    memory adds (``class_name``, ``source``, ``dataset``). ``class_shares``: share of the vote per
    class label, largest first.
    """

    prediction: int
    rule: str
    k: int
    neighbours: list[dict[str, Any]]
    class_shares: dict[int, float] = field(default_factory=dict)

    def deciding(self) -> list[dict[str, Any]]:
        """The neighbours that voted for the predicted class."""
        return [n for n in self.neighbours if n["label"] == self.prediction]


def attribute(
    similarities: torch.Tensor,
    ids: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    rule: str,
    temperature: float = DEFAULT_TEMPERATURE,
    power: float = DEFAULT_POWER,
    sample_weights: torch.Tensor | None = None,
) -> Attribution:
    """Explain the vote of one query from its top-k ``similarities``, ``ids``, ``labels`` (``[k]``)."""
    k = labels.shape[0]
    sims, labs = similarities.view(1, k), labels.view(1, k).long()
    factor = None if sample_weights is None else sample_weights.view(1, k)
    ranking = rank_classes(sims, labs, num_classes, rule, [k], temperature, power, factor)[0]
    weights = neighbour_weights(sims, rule, temperature, power)
    if factor is not None:
        weights = weights * factor.to(weights.dtype)
    weights = weights[0]
    total = float(weights.sum())
    neighbours = [
        {"rank": r, "id": int(ids[r]), "label": int(labs[0, r]), "similarity": float(sims[0, r]),
         "weight": float(weights[r]), "share": float(weights[r]) / total}
        for r in range(k)
    ]
    scores = ranking.scores[0]
    shares = {int(c): float(scores[c]) / total for c in torch.argsort(scores, descending=True).tolist() if scores[c] > 0}
    return Attribution(int(ranking.predictions()[0]), rule, k, neighbours, shares)
