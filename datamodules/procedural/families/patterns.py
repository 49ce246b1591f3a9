"""Family ``patterns``: 2D patterns from a grammar of transforms, fields, combinators and colourings.

A small grammar writes the body of ``vec3 image(vec2 p)`` (``p``: tile coordinates, y in [-1, 1]):

- coordinate transforms: rotation, scaling, translation, polar and log-polar maps, tiling and mirrored
  tiling, kaleidoscopes, swirls, sine ripples and domain warping by fbm noise;
- pattern primitives (scalar fields in [0, 1]): value and gradient noise, fbm, ridged fbm, Worley cells
  (nearest distance, edges, cell ids), sine-wave interference, stripes, rings, checkers, signed-distance
  shapes (circle, box, polygon, star, ring, segment) with boolean and smooth combinations;
- combinators: mix, products, min/max, screen, differences, masks (a field selecting between two others);
- colour mappings: cosine palettes, HSV sweeps and four-stop gradient maps, optionally layered.

Every continuous parameter is a *uniform* ``P(i)`` with a range (:class:`Program` ``low``/``high``), so
one compiled program yields many distinct images: the renderer draws a fresh parameter vector for
each image. Structural choices (which nodes, octave counts) are baked into the source by the seed.
Costs of noise evaluations are budgeted so that every program renders at a similar speed.
"""

from __future__ import annotations

import numpy as np

from .builder import Builder
from .program import Program

# Per-pixel cost budget in "noise evaluations" (one lattice-noise octave = 1). Keeps the slowest
# programs within ~3x of the average so that a block's render time is predictable.
COST_BUDGET = 9.0
# Maximum nesting of combinators: depth 2 already gives up to 4 primitives per image.
MAX_DEPTH = 2


# ----------------------------------------------------------------------------- coordinate transforms
def _transform(b: Builder, q: str) -> str:
    """One coordinate transform of the vec2 ``q``; returns the new variable."""
    kinds = ["rotate", "scale", "polar", "log_polar", "tile", "mirror", "kaleido", "swirl", "ripple", "warp"]
    weights = [2, 1, 1, 0.7, 1, 1.2, 1.6, 1, 1, 1.6]
    kind = b.choice(kinds, weights)
    if kind == "warp" and not b.afford(6):
        kind = "ripple"
    if kind == "rotate":
        return b.let("vec2", f"rot({b.param(0.0, 6.2832)}) * {q}")
    if kind == "scale":
        return b.let("vec2", f"{q} * {b.vec2(0.5, 2.0)} + {b.vec2(-0.5, 0.5)}")
    if kind == "polar":
        # The angular coordinate is scaled by an integer so the seam at +-pi stays continuous.
        n = int(b.rng.integers(1, 7))
        return b.let("vec2", f"vec2(atan({q}.y, {q}.x) * {n}.0 / PI, length({q}) * {b.param(0.8, 3.0)})")
    if kind == "log_polar":
        n = int(b.rng.integers(1, 7))
        return b.let("vec2", f"vec2(atan({q}.y, {q}.x) * {n}.0 / PI, log(length({q}) + 1e-3) * {b.param(0.5, 2.0)})")
    if kind == "tile":
        return b.let("vec2", f"(fract({q} * {b.param(0.8, 2.5)} + 0.5) - 0.5) * 2.0")
    if kind == "mirror":
        return b.let("vec2", f"mirror_tile({q}, {b.param(0.8, 2.5)}) * 2.0")
    if kind == "kaleido":
        return b.let("vec2", f"kaleido(rot({b.param(0.0, 6.2832)}) * {q}, {b.param(3.0, 12.99)})")
    if kind == "swirl":
        return b.let("vec2", f"rot({b.param(-3.0, 3.0)} * exp(-dot({q}, {q}) * {b.param(0.5, 2.0)})) * {q}")
    if kind == "ripple":
        return b.let("vec2", f"{q} + {b.param(0.02, 0.2)} * sin({q}.yx * {b.param(2.0, 12.0)} + {b.param(0.0, 6.2832)})")
    # Domain warping: displace by a vector of two fbm fields.
    octaves = int(b.rng.integers(2, 4))
    b.cost += 2 * octaves
    f, o1, o2 = b.param(0.5, 2.0), b.vec2(0.0, 50.0), b.vec2(0.0, 50.0)
    return b.let(
        "vec2",
        f"{q} + {b.param(0.2, 1.2)} * (vec2(fbm_grad({q} * {f} + {o1}, {octaves}, 0.5), "
        f"fbm_grad({q} * {f} + {o2}, {octaves}, 0.5)) - 0.5)",
    )


def _coordinates(b: Builder, q: str, max_steps: int) -> str:
    for _ in range(int(b.rng.integers(0, max_steps + 1))):
        q = _transform(b, q)
    return q


