import pytest
import torch

from procedural_perception.compositional.data import (
    BAND_FACTORS,
    FACTORS,
    RANGES,
    CompositionalDataModule,
    band_distances,
    check_no_leakage,
    hue_to_rgb,
    in_band,
    normalise,
    render,
    sample_latents,
    separated,
)

BAND = BAND_FACTORS


@pytest.fixture(scope="module")
def data():
    dm = CompositionalDataModule(seed=3, image_size=32, n_train=300, n_val=100, n_test=300, batch_size=32,
                                 supersample=2)
    dm.setup()
    return dm


def test_deterministic_from_seed(data):
    again = CompositionalDataModule(seed=3, image_size=32, n_train=300, n_val=100, n_test=300, batch_size=32,
                                    supersample=2)
    again.setup()
    assert torch.equal(again.train_set.images, data.train_set.images)
    assert torch.equal(again.ood_set.latents, data.ood_set.latents)
    other = CompositionalDataModule(seed=4, image_size=32, n_train=300, n_val=100, n_test=300, supersample=2)
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
    x_unit = normalise(leaked, 2)[0, 0, 0]
    leaked[0, 1, 0] = RANGES["x"][0] + float((x_unit + 0.5) % 1) * (RANGES["x"][1] - RANGES["x"][0])
    with pytest.raises(AssertionError, match="1 OOD scenes lie on it"):
        check_no_leakage(ids, leaked, 2, 0.125, BAND)


def _scene(y_units, x_units=(0.3, 0.8)):
    """Two objects with the given unit x (slot 1 already offset by 1/2) and unit y; other factors equal."""
    (xl, xh), (yl, yh) = RANGES["x"], RANGES["y"]
    return torch.tensor([[[xl + x * (xh - xl), yl + y * (yh - yl), 1, 0.1, 0.5]
                          for x, y in zip(x_units, y_units, strict=True)]])


def test_id_band_definition_by_hand():
    # The distance of (u1, u2) to the diagonal is |u1 - u2| / sqrt(2): y differing by 0.17 is inside 0.125
    # (0.120), by 0.18 outside (0.127); x is judged after undoing slot 1's offset of 1/2.
    assert in_band(_scene((0.5, 0.67)), 2, 0.125, BAND).item()
    assert not in_band(_scene((0.5, 0.68)), 2, 0.125, BAND).item()
    assert band_distances(_scene((0.5, 0.67)), 2, BAND)[0, 1].item() == pytest.approx(0.17 / 2**0.5, abs=1e-5)
    assert band_distances(_scene((0.5, 0.5)), 2, BAND)[0, 0].item() == pytest.approx(0.0, abs=1e-5)
    assert not in_band(_scene((0.5, 0.5), x_units=(0.3, 0.3)), 2, 0.125, BAND).item()  # x side by side: off band
    # Wrapping: slot 0 at 0.95, slot 1 at 0.95 + 0.5 - 1 = 0.45 is on the diagonal.
    assert in_band(_scene((0.5, 0.5), x_units=(0.95, 0.45)), 2, 0.125, BAND).item()


def test_distance_to_diagonal_matches_projection_for_three_slots():
    # Reference computation: subtract the projection onto the diagonal direction (1, 1, 1) / sqrt(3).
    unit = torch.rand(50, 3, 5)
    diag = torch.ones(3) / 3**0.5
    ortho = unit - torch.einsum("nkd,k->nd", unit, diag)[:, None, :] * diag[None, :, None]
    from procedural_perception.compositional.data import diagonal_distance

    assert torch.allclose(diagonal_distance(unit), ortho.norm(dim=1), atol=1e-6)


