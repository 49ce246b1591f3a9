import numpy as np
import pytest
import torch

from lightning_modules.encoders import build_encoder
from procedural_perception.datasets.segmentation import SegmentationImages
from procedural_perception.evaluations.in_context import concept_pairs, evaluate_in_context
from procedural_perception.evaluations.knn_segmentation import evaluate_knn_segmentation

SIZE = 128  # 8 x 8 patches of 16 pixels


def planted(n: int, seed: int, distinct: bool = True) -> SegmentationImages:
    """Noisy blue-grey images (a background with shared statistics, as real ones have) with a
    32 x 32 striped pattern planted at a random patch-aligned place (label 1). With
    ``distinct=False`` the "pattern" is more of the same background."""
    rng = np.random.default_rng(seed)
    stripes = np.zeros((32, 32, 3), np.float32)
    stripes[::4] = (1.0, 0.1, 0.1)
    stripes[1::4] = (0.1, 0.9, 0.1)
    items = []
    for _ in range(n):
        image = (np.array([0.2, 0.3, 0.7]) + rng.normal(0, 0.1, (SIZE, SIZE, 3))).clip(0, 1).astype(np.float32)
        mask = np.zeros((SIZE, SIZE), np.int64)
        y, x = rng.integers(0, SIZE // 16 - 1, 2) * 16
        if distinct:
            image[y:y + 32, x:x + 32] = stripes
        mask[y:y + 32, x:x + 32] = 1
        items.append((image, mask))
    loaders = [lambda it=it: it for it in items]
    return SegmentationImages(loaders, [str(i) for i in range(n)], ["background", "stripes"], SIZE, SIZE)


@pytest.mark.parametrize("method", ["prototype", "knn"])
def test_in_context_recovers_a_planted_pattern(method):
    result = evaluate_in_context(build_encoder("rgb"), planted(6, 0), method=method, progress=False)
    assert result["in_context/pairs"] == 6
    assert result["in_context/miou"] > 0.9


def test_in_context_fails_without_a_visual_cue():
    result = evaluate_in_context(build_encoder("rgb"), planted(6, 0, distinct=False), progress=False)
    assert result["in_context/miou"] < 0.5


def test_knn_segmentation_recovers_a_planted_pattern():
    result = evaluate_knn_segmentation(build_encoder("rgb"), planted(4, 1), planted(4, 2), k=5, progress=False)
    assert result["knn_seg/miou"] > 0.9
    assert result["knn_seg/queries"] == 4


def test_concept_pairs_take_the_next_image_with_the_concept():
    masks = torch.zeros(4, 10, 10, dtype=torch.long)
    masks[0, :5] = 1
    masks[1, :5] = 2
    masks[2, 5:] = 1
    masks[3, :, :5] = 2
    masks[3, 0, 0] = 1  # 1% of the mask: counts at min_area=0.01, not at 0.02
    loaded = torch.ones(4, dtype=torch.bool)
    assert concept_pairs(masks, loaded, 3, min_area=0.02) == [(2, 0, 1), (3, 1, 2), (0, 2, 1), (1, 3, 2)]
    assert (3, 2, 1) in concept_pairs(masks, loaded, 3, min_area=0.01)
    loaded[2] = False
    assert concept_pairs(masks, loaded, 3, min_area=0.02) == [(3, 1, 2), (1, 3, 2)]
