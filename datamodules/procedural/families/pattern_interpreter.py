"""The interpreted ``patterns`` engine: one compiled shader (4 variants) renders every program of the grammar.

A compiled ``patterns`` program bakes its structure (which transforms, primitives, combinators, colourings)
into its GLSL, so each program costs a compile + LLVM JIT (~0.55 s on llvmpipe). Here the structure is
data: :func:`pack` turns the structure the grammar drew for a seed (:func:`.patterns.walk`) into an int
vector, uploaded as ``uniform int u_struct[]`` once per program, and :func:`source` (generated from the
node tables of :mod:`.pattern_nodes`, so no template is written twice) evaluates it:

- a fixed frame, then up to 2 global transform slots (a ``do``-loop over the chain, each slot a
  ``switch`` over every transform kind);
- a loop over the program's primitives (up to :data:`MAX_PRIMS`, the grammar's maximum), each with up to
  2 transform slots, a ``switch`` over every primitive kind (the ``sdf`` kind with two shape slots, the
  shape operation and the iso-line mapping) and a value-shaping slot; results go to ``v[i]``;
- a loop over the combinators (up to :data:`MAX_COMBS`) in the order the grammar made them, each reading
  its operands ``v[a]``, ``v[b]``, ``v[m]`` by index and writing ``v[MAX_PRIMS + c]``;
- two colour slots and a layering slot.

The topology covers the whole grammar (no cap): every seed's interpreted program computes the same
expressions on the same parameter vector (``low`` / ``high`` are the compiled program's), so it renders
the same image up to floating-point contraction differences (tests/test_interpreted_programs.py).

Cost on llvmpipe (Mesa 22.3, measured here): its fragment shaders run 8 pixels per SIMD lane group under
an execution mask, and uniform branches are *not* skipped: every case of a ``switch`` runs for every pixel
(masked), and a loop runs its body once more with an empty mask (measured: a switch selecting one fbm
among 8 kinds cost as much as evaluating all 8). So a slot costs the sum of all its kinds. Mitigations, all
keeping the images identical: ``do``-loops over the primitives and combinators keep the cost proportional
to the slots a program uses; octave counts are 0 for unselected kinds and cells visit their neighbours
only in cells slots (one masked iteration instead of many); the costliest kinds (:data:`OPTIONAL_KINDS`)
are compiled only into the variants of programs that use them. What is left is ~4-8x a compiled draw at
64 px (``programs/interpreted_draw_cost_*`` in benchmarks/results/render_engines*.json). On a GPU a
uniform branch is a real jump, so the interpreter should cost about what a compiled program costs there.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from . import pattern_nodes as nodes
from .patterns import Structure, walk
from .program import Program

MAX_PRIMS = 11  # the grammar's most primitives: 7 in the depth-2 field (with masks) + 4 in a layer
MAX_COMBS = 4  # 3 in the depth-2 field + 1 in a layer's depth-1 field
MAX_PARAMS = 320  # u_params length (the most seen over 20,000 seeds: 150)
PRIMITIVE_KINDS = ["fbm_grad", "fbm_value", "ridged", "cells", "waves", "stripes", "rings", "checkers", "sdf"]
COMBINATOR_KINDS = [*nodes.COMBINATORS.names, "masked"]
# The costliest kinds under llvmpipe's masked execution (each runs, masked, in every slot of its type:
# warps two fbm octaves per transform slot, sdf a shape switch, its iso-lines and mappings) are compiled only
# into the interpreter variants of programs that use them: 2^2 = 4 variants, each compiled once per
# worker process and image size (then served by Mesa's disk cache), instead of one shader with every kind.
OPTIONAL_KINDS = ("warp", "sdf")

# u_struct layout: a header, 2 global transform records, MAX_PRIMS primitive records, MAX_COMBS combinators.
H_PRIMS, H_COMBS, H_GLOBALS, H_FRAME, H_COLOUR1, H_COLOUR2, H_LAYER = 0, 1, 2, 3, 4, 7, 10  # colours: kind, off, field
T_REC = 3  # transform record: kind, param offset, integer
GLOBAL_BASE = 14
PRIM_BASE = GLOBAL_BASE + 2 * T_REC
# Primitive record: [0] transforms, [1:7] 2 transform records, [7] kind, [8] offset, [9] integer (octaves),
# [10] cells read-out, [11] its offset, [12] shapes, [13:16] [16:19] shape records (kind, frame offset,
# shape offset), [19] shape op, [20] its offset, [21] iso offset, [22] sdf mapping, [23] its offset,
# [24] value shaping, [25] its offset.
PRIM_REC = 26
COMB_BASE = PRIM_BASE + MAX_PRIMS * PRIM_REC
COMB_REC = 5  # kind, offset, a, b, m
NUM_STRUCT = COMB_BASE + MAX_COMBS * COMB_REC


# ----------------------------------------------------------------------------- structure -> int vector
def _ref(field: tuple | None) -> int:
    if field is None:
        return 0
    kind, index = field
    return index if kind == "prim" else MAX_PRIMS + index


def pack(structure: Structure) -> np.ndarray:
    """int32 [NUM_STRUCT]: the u_struct vector of ``structure`` (layout above)."""
    s = np.zeros(NUM_STRUCT, dtype=np.int32)
    if len(structure.prims) > MAX_PRIMS or len(structure.combs) > MAX_COMBS:
        raise ValueError(f"a patterns program with {len(structure.prims)} primitives / {len(structure.combs)} "
                         f"combinators exceeds the interpreter's {MAX_PRIMS} / {MAX_COMBS}; raise MAX_PRIMS / MAX_COMBS")

    def transforms(base: int, chain: list) -> None:
        for j, (kind, offset, integer) in enumerate(chain):
            s[base + T_REC * j : base + T_REC * (j + 1)] = (nodes.TRANSFORMS.index(kind), offset, integer)

    s[H_PRIMS], s[H_COMBS], s[H_GLOBALS], s[H_FRAME] = len(structure.prims), len(structure.combs), \
        len(structure.global_transforms), structure.frame_off
    transforms(GLOBAL_BASE, structure.global_transforms)
    for i, p in enumerate(structure.prims):
        r = PRIM_BASE + i * PRIM_REC
        s[r] = len(p["transforms"])
        transforms(r + 1, p["transforms"])
        s[r + 7 : r + 13] = (PRIMITIVE_KINDS.index(p["kind"]), p["off"], p["integer"],
                             nodes.CELL_READOUTS.index(p["readout"]), p["readout_off"], len(p["shapes"]))
        for k, (kind, frame_off, shape_off) in enumerate(p["shapes"]):
            s[r + 13 + 3 * k : r + 16 + 3 * k] = (nodes.SHAPES.index(kind), frame_off, shape_off)
        s[r + 19 : r + 26] = (nodes.SHAPE_OPS.index(p["op"]), p["op_off"], p["iso_off"],
                              nodes.SDF_MAPPINGS.index(p["mapping"]), p["mapping_off"],
                              nodes.SHAPING.index(p["shaping"]), p["shaping_off"])
    for c, comb in enumerate(structure.combs):
        r = COMB_BASE + c * COMB_REC
        s[r : r + COMB_REC] = (COMBINATOR_KINDS.index(comb["kind"]), comb["off"], _ref(comb["a"]), _ref(comb["b"]),
                               _ref(comb["m"]))
    for base, (kind, offset, field) in zip((H_COLOUR1, H_COLOUR2), structure.colours, strict=False):
        s[base : base + 3] = (nodes.COLOURS.index(kind), offset, _ref(field))
    if len(structure.colours) == 1:  # the second colour slot repeats the first (computed, then unused)
        s[H_COLOUR2 : H_COLOUR2 + 3] = s[H_COLOUR1 : H_COLOUR1 + 3]
    kind, offset, s_field, m_field = structure.layering
    s[H_LAYER : H_LAYER + 4] = (nodes.LAYERINGS.index(kind), offset, _ref(s_field), _ref(m_field))
    return s


def variant(structure: Structure) -> tuple[str, ...]:
    """The :data:`OPTIONAL_KINDS` that ``structure`` uses (sorted): which interpreter variant renders it."""
    chains = [structure.global_transforms] + [p["transforms"] for p in structure.prims]
    used = {kind for chain in chains for kind, _, _ in chain} | {p["kind"] for p in structure.prims}
    return tuple(kind for kind in OPTIONAL_KINDS if kind in used)


def interpreted(seed: int) -> Program:
    """The ``patterns`` program of ``seed`` for the interpreted engine: the compiled program's name and
    parameter ranges, the packed structure and the source of its interpreter variant (:func:`source`;
    the renderer compiles each variant once)."""
    program, structure = walk(seed)
    return Program(name=program.name, source=source(variant(structure)), kind="grammar", low=program.low,
                   high=program.high, family="patterns", structure=pack(structure))


# ----------------------------------------------------------------------------- GLSL, from the tables
def _fill(template: str, specs: tuple, offset: str = "o", count: str = "n", **inputs) -> str:
    """``template`` with its parameters read at ``offset`` (a GLSL int expression), its integer as ``n``
    (as a float) and ``count`` (as an int: loop counts, see :func:`_group_cases`)."""
    texts, k = [], 0
    for spec in specs:
        dims = spec[2] if len(spec) == 3 else 1
        parts = [f"P({offset} + {k + d})" for d in range(dims)]
        texts.append(parts[0] if dims == 1 else f"vec{dims}({', '.join(parts)})")
        k += dims
    return template.format(*texts, i0=count, f0="float(n)", **inputs)


def _switch(selector: str, target: str, cases: list[str | None]) -> str:
    """``switch (selector)`` assigning ``cases[i]`` (GLSL expressions) to ``target``; None: a case left out."""
    body = "".join(f"        case {i}: {target} = {expr}; break;\n" for i, expr in enumerate(cases) if expr is not None)
    return f"    switch ({selector}) {{\n{body}    }}\n"


def _group_cases(group: nodes.Group, passthrough: str, selector: str = "kind", **inputs) -> list[str]:
    """The expressions of every kind of ``group``. An integer used as a loop count (octaves) is 0 unless the
    kind is selected: llvmpipe runs unselected cases masked, so a loop left at the slot's integer would
    run that many masked octaves; at 0 it runs one."""
    specs = group.shared
    return [passthrough if node.template is None else
            _fill(node.template, specs + node.params, count=f"({selector} == {i} ? n : 0)", **inputs)
            for i, node in enumerate(group.kinds.values())]


@cache
def source(kinds: tuple[str, ...] = tuple(OPTIONAL_KINDS)) -> str:
    """The interpreter with the :data:`OPTIONAL_KINDS` in ``kinds`` compiled in (and every other kind)."""
    T, Pn = nodes.TRANSFORMS, nodes.PRIMITIVES
    transform_cases = _group_cases(T, "x", x="x")
    if "warp" not in kinds:
        transform_cases[T.index("warp")] = None
    primitive_cases = []
    for i, kind in enumerate(PRIMITIVE_KINDS):
        octaves = f"(kind == {i} ? n : 0)"  # see _group_cases
        if kind in OPTIONAL_KINDS and kind not in kinds:
            primitive_cases.append(None)
        elif kind in nodes.FBM.kinds:
            primitive_cases.append(_fill(nodes.FBM.kinds[kind].template, nodes.FBM.kinds[kind].params, count=octaves,
                                         x="x"))
        elif kind == "cells":
            primitive_cases.append("cells_readout(r, x)")
        elif kind == "sdf":
            primitive_cases.append("sdf_field(r, x)")
        else:
            primitive_cases.append(_fill(Pn.kinds[kind].template, Pn.kinds[kind].params, count=octaves, x="x"))
    cells, cells_kind = Pn.kinds["cells"], PRIMITIVE_KINDS.index("cells")
    comb_cases = _group_cases(nodes.COMBINATORS, "a", a="a", b="b") + [_fill(nodes.MASK.template, nodes.MASK.params,
                                                                              a="a", b="b", m="m")]
    return (
        "#define NV " + str(MAX_PRIMS + MAX_COMBS) + "\n"
        "vec2 transform_slot(int r, vec2 x) {\n    int kind = S(r), o = S(r + 1), n = S(r + 2);\n    vec2 y = x;\n"
        + _switch("kind", "y", transform_cases) + "    return y;\n}\n"
        # A chain of `count` (0..2) transform records from r; do-while: a chain of 0 still costs one slot.
        "vec2 transforms(int r, int count, vec2 x) {\n    int j = 0;\n"
        "    do {\n        vec2 y = transform_slot(r + " + str(T_REC) + " * j, x);\n        if (j < count) x = y;\n"
        "        j++;\n    } while (j < count);\n    return x;\n}\n"
        # Cells visit their 9 neighbours only when the slot is cells (the library's cells(p, jitter, count)).
        f"float cells_readout(int r, vec2 x) {{\n    int o = S(r + 8), count = S(r + 7) == {cells_kind} ? 9 : 0;\n"
        f"    vec3 v = {_fill(cells.template, cells.params, x='x')[:-1]}, count);\n    o = S(r + 11);\n    float t = 0.0;\n"
        + _switch("S(r + 10)", "t", _group_cases(nodes.CELL_READOUTS, "t", v="v")) + "    return t;\n}\n"
        "float shape_slot(int r, vec2 x) {\n    int o = S(r + 1);\n"
        f"    vec2 c = {_fill(nodes.SHAPE_FRAME.template, nodes.SHAPE_FRAME.params, x='x')};\n"
        "    o = S(r + 2);\n    float d = 0.0;\n"
        + _switch("S(r)", "d", _group_cases(nodes.SHAPES, "d", x="c")) + "    return d;\n}\n"
        # A loop over the slot's shapes (0 when the slot is not sdf: one masked shape instead of two).
        "float sdf_field(int r, vec2 x) {\n    float d = 0.0, e = 0.0;\n    int k = 0;\n"
        "    do {\n        float y = shape_slot(r + 13 + 3 * k, x);\n        if (k == 0) d = y; else e = y;\n"
        "        k++;\n    } while (k < S(r + 12));\n"
        "    int o = S(r + 20);\n    float both = d;\n"
        + _switch("S(r + 19)", "both", _group_cases(nodes.SHAPE_OPS, "d", a="d", b="e"))
        + "    if (S(r + 12) > 1) d = both;\n    o = S(r + 21);\n"
        f"    float iso = {_fill(nodes.ISO.template, nodes.ISO.params, d='d')};\n    o = S(r + 23);\n    float t = iso;\n"
        + _switch("S(r + 22)", "t", _group_cases(nodes.SDF_MAPPINGS, "iso", iso="iso", d="d")) + "    return t;\n}\n"
        "float primitive(int r, vec2 x) {\n    int kind = S(r + 7), o = S(r + 8), n = S(r + 9);\n    float t = 0.0;\n"
        + _switch("kind", "t", primitive_cases)
        + "    o = S(r + 25);\n    float shaped = t;\n"
        + _switch("S(r + 24)", "shaped", _group_cases(nodes.SHAPING, "t", t="t")) + "    return shaped;\n}\n"
        "vec3 colour_slot(int r, float t) {\n    int o = S(r + 1);\n    vec3 c = vec3(0.0);\n"
        + _switch("S(r)", "c", _group_cases(nodes.COLOURS, "vec3(t)", t="t")) + "    return c;\n}\n"
        "vec3 image(vec2 p) {\n    int o = S(" + str(H_FRAME) + ");\n"
        f"    vec2 q = {_fill(nodes.FRAME.template, nodes.FRAME.params, x='p')};\n"
        f"    q = transforms({GLOBAL_BASE}, S({H_GLOBALS}), q);\n"
        "    float v[NV];\n    for (int k = 0; k < NV; k++) v[k] = 0.0;\n"
        f"    int i = 0;\n    do {{\n        int r = {PRIM_BASE} + {PRIM_REC} * i;\n"
        "        v[i] = primitive(r, transforms(r + 1, S(r), q));\n"
        f"        i++;\n    }} while (i < S({H_PRIMS}));\n"
        f"    int c = 0;\n    do {{\n        int r = {COMB_BASE} + {COMB_REC} * c;\n"
        "        float a = v[S(r + 2)], b = v[S(r + 3)], m = v[S(r + 4)];\n        int o = S(r + 1);\n"
        "        float y = a;\n"
        + _switch("S(r)", "y", comb_cases).replace("\n    ", "\n        ").replace("    switch", "        switch", 1)
        + f"        if (c < S({H_COMBS})) v[{MAX_PRIMS} + c] = y;\n        c++;\n    }} while (c < S({H_COMBS}));\n"
        f"    vec3 col = colour_slot({H_COLOUR1}, v[S({H_COLOUR1 + 2})]);\n"
        f"    vec3 col2 = colour_slot({H_COLOUR2}, v[S({H_COLOUR2 + 2})]);\n"
        f"    float s = v[S({H_LAYER + 2})], m = v[S({H_LAYER + 3})];\n    o = S({H_LAYER + 1});\n    vec3 out_col = col;\n"
        + _switch(f"S({H_LAYER})", "out_col", _group_cases(nodes.LAYERINGS, "col", col="col", col2="col2", s="s", m="m"))
        + "    return out_col;\n}\n"
    )


SOURCE = source()  # every kind: renders every program
