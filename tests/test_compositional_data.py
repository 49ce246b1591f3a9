import pytest
import torch

from procedural_perception.compositional.data import (
    FACTORS,
    RANGES,
    CompositionalDataModule,
    check_no_leakage,
    hue_to_rgb,
    in_band,
    normalise,
    render,
    sample_latents,
    separated,
)

BAND = ("y", "shape", "scale", "hue")


@pytest.fixture(scope="module")
def data():
    dm = CompositionalDataModule(seed=3, n_train=300, n_val=100, n_test=300, batch_size=32, supersample=2)
    dm.setup()
    return dm


def test_deterministic_from_seed(data):
    again = CompositionalDataModule(seed=3, n_train=300, n_val=100, n_test=300, batch_size=32, supersample=2)
    again.setup()
    assert torch.equal(again.train_set.images, data.train_set.images)
    assert torch.equal(again.ood_set.latents, data.ood_set.latents)
    other = CompositionalDataModule(seed=4, n_train=300, n_val=100, n_test=300, supersample=2)
    other.setup()
    assert not torch.equal(other.train_set.latents, data.train_set.latents)


def test_splits_have_no_leakage(data):
    ids = torch.cat([data.train_set.latents, data.val_set.latents])
    assert in_band(ids, 2, 0.125, BAND).all()
    assert not in_band(data.ood_set.latents, 2, 0.125, BAND).any()
    assert check_no_leakage(ids, data.ood_set.latents, 2, 0.125, BAND) == {"id": 400, "ood": 300}
    # One OOD scene moved into the band (copy object 0 onto object 1's banded factors) is caught.
    leaked = data.ood_set.latents.clone()
    leaked[0, 1, 1:] = leaked[0, 0, 1:]
    with pytest.raises(AssertionError, match="1 OOD scenes lie on it"):
        check_no_leakage(ids, leaked, 2, 0.125, BAND)


def test_id_band_definition_by_hand():
    # Two objects; normalised y differ by 0.1 (inside 0.125), then by 0.2 (outside).
    low, high = RANGES["y"]
    scene = torch.tensor([[[0.3, low + 0.5 * (high - low), 1, 0.15, 0.5], [0.7, low + 0.6 * (high - low), 1, 0.15, 0.5]]])
    assert in_band(scene, 2, 0.125, BAND).item()
    scene[0, 1, 1] = low + 0.7 * (high - low)
    assert not in_band(scene, 2, 0.125, BAND).item()
    scene[0, 1, 1] = scene[0, 0, 1]
    scene[0, 1, 2] = 0  # different shapes are never in the band
    assert not in_band(scene, 2, 0.125, BAND).item()


def test_latents_in_ranges_and_separated(data):
    for split in (data.train_set, data.ood_set):
        z = split.latents
        for name, (low, high) in RANGES.items():
            values = z[..., FACTORS.index(name)]
            assert values.min() >= low - 1e-6 and values.max() <= high + 1e-6
        assert set(z[..., FACTORS.index("shape")].unique().tolist()) <= {0.0, 1.0}
        assert separated(z, 0.02).all()
        unit = split.unit_latents
        assert torch.allclose(unit, normalise(z, 2)) and unit.min() >= 0 and unit.max() <= 1


def test_ood_covers_all_combinations(data):
    # OOD is the complement of the band: it contains different shapes and far-apart hues.
    z = data.ood_set.latents
    shapes = z[..., FACTORS.index("shape")]
    assert (shapes[:, 0] != shapes[:, 1]).float().mean() > 0.3
    hue = normalise(z, 2)[..., FACTORS.index("hue")]
    assert ((hue[:, 0] - hue[:, 1]).abs() > 0.5).any()


def test_render_square_area_colour_and_position():
    size = 32
    scene = torch.tensor([[[0.25, 0.5, 1.0, 0.2, 1 / 3], [0.75, 0.5, 0.0, 0.2, 2 / 3]]])
    image = render(scene, ("triangle", "square"), size, supersample=4)[0]
    assert image.shape == (3, size, size)
    left, right = image[:, :, : size // 2], image[:, :, size // 2 :]
    # The square (hue 1/3 = green) on the left covers 0.2^2 of the image; the triangle half as much.
    assert left[1].sum() / size**2 == pytest.approx(0.2**2, rel=0.05)
    assert left[0].sum() == 0 and left[2].sum() == 0
    assert right[2].sum() / size**2 == pytest.approx(0.2**2 / 2, rel=0.1)  # blue triangle
    assert torch.allclose(hue_to_rgb(torch.tensor([0.0, 1 / 3, 2 / 3])), torch.eye(3), atol=1e-6)


def test_loaders_give_images_and_latents(data):
    images, latents = next(iter(data.train_dataloader()))
    assert images.shape == (32, 3, 32, 32) and images.dtype == torch.float32
    assert 0 <= images.min() and images.max() <= 1
    assert latents.shape == (32, 2, 5)
    ood_images, _ = next(iter(data.test_dataloader()))
    assert torch.equal(ood_images, data.ood_set.images[:32])


def test_bad_options_fail_clearly():
    with pytest.raises(ValueError, match="Unknown shapes"):
        CompositionalDataModule(shapes=("hexagon",))
    with pytest.raises(ValueError, match="split must be"):
        sample_latents(4, "test", torch.Generator())
    with pytest.raises(ValueError, match="Unknown band factors"):
        sample_latents(4, "id", torch.Generator(), band_factors=("colour",))
