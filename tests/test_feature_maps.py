import torch

from lightning_modules.encoders import build_encoder
from procedural_perception.evaluations.feature_maps import colour_labels, feature_grid, kmeans_labels, pca_rgb


def two_region_features() -> torch.Tensor:
    """[1, 8, 6, 6]: left half one direction, right half another, plus a little noise."""
    gen = torch.Generator().manual_seed(0)
    f = torch.zeros(1, 8, 6, 6)
    f[0, 0, :, :3] = 1.0
    f[0, 1, :, 3:] = 1.0
    return f + 0.01 * torch.randn(f.shape, generator=gen)


def test_kmeans_separates_two_regions():
    labels = kmeans_labels(two_region_features(), k=2)[0]
    assert (labels[:, :3] == labels[0, 0]).all() and (labels[:, 3:] == labels[0, 5]).all()
    assert labels[0, 0] != labels[0, 5]


def test_pca_rgb_range_and_first_component_splits_regions():
    rgb = pca_rgb(two_region_features())
    assert rgb.shape == (1, 3, 6, 6) and rgb.min() >= 0 and rgb.max() <= 1
    first = rgb[0, 0]
    assert (first[:, :3].mean() - first[:, 3:].mean()).abs() > 0.8


def test_feature_grid_rows_of_image_pca_kmeans():
    images = torch.rand(2, 3, 32, 32)
    grid = feature_grid(build_encoder("rgb"), images, k=3)
    assert grid.shape == (3, 2 * 34 + 2, 3 * 34 + 2)  # 2 rows x 3 panels, 2-pixel padding
    assert colour_labels(torch.tensor([[[0, 11]]])).shape == (1, 3, 1, 2)
