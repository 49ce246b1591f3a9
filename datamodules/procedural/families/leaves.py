"""Family ``leaves``: the dead-leaves model, textured shapes occluding each other back to front.

Dead leaves (Matheron; Lee, Mumford and Huang 2001; one of Baradad et al. 2021's best noise processes,
REFERENCE.md section 10) stack random shapes whose radii follow a power law p(r) ~ r^-e on
[r_min, r_max] with e near 3, which makes the image statistics scale invariant, as natural images
are; each leaf hides what lies under it (occlusion), and here each is textured (stripes or noise).

The layout (centres, radii, angles, colours) comes from an integer-valued uniform hashed in the shader,
so one compiled program draws a different heap of leaves for every uniform vector; the seed bakes the
shape set and the texture kind; the leaf count is a uniform too. Per pixel the leaves are visited from the front (last
drawn) and the first one covering the pixel ends the loop, so the cost is at most ``LEAVES_RANGE[1]``
shape tests (most rejected by a bounding circle) plus one texture evaluation.
"""

from __future__ import annotations

import numpy as np

from .builder import Builder
from .program import Program

# Leaves per image above the bottom tiling (the front-to-back loop's bound): each costs ~4% of a
# `patterns` image on llvmpipe, so 12-36 keeps the family within ~3x of `patterns`.
LEAVES_RANGE = (12, 36)
# Exponent e of the radius density r^-e (3 is exactly scale invariant; Baradad et al. varied it).
EXPONENT_RANGE = (2.5, 3.5)

HELPERS = r"""
// Signed distance (unit-radius leaf coordinates) of leaf shape `kind`: 0 disc, 1 square, 2 ellipse,
// 3 polygon with 3-7 sides (from `h`).
float leaf_shape(vec2 l, float kind, float h) {
    if (kind < 0.5) return length(l) - 1.0;
    if (kind < 1.5) return sd_box(l, vec2(0.8), 0.0);
    if (kind < 2.5) return (length(l * vec2(1.0, 1.6 + 1.4 * h)) - 1.0) / (1.6 + 1.4 * h);
    return sd_polygon(l, 0.85, 3.0 + floor(5.0 * h));
}
"""


def generate(seed: int) -> Program:
    """The ``leaves`` program of ``seed``."""
    b = Builder(np.random.default_rng([int(seed), 0x1EAF]))
    shapes = b.choice([[0.0], [1.0], [2.0], [3.0], [0.0, 1.0, 2.0, 3.0], [0.0, 2.0]], [1, 1, 1, 1, 2, 1])
    heap = b.param(0.0, 65535.0)  # the layout: an integer hashed in the shader
    count = b.param(float(LEAVES_RANGE[0]), LEAVES_RANGE[1] + 0.99)
    r0, r1, e = b.param(0.04, 0.1), b.param(0.5, 1.0), b.param(*EXPONENT_RANGE)
    q = b.let("vec2", f"p * {b.param(0.9, 1.2)}")
    b.lines += [
        f"    float heap = floor({heap});",
        "    float hit = -1.0, edge = 1.0;",
        # The bottom of the heap, where no hashed leaf covers p: a tiling of large leaves (Worley cells),
        # so the image is covered as by an endless heap; cell ids number these leaves from 4096 on.
        f"    vec3 cell = cells({q} * {b.param(1.2, 2.5)} + 40.0, 1.0);",
        "    float bottom = 4096.0 + floor(cell.z * 4096.0);",
        "    edge = 0.5 * (cell.y - cell.x);",
        f"    vec2 local = {q} * 3.0;",
        f"    float pa = pow({r0}, 1.0 - {e}), pb = pow({r1}, 1.0 - {e}), inv = 1.0 / (1.0 - {e});",
        # The leaf count is a uniform: a bound the compiler cannot unroll (fast compiles), varied per image.
        f"    for (int i = int({count}) - 1; i >= 0; i--) {{  // front to back: the first leaf covering p is visible",
        "        uint bits = hash_bits(vec2(heap, float(i)));",
        "        vec2 centre = vec2(float(bits & 0xffffu), float(bits >> 16)) * (2.2 / 65535.0) - 1.1;",
        "        bits = mix_bits(bits ^ 0x5bd1e995u);",
        "        vec2 g = vec2(float(bits & 0xffffu), float(bits >> 16)) * (1.0 / 65535.0);",
        "        float r = pow(pa + g.x * (pb - pa), inv);  // radius ~ r^-e on [r0, r1] (inverse CDF)",
        f"        vec2 d0 = {q} - centre;",
        "        if (dot(d0, d0) > 1.7 * r * r) continue;  // outside the leaf's bounding circle",
        "        bits = mix_bits(bits + 0x9e3779b9u);",
        "        vec2 axis = normalize(vec2(float(bits & 0xffffu), float(bits >> 16)) * (1.0 / 65535.0) - 0.5 + 1e-4);",
        "        vec2 l = mat2(axis.x, -axis.y, axis.y, axis.x) * d0 / r;",
        f"        float kind = {_kind_expr(shapes)};",
        "        float d = leaf_shape(l, kind, g.y);",
        "        if (d < 0.0) { hit = float(i); local = l; edge = -d; break; }",
        "    }",
    ]
    palette = f"{b.vec3(0.3, 0.7)}, {b.vec3(0.25, 0.5)}, {b.vec3(0.5, 1.5)}, {b.vec3(0.0, 1.0)}"
    code = b.let("float", "hit < 0.0 ? bottom : hit + 2048.0")
    base = b.let("vec3", f"cosine_palette(hash_cell(vec2(heap, {code})), {palette}) * "
                         f"(0.6 + 0.5 * hash_cell(vec2(heap, {code} + 256.0)))")
    texture = b.choice(["stripes", "noise", "both"])
    freq = b.let("float", f"{b.param(2.0, 12.0)} * (0.5 + hash_cell(vec2(heap, {code} + 768.0)))")
    parts = []
    if texture in ("stripes", "both"):
        parts.append(f"0.5 + 0.5 * sin(local.x * {freq} + local.y * {b.param(-2.0, 2.0)})")
    if texture in ("noise", "both"):
        parts.append(f"fbm_value(local * {freq} * 0.5 + {code}, 3, 0.5)")
    tex = b.let("float", " * ".join(f"({x})" for x in parts))
    strength = b.param(0.3, 0.8)
    col = b.let("vec3", f"{base} * (1.0 - {strength} + {strength} * 1.4 * {tex})")
    # A slightly darker rim inside each leaf's border: a cue that it lies on top of its neighbours.
    col = b.let("vec3", f"{col} * mix({b.param(0.5, 0.9)}, 1.0, smoothstep(0.0, {b.param(0.03, 0.15)}, edge))")
    return b.program(f"leaves-{seed}", "leaves", col, HELPERS)


def _kind_expr(shapes: list[float]) -> str:
    """GLSL expression of a leaf's shape kind: the one kind, or one of several by a hash of the leaf."""
    if len(shapes) == 1:
        return f"{shapes[0]}"
    if shapes == [0.0, 2.0]:
        return "2.0 * float(bits >> 31)"
    return f"floor(float(bits >> 16) * ({float(len(shapes))} / 65536.0))"
