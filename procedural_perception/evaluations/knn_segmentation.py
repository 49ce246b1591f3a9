"""kNN segmentation (paper Fig. 11, Pascal VOC): label each query patch by a vote of its nearest
labelled patches from reference images, then score the upsampled label map by mIoU.

Memory: every patch of every reference image whose cell is at least ``PURITY`` covered by one
label (background included, ignored pixels never) carries that label. A query patch's class scores
come from its ``k`` nearest memory patches (cosine similarity) through the visual memory's voting
rule; the score maps are bilinearly upsampled to the mask resolution before the arg-max, so
boundaries fall between patch centres instead of on the patch grid. The paper finds procedural
models weak here: their features are too local.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from lightning_modules.encoders import Encoder
from procedural_perception.datasets.segmentation import SegmentationImages, load_segmentation
from procedural_perception.evaluations.embedding import embed_patches, label_fractions
from procedural_perception.evaluations.iou import confusion, mean_iou
from procedural_perception.evaluations.task import EvaluationTask
from procedural_perception.visual_memory.voting import DEFAULT_TEMPERATURE, rank_classes

PURITY = 0.5  # a memory patch needs a majority label (more than half its cell) to be labelled
DEFAULT_K = 10  # neighbours per query patch; small because neighbouring patches are near-duplicates
QUERY_CHUNK = 4096  # query patches per similarity matrix, bounding memory to chunk x memory size
MASK_CHUNK = 32  # masks turned into per-patch label shares at once (bounds the one-hot temporaries)


def memory_patches(features: torch.Tensor, masks: torch.Tensor, loaded: torch.Tensor, n_classes: int,
                   purity: float = PURITY) -> tuple[torch.Tensor, torch.Tensor]:
    """Labelled patches of reference images.

    ``features [N, D, h, w]``, ``masks [N, M, M]``, ``loaded [N]`` -> ``vectors [P, D]``, ``labels [P]``.
    """
    n, d, h, w = features.shape
    shares, labels = [], []
    for chunk in masks.split(MASK_CHUNK):  # one-hot masks are n_classes times larger: a few at a time
        share, label = label_fractions(chunk, n_classes, (h, w)).max(dim=1)
        shares.append(share)
        labels.append(label)
    share, label = torch.cat(shares), torch.cat(labels)
    keep = (share > purity) & (label < n_classes) & loaded[:, None, None]
    vectors = features.permute(0, 2, 3, 1)[keep]
    return vectors, label[keep]


def patch_scores(queries: torch.Tensor, memory: torch.Tensor, labels: torch.Tensor, n_classes: int,
                 k: int = DEFAULT_K, temperature: float = DEFAULT_TEMPERATURE) -> torch.Tensor:
    """``queries [Q, D]`` (L2-normalised) -> class vote shares ``[Q, n_classes]`` (rows sum to 1) from the ``k`` nearest
    of ``memory [P, D]`` (labels ``[P]``), voted with the visual memory's DINO rule (weights
    ``exp(sim / T)``, ``procedural_perception.visual_memory.voting``). Exact search: the memory is one evaluation's patches."""
    k = min(k, len(memory))
    out = []
    for chunk in queries.split(QUERY_CHUNK):
        sims, idx = (chunk @ memory.T).topk(k, dim=1)
        scores = rank_classes(sims, labels[idx], n_classes, "dino", [k], temperature)[0].scores
        # vote shares: raw exp(sim / T) sums span orders of magnitude and would skew the upsampling
        out.append((scores / scores.sum(dim=1, keepdim=True)).float())
    return torch.cat(out) if out else queries.new_zeros(0, n_classes)


def segment(features: torch.Tensor, memory: torch.Tensor, labels: torch.Tensor, n_classes: int,
            mask_size: int, k: int = DEFAULT_K, temperature: float = DEFAULT_TEMPERATURE) -> torch.Tensor:
    """``features [N, D, h, w]`` -> predicted label maps ``[N, mask_size, mask_size]``."""
    n, d, h, w = features.shape
    scores = patch_scores(features.permute(0, 2, 3, 1).reshape(-1, d), memory, labels, n_classes, k, temperature)
    scores = scores.reshape(n, h, w, n_classes).permute(0, 3, 1, 2)
    return F.interpolate(scores, size=(mask_size, mask_size), mode="bilinear", align_corners=False).argmax(1)


