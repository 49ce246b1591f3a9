import math

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from procedural_perception.evaluations.pca_r2 import pca_components, pca_r2_batch, segment_r2


def test_piecewise_constant_features_on_their_segments_give_one():
    mask = torch.zeros(32, 32, dtype=torch.long)
    mask[:, 10:20] = 1
    mask[:, 20:] = 2
    mask[:5] = 255  # ignored rows carry arbitrary features
    values = torch.tensor([[0.1, 0.9, 0.3], [0.7, 0.2, 0.5], [0.4, 0.4, 0.8]])
    features = values[mask.clamp(max=2)].permute(2, 0, 1).clone()
    features[:, :5] = torch.rand(3, 5, 32)
    assert segment_r2(features, mask) == pytest.approx(1.0, abs=1e-12)


def test_features_unrelated_to_the_mask_give_about_zero():
    gen = torch.Generator().manual_seed(0)
    mask = torch.randint(1, 5, (112, 112), generator=gen)
    features = torch.rand(3, 112, 112, generator=gen)
    assert abs(segment_r2(features, mask)) < 0.01


def test_background_only_gives_nan():
    assert math.isnan(segment_r2(torch.rand(3, 8, 8), torch.zeros(8, 8, dtype=torch.long)))


def test_scalar_mean_differs_from_per_channel_mean():
    """One segment: with a per-channel mean R^2 would be 0; the paper's scalar mean keeps the
    between-channel spread in the denominator."""
    mask = torch.ones(4, 4, dtype=torch.long)
    features = torch.stack([torch.rand(4, 4) * 0.1, 0.9 + torch.rand(4, 4) * 0.1, torch.rand(4, 4)])
    x = features.flatten(1).T.double()
    expected = 1 - ((x - x.mean(0)) ** 2).sum() / ((x - x.mean()) ** 2).sum()
    assert segment_r2(features, mask) == pytest.approx(float(expected))
    assert segment_r2(features, mask) > 0.3


def _bilinear_numpy(image: np.ndarray, size: int) -> np.ndarray:
    """Half-pixel-centre bilinear resize of [C, h, w] (independent of torch)."""
    def axis(n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.maximum((np.arange(size) + 0.5) * n_in / size - 0.5, 0)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo
    y0, y1, wy = axis(image.shape[1])
    x0, x1, wx = axis(image.shape[2])
    top = image[:, y0][:, :, x0] * (1 - wx) + image[:, y0][:, :, x1] * wx
    bottom = image[:, y1][:, :, x0] * (1 - wx) + image[:, y1][:, :, x1] * wx
    return top * (1 - wy[:, None]) + bottom * wy[:, None]


def _reference_r2(tokens: np.ndarray, h: int, w: int, mask: np.ndarray) -> float:
    rgb = PCA(n_components=3, svd_solver="full").fit_transform(tokens)  # [h*w, 3]
    rgb = (rgb - rgb.min(0)) / (rgb.max(0) - rgb.min(0))
    up = _bilinear_numpy(rgb.T.reshape(3, h, w), mask.shape[0]).reshape(3, -1).T
    labels = mask.reshape(-1)
    keep = (labels != 0) & (labels != 255)
    x, labels = up[keep], labels[keep]
    within = sum(((x[labels == s] - x[labels == s].mean(0)) ** 2).sum() for s in np.unique(labels))
    return 1 - within / ((x - x.mean()) ** 2).sum()


def test_matches_an_independent_numpy_and_sklearn_computation():
    gen = torch.Generator().manual_seed(1)
    h = w = 7
    mask = torch.zeros(2, 28, 28, dtype=torch.long)
    mask[:, 4:20, 3:15] = 1
    mask[:, 10:26, 12:27] = 3
    mask[1, :3] = 255
    # features that partly follow the mask, so R^2 is neither 0 nor 1
    coarse = torch.nn.functional.interpolate(mask[:, None].float().clamp(max=3), size=(h, w), mode="area")
    feats = torch.randn(2, 16, h, w, generator=gen) + coarse * torch.randn(1, 16, 1, 1, generator=gen)
    ours = pca_r2_batch(feats, mask)
    for i in range(2):
        tokens = feats[i].flatten(1).T.double().numpy()
        assert float(ours[i]) == pytest.approx(_reference_r2(tokens, h, w, mask[i].numpy()), abs=1e-9)
    assert 0.05 < float(ours.mean()) < 0.95


def test_pca_components_sign_and_range_follow_sklearn():
    tokens = torch.randn(1, 50, 8, generator=torch.Generator().manual_seed(2))
    ours = pca_components(tokens)[0].numpy()
    ref = PCA(n_components=3, svd_solver="full").fit_transform(tokens[0].double().numpy())
    ref = (ref - ref.min(0)) / (ref.max(0) - ref.min(0))
    np.testing.assert_allclose(ours, ref, atol=1e-9)
