"""Segmentation evaluations during training: PCA R^2, in-context and kNN segmentation.

Data sources are ``procedural_perception.datasets.segmentation.load_segmentation`` specs (built-in ``nuclei`` /
``nuclei_instances`` by default; ``coco:<root>``, ``voc:<root>:<split>``, ``ade20k:<root>`` for the
paper's data sets). Each is loaded once, on first use, and cut to ``limit`` items.
"""

from __future__ import annotations

from lightning_modules.encoders import Encoder
from procedural_perception.datasets.segmentation import SegmentationImages, load_segmentation
from procedural_perception.evaluations.in_context import MIN_AREA, evaluate_in_context
from procedural_perception.evaluations.knn_segmentation import DEFAULT_K, evaluate_knn_segmentation
from procedural_perception.evaluations.pca_r2 import PAPER_IMAGE_SIZE, PAPER_MASK_SIZE, evaluate_pca_r2
from procedural_perception.visual_memory.voting import DEFAULT_TEMPERATURE

from .periodic import PeriodicEvaluation


class PCAR2(PeriodicEvaluation):
    """Mean PCA R^2 (``pca_r2``). ``data``: segmentation spec (``nuclei_instances``: every nucleus a
    segment; the paper: ``coco:<root>``); ``limit``: images used (None = all); ``image_size`` /
    ``mask_size``: 448 / 112 as in the paper; ``batch_size``: images per forward pass."""

    name = "pca_r2"

    def __init__(self, every_n_epochs: int = 1, data: str = "nuclei_instances", limit: int | None = None,
                 image_size: int = PAPER_IMAGE_SIZE, mask_size: int = PAPER_MASK_SIZE, batch_size: int = 8) -> None:
        super().__init__(every_n_epochs)
        self.data, self.limit, self.image_size, self.mask_size = data, limit, image_size, mask_size
        self.batch_size = batch_size
        self._dataset: SegmentationImages | None = None

    def dataset(self) -> SegmentationImages:
        if self._dataset is None:
            self._dataset = load_segmentation(self.data, self.image_size, self.mask_size, self.limit)
        return self._dataset

    def evaluate(self, encoder: Encoder) -> dict[str, float]:
        return evaluate_pca_r2(encoder, self.dataset(), self.batch_size, progress=self.progress)


class InContextSegmentation(PCAR2):
    """In-context segmentation mIoU (``in_context/miou``). ``method``: ``prototype`` or ``knn``;
    ``max_pairs``: cap on (prompt, query) pairs; ``min_area``: smallest concept share of an image;
    ``k``: neighbours for ``knn``. The paper uses ADE20K (``ade20k:<root>``)."""

    name = "in_context"

    def __init__(self, every_n_epochs: int = 1, data: str = "nuclei", limit: int | None = None,
                 image_size: int = 224, mask_size: int = PAPER_MASK_SIZE, batch_size: int = 16,
                 method: str = "prototype", max_pairs: int | None = 200, min_area: float = MIN_AREA,
                 k: int = DEFAULT_K) -> None:
        super().__init__(every_n_epochs, data, limit, image_size, mask_size, batch_size)
        self.method, self.max_pairs, self.min_area, self.k = method, max_pairs, min_area, k

    def evaluate(self, encoder: Encoder) -> dict[str, float]:
        return evaluate_in_context(encoder, self.dataset(), self.method, self.k, self.min_area, self.max_pairs,
                                   self.batch_size, progress=self.progress)


class KnnSegmentation(PCAR2):
    """kNN segmentation mIoU (``knn_seg/miou``) of ``query`` images with a patch memory from
    ``data`` (the reference images). With ``query=None`` the reference source is split: even items
    build the memory, odd items are queried. The paper uses Pascal VOC
    (``data=voc:<root>:train``, ``query=voc:<root>:val``). ``k``, ``temperature``: the vote."""

    name = "knn_seg"

    def __init__(self, every_n_epochs: int = 1, data: str = "nuclei", query: str | None = None,
                 limit: int | None = None, image_size: int = 224, mask_size: int = PAPER_MASK_SIZE,
                 batch_size: int = 16, k: int = DEFAULT_K, temperature: float = DEFAULT_TEMPERATURE) -> None:
        super().__init__(every_n_epochs, data, limit, image_size, mask_size, batch_size)
        self.query, self.k, self.temperature = query, k, temperature
        self._pair: tuple[SegmentationImages, SegmentationImages] | None = None

    def datasets(self) -> tuple[SegmentationImages, SegmentationImages]:
        if self._pair is None:
            self._pair = reference_and_query(self.data, self.query, self.image_size, self.mask_size, self.limit)
        return self._pair

    def evaluate(self, encoder: Encoder) -> dict[str, float]:
        reference, query = self.datasets()
        return evaluate_knn_segmentation(encoder, reference, query, self.k, self.temperature, self.batch_size,
                                         progress=self.progress)


def reference_and_query(reference: str, query: str | None, image_size: int, mask_size: int,
                        limit: int | None) -> tuple[SegmentationImages, SegmentationImages]:
    """Two segmentation sets; without ``query``, the even / odd items of ``reference``."""
    if query is not None:
        return (load_segmentation(reference, image_size, mask_size, limit),
                load_segmentation(query, image_size, mask_size, limit))
    data = load_segmentation(reference, image_size, mask_size, None if limit is None else 2 * limit)
    return data.select(range(0, len(data), 2)), data.select(range(1, len(data), 2))
