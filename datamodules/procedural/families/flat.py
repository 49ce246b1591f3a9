"""Family ``flat``: flat-coloured regions with clean, anti-aliased edges (few textures).

The 2D grammar and most noise fields are smooth everywhere; natural images also hold large uniform
regions bounded by sharp edges (object silhouettes, man-made surfaces). Layouts, chosen by the seed:

- ``voronoi``: Worley cells, one flat colour per cell, optionally outlined;
- ``lines``: an arrangement of random lines; each region (its side of every line) gets one colour;
- ``shapes``: flat polygons, discs and boxes stacked back to front over a flat background.

Edges of lines and shapes are anti-aliased over ~1 pixel (``EDGE`` times the pixel size); Voronoi cell
borders are hard (one nearest cell per pixel) unless outlined.
A seed may add one sparse texture (stripes inside some regions) to keep "few textures", not none.
"""

from __future__ import annotations

import numpy as np

from .builder import Builder
from .program import Program

# Lines of the `lines` layout (up to 2^n regions, in practice ~n^2/2 inside the image).
LINES_RANGE = (4, 9)
# Shapes of the `shapes` layout.
SHAPES_RANGE = (6, 14)
# Edge width in pixels (anti-aliasing).
EDGE = 1.0

HELPERS = r"""
float pixel_size() { return 2.0 / float(TILE_SIZE); }
// A region code (any float) -> a flat colour drawn from a cosine palette, jittered in brightness.
vec3 region_colour(float code, vec3 a, vec3 b, vec3 c, vec3 d) {
    float h = hash_cell(vec2(code, 7.0));
    return cosine_palette(h, a, b, c, d) * (0.65 + 0.45 * hash_cell(vec2(code, 13.0)));
}
"""


def _palette(b: Builder) -> str:
    return f"{b.vec3(0.3, 0.7)}, {b.vec3(0.25, 0.5)}, {b.vec3(0.5, 2.0)}, {b.vec3(0.0, 1.0)}"


def _voronoi(b: Builder, q: str) -> tuple[str, str]:
    """(colour, region code) of Worley cells."""
    v = b.let("vec3", f"cells({q} * {b.param(1.5, 6.0)} + {b.vec2(0.0, 50.0)}, {b.param(0.6, 1.0)})")
    code = b.let("float", f"floor({v}.z * 65535.0)")
    col = b.let("vec3", f"region_colour({code}, {_palette(b)})")
    if b.rng.random() < 0.5:  # dark outlines of a few pixels along the cell borders
        w = b.param(0.5, 3.0)
        col = b.let("vec3", f"{col} * mix(0.15, 1.0, smoothstep({w} * pixel_size(), ({w} + {EDGE}) * pixel_size(), "
                            f"0.5 * ({v}.y - {v}.x)))")
    return col, code


def _lines(b: Builder, q: str) -> tuple[str, str]:
    """(colour, region code) of a line arrangement, anti-aliased across the nearest line."""
    n = int(b.rng.integers(LINES_RANGE[0], LINES_RANGE[1] + 1))
    code, nearest, flip = b.let("float", "0.0"), b.let("float", "1e3"), b.let("float", "0.0")
    for i in range(n):
        normal = b.let("vec2", f"vec2(cos({b.param(0.0, 6.2832)}), sin({b.param(0.0, 6.2832)}))")
        s = b.let("float", f"dot({q}, {normal}) - {b.param(-0.8, 0.8)}")
        bit = float(2**i)
        b.lines.append(f"    {code} += step(0.0, {s}) * {bit};")
        # The region across the nearest line differs in that line's bit only.
        b.lines.append(f"    if (abs({s}) < {nearest}) {{ {nearest} = abs({s}); {flip} = {s} >= 0.0 ? -{bit} : {bit}; }}")
    palette = _palette(b)
    col = b.let("vec3", f"mix(region_colour({code} + {flip}, {palette}), region_colour({code}, {palette}), "
                        f"0.5 + 0.5 * smoothstep(0.0, {EDGE} * pixel_size(), {nearest}))")
    return col, code


def _shapes(b: Builder, q: str) -> tuple[str, str]:
    """(colour, shape index) of flat shapes painted back to front over a flat background."""
    palette = _palette(b)
    col = b.let("vec3", f"region_colour(0.0, {palette})")
    code = b.let("float", "0.0")
    for i in range(int(b.rng.integers(SHAPES_RANGE[0], SHAPES_RANGE[1] + 1))):
        c = b.let("vec2", f"rot({b.param(0.0, 6.2832)}) * ({q} - {b.vec2(-1.0, 1.0)})")
        kind = b.choice(["polygon", "circle", "box", "star"])
        if kind == "polygon":
            d = f"sd_polygon({c}, {b.param(0.1, 0.5)}, {b.param(3.0, 7.99)})"
        elif kind == "circle":
            d = f"sd_circle({c}, {b.param(0.08, 0.45)})"
        elif kind == "box":
            d = f"sd_box({c}, {b.vec2(0.05, 0.5)}, 0.0)"
        else:
            d = f"sd_star({c}, {b.param(0.15, 0.5)}, {b.param(4.0, 7.99)}, {b.param(0.2, 0.5)})"
        cover = b.let("float", f"smoothstep({EDGE * 0.5} * pixel_size(), -{EDGE * 0.5} * pixel_size(), {d})")
        b.lines.append(f"    {col} = mix({col}, region_colour({float(i + 1)}, {palette}), {cover});")
        b.lines.append(f"    {code} = mix({code}, {float(i + 1)}, step(0.5, {cover}));")
    return col, code


def generate(seed: int) -> Program:
    """The ``flat`` program of ``seed``."""
    b = Builder(np.random.default_rng([int(seed), 0xF1A7]))
    q = b.let("vec2", f"rot({b.param(0.0, 6.2832)}) * p * {b.param(0.8, 1.3)}")
    layout = b.choice(["voronoi", "lines", "shapes"])
    col, code = {"voronoi": _voronoi, "lines": _lines, "shapes": _shapes}[layout](b, q)
    if b.rng.random() < 0.3:  # the few textures: stripes inside the regions whose code hashes low
        on = b.let("float", f"step(hash_cell(vec2({code}, 29.0)), {b.param(0.15, 0.4)})")
        s = f"smoothstep(-0.2, 0.2, sin(dot({q}, {b.vec2(-1.0, 1.0)}) * {b.param(15.0, 40.0)}))"
        col = b.let("vec3", f"mix({col}, {col} * 0.6, {on} * {s})")
    return b.program(f"flat-{seed}", "flat", col, HELPERS)
