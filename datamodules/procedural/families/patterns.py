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

Each node kind (template, parameter ranges, weight, cost) is one entry of the tables in
:mod:`.pattern_nodes`; this module is the grammar that chooses among them. The same walk records the
program's *structure* (:class:`Structure`: the kinds chosen, where their parameters start, the structural
integers), from which the interpreted engine (:mod:`.pattern_interpreter`) renders the same program
with one shared compiled shader.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import pattern_nodes as nodes
from .builder import Builder
from .program import Program

# Per-pixel cost budget in "noise evaluations" (one lattice-noise octave = 1). Keeps the slowest
# programs within ~3x of the average so that a block's render time is predictable.
COST_BUDGET = 9.0
# Maximum nesting of combinators: depth 2 already gives up to 4 primitives per image (7 with masks).
MAX_DEPTH = 2


@dataclass
class Structure:
    """A program's structure as the grammar drew it, for the interpreter (:mod:`.pattern_interpreter`).

    Transforms are ``(kind, param offset, integer)``; every ``*_off`` is the index of the node's first
    parameter in the program's parameter vector; fields are referred to as ``("prim", i)`` / ``("comb", i)``.
    """

    frame_off: int = 0
    global_transforms: list = field(default_factory=list)
    prims: list = field(default_factory=list)  # dicts, see _primitive
    combs: list = field(default_factory=list)  # dicts: kind, off, a, b, m
    colours: list = field(default_factory=list)  # (kind, off, field)
    layering: tuple = ("single", 0, None, None)  # (kind, off, s field, m field)
    root: tuple | None = None  # the main field
    pending: list = field(default_factory=list)  # transforms drawn for the next primitive
    refs: dict = field(default_factory=dict)  # GLSL variable name -> field


class _Walk(Builder):
    """The builder plus the structure being recorded."""

    def __init__(self, rng: np.random.Generator):
        super().__init__(rng, COST_BUDGET)
        self.structure = Structure()

    def params(self, specs: tuple) -> tuple[list[str], int]:
        """Allocate parameters ``specs`` (see :mod:`.pattern_nodes`): their GLSL texts and first index."""
        offset = len(self.low)
        texts = []
        for spec in specs:
            dims = spec[2] if len(spec) == 3 else 1
            texts.append({1: self.param, 2: self.vec2, 3: self.vec3}[dims](spec[0], spec[1]))
        return texts, offset

    def emit(self, node: nodes.Node, *, shared: list[str] = (), integer: int = 0, **inputs) -> tuple[str, int]:
        """``node``'s template filled with freshly allocated parameters (after ``shared`` ones): (text, offset)."""
        texts, offset = self.params(node.params)
        return node.template.format(*shared, *texts, i0=str(integer), f0=f"{integer}.0", **inputs), offset

    def pick(self, group: nodes.Group) -> str:
        return self.choice(group.names, group.weights)


# ----------------------------------------------------------------------------- coordinate transforms
def _transform(b: _Walk, q: str) -> str:
    """One coordinate transform of the vec2 ``q``; returns the new variable."""
    kind = b.pick(nodes.TRANSFORMS)
    if kind == "warp" and not b.afford(nodes.WARP_AFFORD):
        kind = "ripple"
    integer = 0
    if kind in ("polar", "log_polar"):
        integer = int(b.rng.integers(*nodes.POLAR_N))
    elif kind == "warp":  # domain warping: displace by a vector of two fbm fields
        integer = int(b.rng.integers(*nodes.WARP_OCTAVES))
        b.cost += nodes.TRANSFORMS.kinds["warp"].cost * integer
    text, offset = b.emit(nodes.TRANSFORMS.kinds[kind], integer=integer, x=q)
    b.structure.pending.append((kind, offset, integer))
    return b.let("vec2", text)


def _coordinates(b: _Walk, q: str, max_steps: int) -> str:
    for _ in range(int(b.rng.integers(0, max_steps + 1))):
        q = _transform(b, q)
    return q


# ----------------------------------------------------------------------------- pattern primitives
def _shape(b: _Walk, q: str, record: dict) -> str:
    """A signed distance (float expression) of one simple shape around the origin."""
    kind = b.pick(nodes.SHAPES)
    text, frame_off = b.emit(nodes.SHAPE_FRAME, x=q)
    c = b.let("vec2", text)
    text, shape_off = b.emit(nodes.SHAPES.kinds[kind], x=c)
    record["shapes"].append((kind, frame_off, shape_off))
    return text


def _sdf_field(b: _Walk, q: str, record: dict) -> str:
    d = b.let("float", _shape(b, q, record))
    if b.rng.random() < nodes.SECOND_SHAPE:  # boolean / smooth combination with a second shape
        e = b.let("float", _shape(b, q, record))
        op = b.pick(nodes.SHAPE_OPS)
        shared, record["op_off"] = b.params(nodes.SHAPE_OPS.shared)
        record["op"] = op
        d = b.let("float", nodes.SHAPE_OPS.kinds[op].template.format(*shared, a=d, b=e))
    iso, record["iso_off"] = b.emit(nodes.ISO, d=d)
    mapping = b.pick(nodes.SDF_MAPPINGS)
    text, record["mapping_off"] = b.emit(nodes.SDF_MAPPINGS.kinds[mapping], iso=iso, d=d)
    record["mapping"] = mapping
    return text