# ----------------------------------------------------------------------------- pattern primitives
def _shape(b: Builder, q: str) -> str:
    """A signed distance (float expression) of one simple shape around the origin."""
    kind = b.choice(["circle", "box", "polygon", "star", "ring", "segment"])
    c = b.let("vec2", f"rot({b.param(0.0, 6.2832)}) * ({q} - {b.vec2(-0.4, 0.4)})")
    if kind == "circle":
        return f"sd_circle({c}, {b.param(0.15, 0.8)})"
    if kind == "box":
        return f"sd_box({c}, {b.vec2(0.1, 0.7)}, {b.param(0.0, 0.1)})"
    if kind == "polygon":
        return f"sd_polygon({c}, {b.param(0.15, 0.7)}, {b.param(3.0, 8.99)})"
    if kind == "star":
        return f"sd_star({c}, {b.param(0.3, 0.9)}, {b.param(3.0, 9.99)}, {b.param(0.2, 0.7)})"
    if kind == "ring":
        return f"sd_ring({c}, {b.param(0.2, 0.8)}, {b.param(0.02, 0.15)})"
    return f"sd_segment({c}, {b.param(0.2, 0.8)}, {b.param(0.02, 0.15)})"


def _sdf_field(b: Builder, q: str) -> str:
    d = b.let("float", _shape(b, q))
    if b.rng.random() < 0.6:  # boolean / smooth combination with a second shape
        e = b.let("float", _shape(b, q))
        op = b.choice(["min", "max", "sub", "smin", "smax"])
        k = b.param(0.05, 0.4)
        expr = {"min": f"min({d}, {e})", "max": f"max({d}, {e})", "sub": f"max({d}, -{e})",
                "smin": f"smin({d}, {e}, {k})", "smax": f"smax({d}, {e}, {k})"}[op]
        d = b.let("float", expr)
    # Iso-lines of the distance vary everywhere; filled shapes and glows are laid over a faint copy of
    # them, so a small shape never leaves a flat, degenerate background.
    iso = f"(0.5 + 0.5 * cos({d} * {b.param(8.0, 35.0)} + {b.param(0.0, 6.2832)}))"
    mapping = b.choice(["fill", "isolines", "glow"], [1, 1.2, 0.8])
    if mapping == "fill":
        w = b.param(0.005, 0.08)
        return f"mix({iso}, smoothstep({w}, -{w}, {d}), {b.param(0.6, 0.85)})"
    if mapping == "isolines":
        return iso
    return f"mix({iso}, exp(-abs({d}) * {b.param(2.0, 10.0)}), {b.param(0.6, 0.85)})"


def _primitive(b: Builder, q: str) -> str:
    """A scalar pattern field (float variable, roughly in [0, 1]) on coordinates ``q``."""
    kinds = ["fbm", "ridged", "cells", "waves", "stripes", "rings", "checkers", "sdf"]
    weights = [1.6, 1.0, 1.3, 1.0, 0.7, 0.7, 0.5, 1.6]
    kind = b.choice(kinds, weights)
    if kind in ("fbm", "ridged") and not b.afford(2):
        kind = "sdf"
    if kind == "cells" and not b.afford(3):
        kind = "waves"
    if kind in ("fbm", "ridged"):
        octaves = int(min(b.rng.integers(2, 6), COST_BUDGET - b.cost))
        b.cost += octaves * (1.2 if kind == "ridged" else 1.0)
        fn = "fbm_ridged" if kind == "ridged" else b.choice(["fbm_grad", "fbm_value"])
        expr = f"{fn}({q} * {b.param(0.8, 3.0)} + {b.vec2(0.0, 50.0)}, {octaves}, {b.param(0.4, 0.65)})"
        if fn == "fbm_grad":  # gradient fbm concentrates around 0.5: stretch its contrast
            expr = f"clamp(({expr} - 0.5) * 1.8 + 0.5, 0.0, 1.0)"
    elif kind == "cells":
        b.cost += 3
        v = b.let("vec3", f"cells({q} * {b.param(1.5, 5.0)} + {b.vec2(0.0, 50.0)}, {b.param(0.5, 1.0)})")
        expr = b.choice([f"clamp({v}.x, 0.0, 1.0)", f"smoothstep(0.0, {b.param(0.05, 0.4)}, {v}.y - {v}.x)", f"{v}.z",
                         f"clamp({v}.x * {v}.y * 1.5, 0.0, 1.0)"])
    elif kind == "waves":
        b.cost += 0.5
        expr = f"waves({q}, {b.param(2.0, 5.99)}, {b.param(0.0, 6.2832)}, {b.param(3.0, 14.0)}, {b.param(0.0, 6.2832)})"
    elif kind == "stripes":
        expr = f"0.5 + 0.5 * sin({q}.x * {b.param(3.0, 18.0)} + {b.param(0.0, 6.2832)})"
    elif kind == "rings":
        expr = f"0.5 + 0.5 * sin(length({q}) * {b.param(4.0, 24.0)} - {b.param(0.0, 6.2832)})"
    elif kind == "checkers":
        f, w = b.param(2.0, 9.0), b.param(0.05, 0.5)
        expr = f"smoothstep(-{w}, {w}, sin({q}.x * {f}) * sin({q}.y * {f}))"
    else:
        b.cost += 0.5
        expr = _sdf_field(b, q)
    t = b.let("float", expr)
    # Distance fields are already shaped (fills, lines, glows); a threshold could erase a small shape.
    return t if kind == "sdf" else _shape_values(b, t)


