"""Power-spectrum slope and colour statistics against reference signals and computations."""

import numpy as np
import pytest
import torch
from skimage.color import rgb2hsv

from procedural_perception.evaluations.image_statistics import colour_statistics, power_spectrum_slope


def power_law_noise(n, size, exponent, generator):
    """Grey images whose expected power spectrum is 1 / f^exponent (Gaussian amplitudes, random phases)."""
    fy, fx = torch.meshgrid(torch.fft.fftfreq(size, 1 / size), torch.fft.fftfreq(size, 1 / size), indexing="ij")
    radius = torch.sqrt(fy**2 + fx**2).double()
    amplitude = torch.where(radius > 0, radius.clamp(min=1e-12) ** (-exponent / 2), torch.zeros_like(radius))
    white = torch.randn(n, size, size, generator=generator, dtype=torch.float64)
    field = torch.fft.ifft2(torch.fft.fft2(white) * amplitude).real
    field = field / field.flatten(1).std(dim=1).view(n, 1, 1)
    return (0.5 + 0.1 * field)[:, None].repeat(1, 3, 1, 1)


@pytest.mark.parametrize("exponent", [0.0, 1.0, 2.0, 3.0])
@pytest.mark.parametrize("size", [64, 128])
def test_slope_of_power_law_noise_recovers_its_exponent(exponent, size):
    images = power_law_noise(32, size, exponent, torch.Generator().manual_seed(int(10 * exponent) + size))
    assert power_spectrum_slope(images) == pytest.approx(-exponent, abs=0.1)


def test_slope_accepts_uint8_and_rejects_tiny_images():
    images = (power_law_noise(8, 64, 2.0, torch.Generator().manual_seed(0)) * 255).round().clamp(0, 255).byte()
    assert power_spectrum_slope(images) == pytest.approx(-2.0, abs=0.15)
    with pytest.raises(ValueError, match="too few frequencies"):
        power_spectrum_slope(torch.rand(2, 3, 4, 4))


def test_colour_statistics_match_skimage_and_direct_formulas():
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (5, 3, 16, 16), dtype=np.uint8))
    stats = colour_statistics(images)
    x = images.numpy().astype(np.float64) / 255.0
    hsv = np.stack([rgb2hsv(im.transpose(1, 2, 0)) for im in x])
    assert stats["saturation"] == pytest.approx(hsv[..., 1].mean(), rel=1e-9)
    for c, name in enumerate(("std_r", "std_g", "std_b")):
        assert stats[name] == pytest.approx(np.mean([im[c].std() for im in x]), rel=1e-9)
    m = []
    for im in x * 255.0:
        rg, yb = im[0] - im[1], 0.5 * (im[0] + im[1]) - im[2]
        m.append(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))
    assert stats["colourfulness"] == pytest.approx(np.mean(m), rel=1e-9)


def test_grey_images_have_no_saturation_or_colourfulness():
    grey = torch.rand(3, 1, 8, 8).repeat(1, 3, 1, 1)
    stats = colour_statistics(grey)
    assert stats["saturation"] == pytest.approx(0.0, abs=1e-12)
    assert stats["colourfulness"] == pytest.approx(0.0, abs=1e-9)
    assert colour_statistics(torch.zeros(1, 3, 4, 4))["saturation"] == 0.0  # black: max = 0
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        colour_statistics(torch.rand(3, 8, 8))