def _primitive(b: _Walk, q: str) -> str:
    """A scalar pattern field (float variable, roughly in [0, 1]) on coordinates ``q``."""
    record = {"transforms": b.structure.pending, "shapes": [], "readout": "nearest", "readout_off": 0, "op": "min",
              "op_off": 0, "iso_off": 0, "mapping": "isolines", "mapping_off": 0, "integer": 0, "off": 0,
              "shaping": "none", "shaping_off": 0}
    b.structure.pending = []
    kind = b.pick(nodes.PRIMITIVES)
    if kind in ("fbm", "ridged") and not b.afford(2):
        kind = "sdf"
    if kind == "cells" and not b.afford(nodes.PRIMITIVES.kinds["cells"].cost):
        kind = "waves"
    b.cost += nodes.PRIMITIVES.kinds[kind].cost if kind not in ("fbm", "ridged") else 0.0
    if kind in ("fbm", "ridged"):
        octaves = int(min(b.rng.integers(*nodes.OCTAVES), COST_BUDGET - b.cost))
        b.cost += octaves * nodes.PRIMITIVES.kinds[kind].cost
        variant = "ridged" if kind == "ridged" else b.pick(nodes.FBM)
        node = nodes.PRIMITIVES.kinds["ridged"] if kind == "ridged" else nodes.FBM.kinds[variant]
        expr, record["off"] = b.emit(node, integer=octaves, x=q)
        kind, record["integer"] = variant, octaves
    elif kind == "cells":
        text, record["off"] = b.emit(nodes.PRIMITIVES.kinds["cells"], x=q)
        v = b.let("vec3", text)
        shared, record["readout_off"] = b.params(nodes.CELL_READOUTS.shared)
        record["readout"] = b.pick(nodes.CELL_READOUTS)
        expr = nodes.CELL_READOUTS.kinds[record["readout"]].template.format(*shared, v=v)
    elif kind == "sdf":
        expr = _sdf_field(b, q, record)
    else:
        expr, record["off"] = b.emit(nodes.PRIMITIVES.kinds[kind], x=q)
    record["kind"] = kind
    t = b.let("float", expr)
    # Distance fields are already shaped (fills, lines, glows); a threshold could erase a small shape.
    if kind != "sdf":
        t = _shape_values(b, t, record)
    b.structure.prims.append(record)
    b.structure.refs[t] = ("prim", len(b.structure.prims) - 1)
    return t


def _shape_values(b: _Walk, t: str, record: dict) -> str:
    """Sometimes reshape a field's values: contrast curves, thresholds, banding, folding."""
    op = b.pick(nodes.SHAPING)
    record["shaping"] = op
    if op == "none":
        return t
    text, record["shaping_off"] = b.emit(nodes.SHAPING.kinds[op], t=t)
    return b.let("float", text)


def _field(b: _Walk, q: str, depth: int) -> str:
    """A scalar field: a primitive, or a combinator of sub-fields (recursively, up to ``depth``)."""
    if depth == 0 or b.rng.random() < nodes.SPLIT or not b.afford(1):
        return _primitive(b, _coordinates(b, q, 2))
    a = _field(b, q, depth - 1)
    c = _field(b, q, depth - 1)
    refs = b.structure.refs
    op = b.pick(nodes.COMBINATORS)
    if op == "mask" and b.afford(1):
        m = _field(b, q, 0)
        text, offset = b.emit(nodes.MASK, a=a, b=c, m=m)
        record = {"kind": "masked", "off": offset, "a": refs[a], "b": refs[c], "m": refs[m]}
    else:
        shared, offset = b.params(nodes.COMBINATORS.shared)
        text = nodes.COMBINATORS.kinds[op].template.format(*shared, a=a, b=c)
        record = {"kind": op, "off": offset, "a": refs[a], "b": refs[c], "m": refs[a]}
    name = b.let("float", text)
    b.structure.combs.append(record)
    refs[name] = ("comb", len(b.structure.combs) - 1)
    return name


# ----------------------------------------------------------------------------- colour
def _colour(b: _Walk, t: str) -> str:
    kind = b.pick(nodes.COLOURS)
    text, offset = b.emit(nodes.COLOURS.kinds[kind], t=t)
    b.structure.colours.append((kind, offset, b.structure.refs[t]))
    return b.let("vec3", text)


def walk(seed: int) -> tuple[Program, Structure]:
    """The compiled ``patterns`` program of ``seed`` and the structure the grammar drew for it."""
    b = _Walk(np.random.default_rng([int(seed), 0x5EED]))
    text, b.structure.frame_off = b.emit(nodes.FRAME, x="p")
    q = b.let("vec2", text)
    # A global transform chain shared by every layer gives the whole image one symmetry / flow.
    q = _coordinates(b, q, 2)
    b.structure.global_transforms, b.structure.pending = b.structure.pending, []
    t = _field(b, q, MAX_DEPTH)
    b.structure.root = b.structure.refs[t]
    col = _colour(b, t)
    layering = b.pick(nodes.LAYERINGS)
    s = m = None
    col2 = col
    if layering == "shade":  # a second field modulates brightness, like lighting
        s = _field(b, q, 0)
    elif layering == "layer":  # a second coloured layer pasted through a soft mask
        s = _field(b, q, 1)
        col2 = _colour(b, s)
        m = _field(b, q, 0)
    if layering != "single":
        refs = b.structure.refs
        text, offset = b.emit(nodes.LAYERINGS.kinds[layering], col=col, col2=col2, s=s, m=m)
        b.structure.layering = (layering, offset, refs[s], None if m is None else refs[m])
        col = b.let("vec3", text)
    # The name predates the families (the renderer caches compiled programs by name).
    return b.program(f"grammar-{seed}", "patterns", col), b.structure


def generate(seed: int) -> Program:
    """The ``patterns`` program of ``seed`` (any non-negative int): same seed, same source and ranges."""
    return walk(seed)[0]
