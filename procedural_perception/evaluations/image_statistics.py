"""Low-level statistics of a set of images, to put procedural images beside real photographs.

- :func:`power_spectrum_slope`: the slope of the radially averaged power spectrum on log-log axes.
  Natural images have power ~ 1 / f^2 (slope about -2; van der Schaaf & van Hateren 1996, Torralba &
  Oliva 2003): steeper means smoother, flatter means more fine texture or noise.
- :func:`colour_statistics`: mean HSV saturation, per-channel standard deviation and the
  colourfulness of Hasler & Süsstrunk (2003).

Images are uint8 ``[N, 3, H, W]`` (a procedural block) or float in [0, 1].
"""

from __future__ import annotations

import torch

# Luma weights (ITU-R BT.601) for the grey image whose spectrum is measured.
LUMA = (0.299, 0.587, 0.114)
# Radial frequencies (cycles per image) used by the fit: below 2 the window dominates, above 0.8 x
# Nyquist the corners (aliasing, JPEG and render quantisation) bend the curve.
MIN_FREQUENCY = 2.0
MAX_FREQUENCY_OF_NYQUIST = 0.8


def _float(images: torch.Tensor) -> torch.Tensor:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images [N, 3, H, W], got shape {tuple(images.shape)}")
    return images.double() / 255.0 if images.dtype == torch.uint8 else images.double()


def radial_power_spectrum(grey: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Radially averaged power of ``grey [N, S, S]`` (mean removed, Hann-windowed so the image borders
    add no spurious 1/f^2 edge), averaged over images.

    Returns ``frequencies [F]`` (integer radii 1..S/2, cycles per image) and ``power [F]``.
    """
    n, h, w = grey.shape
    if h != w:
        raise ValueError(f"expected square images, got {h} x {w}")
    window = torch.outer(torch.hann_window(h, periodic=False, dtype=grey.dtype),
                         torch.hann_window(w, periodic=False, dtype=grey.dtype))
    centred = (grey - grey.mean(dim=(1, 2), keepdim=True)) * window
    power = torch.fft.fft2(centred).abs().square().mean(0)
    fy, fx = torch.meshgrid(torch.fft.fftfreq(h, 1 / h), torch.fft.fftfreq(w, 1 / w), indexing="ij")
    radius = torch.sqrt(fy**2 + fx**2).round().long().flatten()
    radii = torch.arange(1, h // 2 + 1)
    total = torch.zeros(int(radius.max()) + 1, dtype=power.dtype).index_add_(0, radius, power.flatten())
    count = torch.zeros_like(total).index_add_(0, radius, torch.ones_like(power.flatten()))
    return radii.double(), total[radii] / count[radii]


def power_spectrum_slope(images: torch.Tensor) -> float:
    """Least-squares slope of log power against log frequency (radii MIN_FREQUENCY .. 0.8 Nyquist) of
    the images' mean radial power spectrum (luma). About -2 for natural images."""
    x = _float(images)
    grey = torch.einsum("nchw,c->nhw", x, torch.tensor(LUMA, dtype=x.dtype))
    freq, power = radial_power_spectrum(grey)
    keep = (freq >= MIN_FREQUENCY) & (freq <= MAX_FREQUENCY_OF_NYQUIST * grey.shape[-1] / 2) & (power > 0)
    if int(keep.sum()) < 3:
        raise ValueError(f"images of {grey.shape[-1]} px leave too few frequencies to fit; use at least 16 px")
    lx, ly = freq[keep].log(), power[keep].log()
    lx_c = lx - lx.mean()
    return float((lx_c * (ly - ly.mean())).sum() / lx_c.square().sum())


def colour_statistics(images: torch.Tensor) -> dict[str, float]:
    """Colour statistics averaged over images (each image's own statistic, then the mean):

    ``saturation``: mean HSV saturation (max - min) / max (0 where max = 0), in [0, 1];
    ``std_r|g|b``: standard deviation of each channel within an image, in [0, 1] units;
    ``colourfulness``: Hasler & Süsstrunk's M = sqrt(s_rg^2 + s_yb^2) + 0.3 sqrt(m_rg^2 + m_yb^2)
    with rg = R - G, yb = (R + G) / 2 - B on the 0..255 scale (about 0 for grey images, > 100
    "extremely colourful").
    """
    x = _float(images)
    top, bottom = x.max(dim=1).values, x.min(dim=1).values
    saturation = torch.where(top > 0, (top - bottom) / top.clamp(min=1e-12), torch.zeros_like(top))
    std = x.flatten(2).std(dim=2, unbiased=False).mean(0)
    r, g, b = (255.0 * x).unbind(1)
    rg, yb = (r - g).flatten(1), (0.5 * (r + g) - b).flatten(1)
    spread = torch.sqrt(rg.var(dim=1, unbiased=False) + yb.var(dim=1, unbiased=False))
    offset = torch.sqrt(rg.mean(1).square() + yb.mean(1).square())
    colourfulness = spread + 0.3 * offset
    return {"saturation": float(saturation.mean()), "std_r": float(std[0]), "std_g": float(std[1]),
            "std_b": float(std[2]), "colourfulness": float(colourfulness.mean())}

