import pytest
import torch
from torch.utils.data import DataLoader

from lightning_modules.multicrop import MultiCropTransform, denormalise


def test_crop_count_shapes_and_range():
    torch.manual_seed(0)
    transform = MultiCropTransform(global_size=32, local_size=16, n_local=3)
    crops = transform(torch.rand(3, 48, 40))
    assert len(crops) == transform.n_crops == 5
    assert [tuple(c.shape) for c in crops] == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 3
    assert all(type(c) is torch.Tensor and c.dtype == torch.float32 for c in crops)
    # Normalised with ImageNet statistics; undoing it lands back in [0, 1].
    for c in crops:
        assert c.min() >= (0 - 0.485) / 0.229 - 1e-4 and c.max() <= (1 - 0.406) / 0.225 + 1e-4
        assert torch.equal(denormalise(c), denormalise(c).clamp(0, 1))


def test_crops_are_random_and_seeded():
    image = torch.rand(3, 64, 64)
    transform = MultiCropTransform(global_size=32, local_size=16, n_local=2)
    torch.manual_seed(1)
    a = transform(image)
    torch.manual_seed(1)
    b = transform(image)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[2], a[3])


def test_constant_image_stays_constant_up_to_colour():
    # Geometry and blur cannot create structure in a flat image; only the colour ops change it.
    transform = MultiCropTransform(global_size=16, local_size=8, n_local=2)
    for crop in transform(torch.full((3, 40, 40), 0.5)):
        assert torch.allclose(crop, crop[:, :1, :1].expand_as(crop), atol=1e-4)


def test_collates_into_a_list_of_batches():
    transform = MultiCropTransform(global_size=16, local_size=8, n_local=2)
    images = [torch.rand(3, 24, 24) for _ in range(4)]
    batch = next(iter(DataLoader([transform(x) for x in images], batch_size=4)))
    assert [tuple(b.shape) for b in batch] == [(4, 3, 16, 16)] * 2 + [(4, 3, 8, 8)] * 2


def test_no_local_crops_and_bad_input():
    assert len(MultiCropTransform(16, 8, n_local=0)(torch.rand(3, 20, 20))) == 2
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        MultiCropTransform(16, 8)(torch.rand(1, 3, 20, 20))
    with pytest.raises(ValueError):
        MultiCropTransform(16, 8, n_local=-1)
