"""Family ``spectral``: coloured noise whose power spectrum falls as 1/f^alpha, like natural images.

Natural images have a radially averaged power spectrum |F(f)|^2 ~ 1/f^alpha with alpha near 2
(Baradad et al. 2021 made it one of their noise processes; REFERENCE.md section 10). Here the field is a
sum of octaves of gradient noise at frequencies f_k = lacunarity^k, each rotated by the golden angle so
no lattice direction dominates. An octave spreads its variance a_k^2 over an annulus of area ~ f_k^2 in
the 2D frequency plane, so the spectral density at f_k is ~ a_k^2 / f_k^2; amplitudes
a_k = f_k^(1 - alpha/2) therefore give the 2D power spectrum f^-alpha (the amplitude spectrum
f^-alpha/2). alpha is a uniform in ``ALPHA_RANGE`` (amplitude-squared terms), so every image has its own
slope; ``tests/test_families.py`` measures the slope of rendered fields against alpha.

Colour: either a palette / gradient map of the field, or "natural" colouring (a base colour scaled by
the luminance field plus a chroma shift from a second, lower-octave 1/f field).
"""

from __future__ import annotations

import numpy as np

from .builder import Builder
from .program import Program

# Spectral slope of the power spectrum (Baradad et al. 2021 sampled around natural images' ~2).
ALPHA_RANGE = (1.5, 2.5)
# Octaves of the luminance field (frequency ratio lacunarity^octaves spans base to near Nyquist at 224 px).
OCTAVES_RANGE = (6, 8)

HELPERS = r"""
// Sum of `octaves` gradient-noise octaves with amplitude f^(1 - alpha/2): a 1/f^alpha power spectrum.
// Zero mean, unit-normalised by the amplitudes' root sum of squares (values mostly within +-0.3).
// Octaves above `fmax` (in units of the first octave's frequency) are skipped: past the Nyquist limit
// of the tile they would only alias.
float spectral_noise(vec2 p, int octaves, float lacunarity, float alpha, float fmax) {
    float sum = 0.0, norm = 0.0, f = 1.0;
    mat2 turn = rot(2.39996);  // the golden angle: octave lattices never align
    for (int k = 0; k < octaves; k++) {
        if (f > fmax) break;
        float a = pow(f, 1.0 - 0.5 * alpha);
        sum += a * (grad_noise(p) - 0.5);
        norm += a * a;
        p = turn * p * lacunarity + vec2(17.3, 9.1);
        f *= lacunarity;
    }
    return sum / sqrt(norm);
}
"""


def generate(seed: int) -> Program:
    """The ``spectral`` program of ``seed``."""
    b = Builder(np.random.default_rng([int(seed), 0x5BEC]))
    octaves = int(b.rng.integers(OCTAVES_RANGE[0], OCTAVES_RANGE[1] + 1))
    alpha = b.param(*ALPHA_RANGE)
    scale = b.param(1.0, 2.0)
    q = b.let("vec2", f"rot({b.param(0.0, 6.2832)}) * p * {scale} + {b.vec2(0.0, 50.0)}")
    stretch = "1.0"
    if b.rng.random() < 0.4:  # oriented spectrum: more power along one axis, as in many natural scenes
        stretch = b.param(1.5, 4.0)
        q = b.let("vec2", f"{q} * vec2(1.0, {stretch})")
    # p spans 2 units per tile: the first octave has `scale * stretch` cycles per unit at most, and the
    # tile resolves TILE_SIZE / 4 cycles per unit (Nyquist); stay at half of that.
    fmax = b.let("float", f"float(TILE_SIZE) * 0.125 / ({scale} * {stretch})")
    t = b.let("float", f"spectral_noise({q}, {octaves}, {b.param(1.8, 2.2)}, {alpha}, {fmax})")
    contrast = b.param(1.2, 2.2)
    colouring = b.choice(["natural", "palette", "gradient"], [1.4, 1, 1])
    if colouring == "natural":
        c = b.let("float", f"spectral_noise({q} * 0.5 + 31.0, 3, 2.0, {alpha}, {fmax})")
        base = b.vec3(0.25, 0.75)
        chroma = b.vec3(-0.6, 0.6)
        col = b.let("vec3", f"{base} * (1.0 + {contrast} * 1.5 * {t}) + {chroma} * {c}")
    elif colouring == "palette":
        col = b.let("vec3", f"cosine_palette(0.5 + {contrast} * {t}, {b.vec3(0.35, 0.65)}, {b.vec3(0.25, 0.5)}, "
                            f"{b.vec3(0.3, 1.2)}, {b.vec3(0.0, 1.0)})")
    else:
        col = b.let("vec3", f"gradient_map(0.5 + {contrast} * {t}, {b.vec3(0.0, 0.35)}, {b.vec3(0.0, 1.0)}, "
                            f"{b.vec3(0.0, 1.0)}, {b.vec3(0.6, 1.0)})")
    return b.program(f"spectral-{seed}", "spectral", col, HELPERS)
