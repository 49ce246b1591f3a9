"""The ``patterns`` grammar's node kinds as tables: each kind's GLSL template, parameter ranges, weight and cost.

Both engines are written from these tables, so a node kind is written once:

- the *compiled* engine (:mod:`.patterns`) draws a program's structure from a seed and emits the chosen
  templates with their parameters as ``P(i)`` (one GLSL program per seed, compiled by the driver);
- the *interpreted* engine (:mod:`.pattern_interpreter`) emits every kind of a slot into one
  ``switch`` and reads the kind, the parameter offsets and the structural integers from int uniforms,
  so one compiled shader renders every program.

A template is a ``str.format`` string. Placeholders: ``{0}``, ``{1}``, ... the node's parameters in
allocation order (a ``(low, high)`` pair is one float uniform ``P(i)``; ``(low, high, 2 | 3)`` a vec2 / vec3
of independent uniforms); ``{i0}`` a structural integer as an int, ``{f0}`` the same integer as a float;
named inputs (``{x}`` coordinates, ``{t}`` / ``{a}`` / ``{b}`` ... fields) are expressions of the caller.
A :class:`Group` is a choice among kinds: its weights (None: a uniform draw, which numpy draws differently
from equal weights, so the distinction is kept) and ``shared`` parameters that the grammar allocates for
the group whichever kind is chosen (the original generator evaluated every option before choosing).
``cost``: per-pixel cost in noise evaluations (one lattice-noise octave = 1), per octave for octave nodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TAU_RANGE = (0.0, 6.2832)  # angles and phases


@dataclass(frozen=True)
class Node:
    """One node kind. ``template`` None: the kind emits nothing (its input passes through)."""

    template: str | None
    params: tuple[tuple, ...] = ()
    weight: float | None = None
    cost: float = 0.0


@dataclass(frozen=True)
class Group:
    """A choice among node kinds (dict order is the draw order); ``shared``: parameters of the whole group."""

    kinds: dict[str, Node]
    uniform: bool = False  # draw with equal probabilities through ``rng.choice(n)`` (no weights)
    shared: tuple[tuple, ...] = field(default=())

    @property
    def names(self) -> list[str]:
        return list(self.kinds)

    @property
    def weights(self) -> list[float] | None:
        return None if self.uniform else [node.weight for node in self.kinds.values()]

    def index(self, name: str) -> int:
        return self.names.index(name)


def param_count(specs: tuple[tuple, ...]) -> int:
    """Float uniforms taken by parameter specs (a vec2 spec takes 2, a vec3 spec 3)."""
    return sum(spec[2] if len(spec) == 3 else 1 for spec in specs)


# The first coordinate frame of every program: rotate, scale and shift the tile coordinates p.
FRAME = Node("rot({0}) * {x} * {1} + {2}", (TAU_RANGE, (0.6, 1.5), (-0.5, 0.5, 2)))

# Coordinate transforms (vec2 -> vec2). ``polar`` / ``log_polar`` scale the angle by an integer n in 1..6 (i0)
# so the seam at +-pi stays continuous; ``warp`` displaces by two fbm fields of i0 in 2..3 octaves.
TRANSFORMS = Group({
    "rotate": Node("rot({0}) * {x}", (TAU_RANGE,), 2),
    "scale": Node("{x} * {0} + {1}", ((0.5, 2.0, 2), (-0.5, 0.5, 2)), 1),
    "polar": Node("vec2(atan({x}.y, {x}.x) * {f0} / PI, length({x}) * {0})", ((0.8, 3.0),), 1),
    "log_polar": Node("vec2(atan({x}.y, {x}.x) * {f0} / PI, log(length({x}) + 1e-3) * {0})", ((0.5, 2.0),), 0.7),
    "tile": Node("(fract({x} * {0} + 0.5) - 0.5) * 2.0", ((0.8, 2.5),), 1),
    "mirror": Node("mirror_tile({x}, {0}) * 2.0", ((0.8, 2.5),), 1.2),
    "kaleido": Node("kaleido(rot({0}) * {x}, {1})", (TAU_RANGE, (3.0, 12.99)), 1.6),
    "swirl": Node("rot({0} * exp(-dot({x}, {x}) * {1})) * {x}", ((-3.0, 3.0), (0.5, 2.0)), 1),
    "ripple": Node("{x} + {0} * sin({x}.yx * {1} + {2})", ((0.02, 0.2), (2.0, 12.0), TAU_RANGE), 1),
    "warp": Node("{x} + {3} * (vec2(fbm_grad({x} * {0} + {1}, {i0}, 0.5), fbm_grad({x} * {0} + {2}, {i0}, 0.5)) - 0.5)",
                 ((0.5, 2.0), (0.0, 50.0, 2), (0.0, 50.0, 2), (0.2, 1.2)), 1.6, cost=2.0),
})
POLAR_N = (1, 7)  # rng.integers range of the angular multiplier (high exclusive)
WARP_OCTAVES = (2, 4)
WARP_AFFORD = 6.0  # a warp is drawn only while this much budget is left (its most octaves x cost)

# Scalar pattern fields in [0, 1] on coordinates x. ``fbm`` draws one of FBM; ``sdf`` is the shapes sub-grammar.
PRIMITIVES = Group({
    "fbm": Node(None, weight=1.6, cost=1.0),
    "ridged": Node("fbm_ridged({x} * {0} + {1}, {i0}, {2})", ((0.8, 3.0), (0.0, 50.0, 2), (0.4, 0.65)), 1.0, cost=1.2),
    "cells": Node("cells({x} * {0} + {1}, {2})", ((1.5, 5.0), (0.0, 50.0, 2), (0.5, 1.0)), 1.3, cost=3.0),
    "waves": Node("waves({x}, {0}, {1}, {2}, {3})", ((2.0, 5.99), TAU_RANGE, (3.0, 14.0), TAU_RANGE), 1.0, cost=0.5),
    "stripes": Node("0.5 + 0.5 * sin({x}.x * {0} + {1})", ((3.0, 18.0), TAU_RANGE), 0.7),
    "rings": Node("0.5 + 0.5 * sin(length({x}) * {0} - {1})", ((4.0, 24.0), TAU_RANGE), 0.7),
    "checkers": Node("smoothstep(-{1}, {1}, sin({x}.x * {0}) * sin({x}.y * {0}))", ((2.0, 9.0), (0.05, 0.5)), 0.5),
    "sdf": Node(None, weight=1.6, cost=0.5),
})
OCTAVES = (2, 6)  # rng.integers range of fbm / ridged octaves, capped by the budget left
# Gradient fbm concentrates around 0.5: its contrast is stretched.
FBM = Group({
    "fbm_grad": Node("clamp((fbm_grad({x} * {0} + {1}, {i0}, {2}) - 0.5) * 1.8 + 0.5, 0.0, 1.0)",
                     PRIMITIVES.kinds["ridged"].params),
    "fbm_value": Node("fbm_value({x} * {0} + {1}, {i0}, {2})", PRIMITIVES.kinds["ridged"].params),
}, uniform=True)
# Read-outs of a Worley cells vec3 {v} (nearest distance, second nearest, cell id).
CELL_READOUTS = Group({
    "nearest": Node("clamp({v}.x, 0.0, 1.0)"),
    "edges": Node("smoothstep(0.0, {0}, {v}.y - {v}.x)"),
    "ids": Node("{v}.z"),
    "product": Node("clamp({v}.x * {v}.y * 1.5, 0.0, 1.0)"),
}, uniform=True, shared=((0.05, 0.4),))

# Signed-distance shapes: a random frame of the coordinates, then one shape's distance around the origin.
SHAPE_FRAME = Node("rot({0}) * ({x} - {1})", (TAU_RANGE, (-0.4, 0.4, 2)))
SHAPES = Group({
    "circle": Node("sd_circle({x}, {0})", ((0.15, 0.8),)),
    "box": Node("sd_box({x}, {0}, {1})", ((0.1, 0.7, 2), (0.0, 0.1))),
    "polygon": Node("sd_polygon({x}, {0}, {1})", ((0.15, 0.7), (3.0, 8.99))),
    "star": Node("sd_star({x}, {0}, {1}, {2})", ((0.3, 0.9), (3.0, 9.99), (0.2, 0.7))),
    "ring": Node("sd_ring({x}, {0}, {1})", ((0.2, 0.8), (0.02, 0.15))),
    "segment": Node("sd_segment({x}, {0}, {1})", ((0.2, 0.8), (0.02, 0.15))),
}, uniform=True)
SECOND_SHAPE = 0.6  # probability of a boolean / smooth combination with a second shape
SHAPE_OPS = Group({  # {0}: the smoothing width k (drawn for every op)
    "min": Node("min({a}, {b})"),
    "max": Node("max({a}, {b})"),
    "sub": Node("max({a}, -{b})"),
    "smin": Node("smin({a}, {b}, {0})"),
    "smax": Node("smax({a}, {b}, {0})"),
}, uniform=True, shared=((0.05, 0.4),))
# Iso-lines of the distance {d} vary everywhere; fills and glows are laid over a faint copy of them, so a
# small shape never leaves a flat, degenerate background.
ISO = Node("(0.5 + 0.5 * cos({d} * {0} + {1}))", ((8.0, 35.0), TAU_RANGE))
SDF_MAPPINGS = Group({
    "fill": Node("mix({iso}, smoothstep({0}, -{0}, {d}), {1})", ((0.005, 0.08), (0.6, 0.85)), 1),
    "isolines": Node("{iso}", (), 1.2),
    "glow": Node("mix({iso}, exp(-abs({d}) * {0}), {1})", ((2.0, 10.0), (0.6, 0.85)), 0.8),
})

# Value shaping of a (non-sdf) field {t}: contrast curves, thresholds near the middle, banding, folding.
SHAPING = Group({
    "none": Node(None, weight=3),
    "gamma": Node("pow(clamp({t}, 0.0, 1.0), {0})", ((0.4, 2.5),), 1),
    "threshold": Node("smoothstep({0} - {1}, {0} + {1}, {t})", ((0.4, 0.6), (0.04, 0.2)), 1),
    "bands": Node("fract({t} * {0})", ((1.5, 5.0),), 0.8),
    "fold": Node("abs(2.0 * {t} - 1.0)", (), 0.7),
    "invert": Node("1.0 - {t}", (), 0.5),
})

# Combinators of two fields {a}, {b}. Shared parameters: {0} the mix weight, {1} the weight of a mask that
# could not be afforded (then a plain mix). Products and minima of two sparse fields can be almost empty:
# they keep a quarter of the mean.
COMBINATORS = Group({
    "mix": Node("mix({a}, {b}, {0})", (), 1.2),
    "mul": Node("mix(sqrt(max({a} * {b}, 0.0)), 0.5 * ({a} + {b}), 0.25)", (), 1),
    "max": Node("max({a}, {b})", (), 0.8),
    "min": Node("mix(min({a}, {b}), 0.5 * ({a} + {b}), 0.25)", (), 0.8),
    "screen": Node("1.0 - (1.0 - {a}) * (1.0 - {b})", (), 0.8),
    "diff": Node("abs({a} - {b})", (), 0.6),
    "mask": Node("mix({a}, {b}, {1})", (), 1.4),
}, shared=((0.2, 0.8), (0.2, 0.8)))
# An affordable mask: a third field {m} selects between {a} and {b} through a soft threshold.
MASK = Node("mix({a}, {b}, smoothstep({0} - {1}, {0} + {1}, {m}))", ((0.35, 0.65), (0.01, 0.2)))
SPLIT = 0.35  # probability that a field which could still combine is a primitive

COLOURS = Group({
    "cosine": Node("cosine_palette({t}, {0}, {1}, {2}, {3})", ((0.3, 0.7, 3), (0.2, 0.5, 3), (0.3, 1.5, 3), (0.0, 1.0, 3)),
                   1.6),
    "hsv": Node("hsv2rgb(vec3({0} + {1} * {t}, {2}, mix({3}, 1.0, {t})))",
                ((0.0, 1.0), (-0.8, 0.8), (0.4, 1.0), (0.15, 0.6)), 1),
    "gradient": Node("gradient_map({t}, {0}, {1}, {2}, {3})", ((0.0, 0.4, 3), (0.0, 1.0, 3), (0.0, 1.0, 3), (0.6, 1.0, 3)),
                     1),
})

# How the colour image is finished: as is, shaded by a second field {s} (like lighting), or a second
# coloured layer {col2} pasted through a soft mask {m}.
LAYERINGS = Group({
    "single": Node("{col}", (), 1),
    "shade": Node("{col} * mix({0}, 1.2, {s})", ((0.3, 0.8),), 1.2),
    "layer": Node("mix({col}, {col2}, smoothstep({0} - {1}, {0} + {1}, {m}))", ((0.3, 0.7), (0.01, 0.2)), 1.2),
})