def _shape_values(b: Builder, t: str) -> str:
    """Sometimes reshape a field's values: contrast curves, thresholds, banding, folding."""
    op = b.choice(["none", "gamma", "threshold", "bands", "fold", "invert"], [3, 1, 1, 0.8, 0.7, 0.5])
    if op == "none":
        return t
    if op == "gamma":
        return b.let("float", f"pow(clamp({t}, 0.0, 1.0), {b.param(0.4, 2.5)})")
    if op == "threshold":  # near the middle and not too sharp: fields rarely span all of [0, 1]
        c, w = b.param(0.4, 0.6), b.param(0.04, 0.2)
        return b.let("float", f"smoothstep({c} - {w}, {c} + {w}, {t})")
    if op == "bands":
        return b.let("float", f"fract({t} * {b.param(1.5, 5.0)})")
    if op == "fold":
        return b.let("float", f"abs(2.0 * {t} - 1.0)")
    return b.let("float", f"1.0 - {t}")


def _field(b: Builder, q: str, depth: int) -> str:
    """A scalar field: a primitive, or a combinator of sub-fields (recursively, up to ``depth``)."""
    if depth == 0 or b.rng.random() < 0.35 or not b.afford(1):
        return _primitive(b, _coordinates(b, q, 2))
    a = _field(b, q, depth - 1)
    c = _field(b, q, depth - 1)
    op = b.choice(["mix", "mul", "max", "min", "screen", "diff", "mask"], [1.2, 1, 0.8, 0.8, 0.8, 0.6, 1.4])
    if op == "mask" and b.afford(1):
        m = _field(b, q, 0)
        th, w = b.param(0.35, 0.65), b.param(0.01, 0.2)
        return b.let("float", f"mix({a}, {c}, smoothstep({th} - {w}, {th} + {w}, {m}))")
    expr = {
        "mix": f"mix({a}, {c}, {b.param(0.2, 0.8)})",
        # Products and minima of two sparse fields can be almost empty: keep a quarter of the mean.
        "mul": f"mix(sqrt(max({a} * {c}, 0.0)), 0.5 * ({a} + {c}), 0.25)",
        "max": f"max({a}, {c})",
        "min": f"mix(min({a}, {c}), 0.5 * ({a} + {c}), 0.25)",
        "screen": f"1.0 - (1.0 - {a}) * (1.0 - {c})",
        "diff": f"abs({a} - {c})",
        "mask": f"mix({a}, {c}, {b.param(0.2, 0.8)})",
    }[op]
    return b.let("float", expr)


# ----------------------------------------------------------------------------- colour
def _colour(b: Builder, t: str) -> str:
    kind = b.choice(["cosine", "hsv", "gradient"], [1.6, 1, 1])
    if kind == "cosine":
        expr = (f"cosine_palette({t}, {b.vec3(0.3, 0.7)}, {b.vec3(0.2, 0.5)}, "
                f"{b.vec3(0.3, 1.5)}, {b.vec3(0.0, 1.0)})")
    elif kind == "hsv":
        expr = (f"hsv2rgb(vec3({b.param(0.0, 1.0)} + {b.param(-0.8, 0.8)} * {t}, {b.param(0.4, 1.0)}, "
                f"mix({b.param(0.15, 0.6)}, 1.0, {t})))")
    else:
        expr = f"gradient_map({t}, {b.vec3(0.0, 0.4)}, {b.vec3(0.0, 1.0)}, {b.vec3(0.0, 1.0)}, {b.vec3(0.6, 1.0)})"
    return b.let("vec3", expr)


def generate(seed: int) -> Program:
    """The ``patterns`` program of ``seed`` (any non-negative int): same seed, same source and ranges."""
    b = Builder(np.random.default_rng([int(seed), 0x5EED]), COST_BUDGET)
    q = b.let("vec2", f"rot({b.param(0.0, 6.2832)}) * p * {b.param(0.6, 1.5)} + {b.vec2(-0.5, 0.5)}")
    # A global transform chain shared by every layer gives the whole image one symmetry / flow.
    q = _coordinates(b, q, 2)
    t = _field(b, q, MAX_DEPTH)
    col = _colour(b, t)
    layering = b.choice(["single", "shade", "layer"], [1, 1.2, 1.2])
    if layering == "shade":  # a second field modulates brightness, like lighting
        s = _field(b, q, 0)
        col = b.let("vec3", f"{col} * mix({b.param(0.3, 0.8)}, 1.2, {s})")
    elif layering == "layer":  # a second coloured layer pasted through a soft mask
        s = _field(b, q, 1)
        col2 = _colour(b, s)
        m = _field(b, q, 0)
        th, w = b.param(0.3, 0.7), b.param(0.01, 0.2)
        col = b.let("vec3", f"mix({col}, {col2}, smoothstep({th} - {w}, {th} + {w}, {m}))")
    # The name predates the families (the renderer caches compiled programs by name).
    return b.program(f"grammar-{seed}", "patterns", col)
