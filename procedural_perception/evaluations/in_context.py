"""In-context segmentation (paper Fig. 10, ADE20K): given a prompt image and the prompt's mask of a
concept, find that concept in a new query image by patch-feature similarity alone.

Pairs: for every image and every concept covering at least ``min_area`` of its mask, the query is
that image and the prompt is the next image (cyclically, in dataset order) that also shows the
concept. Prediction per pair, at the patch grid, then bilinearly upsampled to the mask resolution:

- ``prototype`` (default): mean of the prompt's foreground patch features versus the mean of its
  background patches; a query patch is foreground when it is closer (cosine) to the foreground one.
- ``knn``: each query patch votes with its ``k`` nearest prompt patches (the kNN segmentation rule
  with the prompt as a two-class memory).

Score: per concept, foreground IoU accumulated over its pairs; ``in_context/miou`` is the mean over
concepts. Features are gathered on every rank (``embed_patches``), so DDP equals one process.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from lightning_modules.encoders import Encoder
from procedural_perception.datasets.segmentation import IGNORE
from procedural_perception.evaluations.embedding import embed_patches, label_fractions
from procedural_perception.evaluations.iou import confusion
from procedural_perception.evaluations.knn_segmentation import DEFAULT_K, memory_patches, patch_scores
from procedural_perception.evaluations.pca_r2 import PAPER_MASK_SIZE, PCAR2

METHODS = ("prototype", "knn")
MIN_AREA = 0.01  # a concept must cover 1% of an image to serve as prompt or query
FOREGROUND = 0.5  # a prompt patch is foreground when the concept covers at least half of it


def concept_pairs(masks: torch.Tensor, loaded: torch.Tensor, n_classes: int, min_area: float = MIN_AREA,
                  max_pairs: int | None = None) -> list[tuple[int, int, int]]:
    """``(prompt index, query index, concept)`` triples, deterministic in dataset order."""
    if len(masks) == 0:
        return []
    counts = torch.stack([torch.bincount(m[m != IGNORE].flatten(), minlength=n_classes)[:n_classes] for m in masks])
    present = (counts.double() / masks[0].numel() >= min_area) & loaded[:, None]
    pairs = []
    for query in range(len(masks)):
        for concept in range(1, n_classes):  # 0 = background is not a concept
            if not present[query, concept]:
                continue
            holders = present[:, concept].nonzero().flatten().tolist()
            later = [i for i in holders if i > query] + [i for i in holders if i < query]
            if later:
                pairs.append((later[0], query, concept))
                if max_pairs is not None and len(pairs) >= max_pairs:
                    return pairs
    return pairs


def prototype_scores(prompt: torch.Tensor, foreground: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """``prompt [D, h, w]`` with foreground share ``[h, w]``, ``query [D, h', w']`` -> score
    ``[h', w']`` = cos(query, foreground mean) - cos(query, background mean); > 0 means foreground."""
    vectors = prompt.flatten(1).T
    fg = foreground.flatten() >= FOREGROUND
    if not fg.any():  # a concept smaller than every patch: take the patch it covers most
        fg = foreground.flatten() == foreground.max()
    fg_proto = F.normalize(vectors[fg].mean(0), dim=0)
    q = query.flatten(1).T
    if fg.all():
        return torch.ones(query.shape[1:])
    bg_proto = F.normalize(vectors[~fg].mean(0), dim=0)
    return (q @ fg_proto - q @ bg_proto).reshape(query.shape[1:])


def knn_scores(prompt: torch.Tensor, prompt_mask: torch.Tensor, query: torch.Tensor, k: int = DEFAULT_K) -> torch.Tensor:
    """Score ``[h, w]`` = foreground minus background votes of the ``k`` nearest prompt patches."""
    memory, labels = memory_patches(prompt[None], prompt_mask[None], torch.ones(1, dtype=torch.bool), 2, purity=0.0)
    votes = patch_scores(query.flatten(1).T, memory, labels, 2, k)
    return (votes[:, 1] - votes[:, 0]).reshape(query.shape[1:])


def predict_pairs(features: torch.Tensor, masks: torch.Tensor, pairs: list[tuple[int, int, int]],
                  method: str = "prototype", k: int = DEFAULT_K) -> list[torch.Tensor]:
    """Predicted binary query masks ``[M, M]`` (long) for each ``(prompt, query, concept)``."""
    if method not in METHODS:
        raise ValueError(f"Unknown in-context method {method!r}; choose one of {', '.join(METHODS)}.")
    _, _, h, w = features.shape
    size = masks.shape[-2:]
    out = []
    for prompt, query, concept in pairs:
        binary = torch.where(masks[prompt] == IGNORE, IGNORE, (masks[prompt] == concept).long())
        if method == "prototype":
            share = label_fractions(binary[None], 2, (h, w))[0, 1]
            score = prototype_scores(features[prompt], share, features[query])
        else:
            score = knn_scores(features[prompt], binary, features[query], k)
        score = F.interpolate(score[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]
        out.append((score > 0).long())
    return out


def evaluate_in_context(encoder: torch.nn.Module, dataset: Dataset, method: str = "prototype", k: int = DEFAULT_K,
                        min_area: float = MIN_AREA, max_pairs: int | None = None, batch_size: int = 16,
                        device: torch.device | str | None = None, progress: bool = True) -> dict[str, float]:
    """Mean foreground IoU over concepts of in-context segmentation on ``dataset`` (``(image, mask)``
    items). Returns ``{"in_context/miou", "in_context/pairs", "in_context/concepts"}``."""
    n_classes = len(dataset.classes)
    features, masks, loaded = embed_patches(encoder, dataset, batch_size, device, progress, "in-context")
    pairs = concept_pairs(masks, loaded, n_classes, min_area, max_pairs)
    if not pairs:
        raise ValueError("In-context segmentation needs at least two images showing the same concept "
                         f"(covering >= {min_area:.0%} of each); none found in {len(dataset)} images.")
    predictions = predict_pairs(features, masks, pairs, method, k)
    inter = torch.zeros(n_classes, dtype=torch.float64)
    union = torch.zeros(n_classes, dtype=torch.float64)
    for (_, query, concept), pred in zip(pairs, predictions, strict=True):
        truth = torch.where(masks[query] == IGNORE, IGNORE, (masks[query] == concept).long())
        matrix = confusion(pred, truth, 2)
        inter[concept] += matrix[1, 1]
        union[concept] += matrix[1, 1] + matrix[0, 1] + matrix[1, 0]
    seen = union > 0
    return {"in_context/miou": float((inter[seen] / union[seen]).mean()), "in_context/pairs": len(pairs),
            "in_context/concepts": int(seen.sum())}


class InContextSegmentation(PCAR2):
    """In-context segmentation mIoU (``in_context/miou``). ``data``: segmentation spec (the paper:
    ADE20K, ``ade20k:<root>``); ``limit``: images; ``image_size``: encoder input (None: its own);
    ``method``: ``prototype`` or ``knn``; ``max_pairs``: cap on (prompt, query) pairs; ``min_area``:
    smallest concept share of an image; ``k``: neighbours for ``knn``."""

    name = "in_context"
    HEADLINES = (("in-context mIoU", "in_context/miou"),)
    SHARED_FLAGS = {"seg_limit": "limit", "image_size": "image_size", "batch_size": "batch_size"}

    def __init__(self, data: str = "nuclei", limit: int | None = None, image_size: int | None = None,
                 mask_size: int = PAPER_MASK_SIZE, batch_size: int = 16, method: str = "prototype",
                 max_pairs: int | None = 200, min_area: float = MIN_AREA, k: int = DEFAULT_K) -> None:
        super().__init__(data, limit, image_size, mask_size, batch_size)
        self.method, self.max_pairs, self.min_area, self.k = method, max_pairs, min_area, k

    def evaluate(self, encoder: Encoder) -> dict[str, float]:
        return evaluate_in_context(encoder, self.dataset(self.size_for(encoder, self.image_size)), self.method, self.k,
                                   self.min_area, self.max_pairs, self.batch_size, progress=self.progress)

    @classmethod
    def add_arguments(cls, parser) -> None:
        parser.add_argument("--in-context-data", default=None,
                            help="in-context source (default nuclei; paper: ade20k:<root>)")

    @classmethod
    def own_flags(cls) -> dict[str, str]:
        return {"in_context_data": "data"}