def test_split_matches_the_sampler_definition():
    g = torch.Generator().manual_seed(0)
    ids, ood = sample_latents(3000, "id", g), sample_latents(3000, "ood", g)
    dist_id, dist_ood = band_distances(ids, 2, BAND), band_distances(ood, 2, BAND)
    assert dist_id.max() <= 0.125 + 1e-5 and (dist_ood.amax(1) > 0.125).all()
    # Uniform in the band: for two slots the distance is uniform on [0, delta] before the cube cut,
    # so about half the ID scenes lie within delta / 2 of the diagonal for a factor.
    assert 0.45 < (dist_id[:, 1] < 0.0625).float().mean() < 0.60
    # The objects of an ID scene sit 1/2 of the width apart (unit x), give or take sqrt(2) * delta.
    gap = (normalise(ids, 2)[:, 1, 0] - normalise(ids, 2)[:, 0, 0]).remainder(1.0)
    assert gap.min() >= 0.5 - 2**0.5 * 0.125 - 1e-4 and gap.max() <= 0.5 + 2**0.5 * 0.125 + 1e-4
    # Shapes: ID mostly share one (banded unit value, floor rounding), OOD never do.
    shapes_id, shapes_ood = ids[..., FACTORS.index("shape")], ood[..., FACTORS.index("shape")]
    assert 0.02 < (shapes_id[:, 0] != shapes_id[:, 1]).float().mean() < 0.2
    assert (shapes_ood[:, 0] != shapes_ood[:, 1]).all()
    # Each ID slot's marginal covers the whole range of every factor.
    unit = normalise(ids, 2)
    assert (unit.amin(dim=(0, 1)) < 0.02).all() and (unit.amax(dim=(0, 1)) > 0.98).all()
    assert RANGES["scale"] == pytest.approx((0.09, 0.09 + 0.13 / 3))


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
    # OOD is the complement of the band: objects of different shapes and far-apart hues.
    z = data.ood_set.latents
    shapes = z[..., FACTORS.index("shape")]
    assert (shapes[:, 0] != shapes[:, 1]).all()
    hue = normalise(z, 2)[..., FACTORS.index("hue")]
    assert ((hue[:, 0] - hue[:, 1]).abs() > 0.5).any()


def test_render_square_area_colour_and_position():
    size = 32
    scene = torch.tensor([[[0.25, 0.5, 1.0, 0.2, 1 / 3], [0.75, 0.5, 0.0, 0.2, 2 / 3]]])
    image = render(scene, ("triangle", "square"), size, supersample=4)[0]
    assert image.shape == (3, size, size)
    left, right = image[:, :, : size // 2], image[:, :, size // 2 :]
    # Every shape covers scale^2 of the image (Spriteworld): the green square on the left, the blue triangle
    # on the right; a circle too.
    assert left[1].sum() / size**2 == pytest.approx(0.2**2, rel=0.05)
    assert left[0].sum() == 0 and left[2].sum() == 0
    assert right[2].sum() / size**2 == pytest.approx(0.2**2, rel=0.05)
    circle = render(scene, ("circle", "square"), size, supersample=4)[0][:, :, size // 2 :]
    assert circle[2].sum() / size**2 == pytest.approx(0.2**2, rel=0.05)
    # The triangle's apex is up (y grows downwards): its top half holds less colour than its bottom half.
    rows = right[2].sum(dim=1)
    assert rows[: size // 2].sum() < rows[size // 2 :].sum()
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


def test_object_scale_draws_larger_objects_from_the_same_latents():
    latents = torch.tensor([[[0.3, 0.5, 1.0, 0.1, 0.2], [0.7, 0.5, 1.0, 0.12, 0.6]]])  # two squares
    # Coverage in pixels: every hue has a channel at 1, so the max channel is the anti-aliased coverage.
    area = {k: render(latents, ("triangle", "square"), 64, object_scale=k).amax(1).sum() for k in (1.0, 2.0)}
    expected = 64**2 * (0.1**2 + 0.12**2)
    assert float(area[1.0]) == pytest.approx(expected, rel=0.05)
    assert float(area[2.0]) == pytest.approx(4 * expected, rel=0.05)
    # Separation is judged at the drawn size: close objects that fit at scale 1 overlap at scale 2.
    assert bool(separated(latents, 0.02)) and not bool(separated(latents, 0.02, object_scale=2.0))
    dm = CompositionalDataModule(seed=1, image_size=32, n_train=64, n_val=16, n_test=16, supersample=1,
                                 object_scale=2.0)
    dm.setup()
    assert bool(separated(dm.train_set.latents, 0.02, object_scale=2.0).all())
    with pytest.raises(ValueError, match="object_scale must be > 0"):
        CompositionalDataModule(object_scale=0)