def evaluate_knn_segmentation(encoder: torch.nn.Module, reference: Dataset, query: Dataset, k: int = DEFAULT_K,
                              temperature: float = DEFAULT_TEMPERATURE, batch_size: int = 16,
                              device: torch.device | str | None = None, progress: bool = True) -> dict[str, float]:
    """mIoU of kNN segmentation of ``query`` images with a patch memory built from ``reference``.

    Both datasets yield ``(image, mask)`` with the same label set (``reference.classes``). Returns
    ``{"knn_seg/miou", "knn_seg/pixel_acc", "knn_seg/memory_patches", "knn_seg/queries"}``.
    """
    n_classes = len(reference.classes)
    ref_feats, ref_masks, ref_loaded = embed_patches(encoder, reference, batch_size, device, progress,
                                                     "kNN-seg memory")
    memory, labels = memory_patches(ref_feats, ref_masks, ref_loaded, n_classes)
    if len(memory) == 0:
        raise ValueError("kNN segmentation: no reference patch has a majority label; give reference images "
                         "with masks (0 = background, 255 = ignore).")
    q_feats, q_masks, q_loaded = embed_patches(encoder, query, batch_size, device, progress, "kNN-seg queries")
    matrix = torch.zeros(n_classes, n_classes, dtype=torch.long)
    for feats, masks in zip(q_feats[q_loaded].split(MASK_CHUNK), q_masks[q_loaded].split(MASK_CHUNK), strict=True):
        matrix += confusion(segment(feats, memory, labels, n_classes, query.mask_size, k, temperature), masks, n_classes)
    return {"knn_seg/miou": mean_iou(matrix), "knn_seg/pixel_acc": float(matrix.diag().sum() / matrix.sum().clamp_min(1)),
            "knn_seg/memory_patches": int(len(memory)), "knn_seg/queries": int(q_loaded.sum())}


MASK_SIZE = 112  # the paper's mask resolution (tokens upsampled / masks resized to 112 x 112)


class KnnSegmentation(EvaluationTask):
    """kNN segmentation mIoU (``knn_seg/miou``) of ``query`` images with a patch memory from ``data``
    (the reference images). With ``query=None`` the reference source is split: even items build the
    memory, odd items are queried. The paper uses Pascal VOC (``data=voc:<root>:train``,
    ``query=voc:<root>:val``). ``k``, ``temperature``: the vote; ``image_size``: None = the encoder's own."""

    name = "knn_seg"
    HEADLINES = (("kNN-seg mIoU", "knn_seg/miou"),)
    SHARED_FLAGS = {"seg_limit": "limit", "image_size": "image_size", "batch_size": "batch_size"}

    def __init__(self, data: str = "nuclei", query: str | None = None, limit: int | None = None,
                 image_size: int | None = None, mask_size: int = MASK_SIZE, batch_size: int = 16, k: int = DEFAULT_K,
                 temperature: float = DEFAULT_TEMPERATURE) -> None:
        self.data, self.query, self.limit, self.image_size, self.mask_size = data, query, limit, image_size, mask_size
        self.batch_size, self.k, self.temperature = batch_size, k, temperature
        self._pairs: dict[int, tuple[SegmentationImages, SegmentationImages]] = {}

    def datasets(self, size: int) -> tuple[SegmentationImages, SegmentationImages]:
        if size not in self._pairs:
            self._pairs[size] = reference_and_query(self.data, self.query, size, self.mask_size, self.limit)
        return self._pairs[size]

    def evaluate(self, encoder: Encoder) -> dict[str, float]:
        reference, query = self.datasets(self.size_for(encoder, self.image_size))
        return evaluate_knn_segmentation(encoder, reference, query, self.k, self.temperature, self.batch_size,
                                         progress=self.progress)

    @classmethod
    def add_arguments(cls, parser) -> None:
        parser.add_argument("--knn-seg-data", default=None, help="kNN-seg memory images (default nuclei; paper: voc:<root>:train)")
        parser.add_argument("--knn-seg-query", default=None, help="kNN-seg queries (default: odd items of --knn-seg-data)")

    @classmethod
    def own_flags(cls) -> dict[str, str]:
        return {"knn_seg_data": "data", "knn_seg_query": "query"}


def reference_and_query(reference: str, query: str | None, image_size: int, mask_size: int,
                        limit: int | None) -> tuple[SegmentationImages, SegmentationImages]:
    """Two segmentation sets; without ``query``, the even / odd items of ``reference``."""
    if query is not None:
        return (load_segmentation(reference, image_size, mask_size, limit),
                load_segmentation(query, image_size, mask_size, limit))
    data = load_segmentation(reference, image_size, mask_size, None if limit is None else 2 * limit)
    return data.select(range(0, len(data), 2)), data.select(range(1, len(data), 2))
