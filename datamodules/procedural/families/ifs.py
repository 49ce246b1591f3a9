"""Family ``ifs``: escape-time and iterated-function-system fractals with bounded iterations.

Fractals are self-similar across scales, another trait of natural images (FractalDB-style
pre-training used IFS fractals). Kinds, chosen by the seed:

- ``julia``: z <- z^2 + c with c on (a jittered copy of) the boundary of the Mandelbrot set's main
  cardioid, c = s (e^{i theta}/2 - e^{2 i theta}/4), or of its period-2 disc, c = -1 + s e^{i theta}/4:
  near the boundary the Julia sets are connected and intricate (away from it they are dust or a blob);
- ``mandelbrot``: a zoom (2^-1 .. 2^-6) onto a point of the same boundary;
- ``kali``: p <- |p| / |p|^2 - c (Kali's folding map), coloured by the orbit's accumulated change;
- ``kifs``: kaleidoscopic IFS, p <- R(a) |p| * scale - offset, coloured by orbit traps.

Escape-time kinds colour by the smooth iteration count (continuous across bands) and their interior by an
orbit trap, so no region is flat. Iterations are bounded by the constants below (the per-pixel cost).
"""

from __future__ import annotations

import numpy as np

from .builder import Builder
from .program import Program

# Maximum iterations of the escape-time kinds (exit early on escape), and of the folding kinds (fixed).
ESCAPE_ITERATIONS = 64
FOLD_ITERATIONS = (6, 12)
# Squared escape radius: large, so the smooth iteration count is accurate.
BAILOUT = 256.0


def _boundary_point(b: Builder) -> str:
    """GLSL vec2: a point near the boundary of the main cardioid or of the period-2 disc."""
    theta, s = b.param(0.0, 6.2832), b.param(0.96, 1.03)
    if b.rng.random() < 0.7:
        return b.let("vec2", f"{s} * (0.5 * vec2(cos({theta}), sin({theta})) - "
                             f"0.25 * vec2(cos(2.0 * {theta}), sin(2.0 * {theta})))")
    return b.let("vec2", f"vec2(-1.0, 0.0) + {s} * 0.25 * vec2(cos({theta}), sin({theta}))")


def _escape(b: Builder, q: str, kind: str) -> str:
    """float in [0, 1]-ish: smooth-iteration / trap value of Julia or Mandelbrot iteration."""
    c0 = _boundary_point(b)
    if kind == "julia":
        z, c = b.let("vec2", f"{q} * {b.param(0.6, 1.4)}"), c0
    else:
        z, c = b.let("vec2", "vec2(0.0)"), b.let("vec2", f"{c0} + {q} * exp2(-{b.param(1.0, 6.0)})")
    trap_point = b.vec2(-0.5, 0.5)
    b.lines += [
        "    float n = 0.0, trap = 1e3;",
        f"    for (int i = 0; i < {ESCAPE_ITERATIONS}; i++) {{",
        f"        {z} = vec2({z}.x * {z}.x - {z}.y * {z}.y, 2.0 * {z}.x * {z}.y) + {c};",
        f"        trap = min(trap, length({z} - {trap_point}));",
        f"        if (dot({z}, {z}) > {BAILOUT}) break;",
        "        n += 1.0;",
        "    }",
    ]
    # Smooth count: n + 1 - log2(log|z|) (continuous where n jumps); interior (never escaped): the trap.
    smooth = b.let("float", f"(n + 1.0 - log2(max(log(dot({z}, {z})) * 0.5, 1e-6))) / {float(ESCAPE_ITERATIONS)}")
    inside = f"float(n >= {float(ESCAPE_ITERATIONS) - 0.5})"
    return b.let("float", f"mix(sqrt(max({smooth}, 0.0)) * {b.param(1.0, 4.0)}, 1.0 - clamp(trap, 0.0, 1.0), {inside})")


def _fold(b: Builder, q: str, kind: str) -> str:
    """float: orbit statistic of the Kali map or a kaleidoscopic IFS."""
    iterations = int(b.rng.integers(FOLD_ITERATIONS[0], FOLD_ITERATIONS[1] + 1))
    z = b.let("vec2", f"{q} * {b.param(0.5, 1.5)}")
    b.lines.append("    float acc = 0.0, trap = 1e3, last = 0.0;")
    if kind == "kali":
        c = b.vec2(0.4, 0.95)
        step = f"{z} = abs({z}) / max(dot({z}, {z}), 1e-4) - {c};"
    else:
        c, scale, angle = b.vec2(0.2, 1.2), b.param(1.3, 2.0), b.param(0.0, 6.2832)
        step = f"{z} = rot({angle}) * abs({z}) * {scale} - {c};"
    b.lines += [
        f"    for (int i = 0; i < {iterations}; i++) {{",
        f"        {step}",
        f"        float m = length({z});",
        "        acc += exp(-abs(m - last) * 4.0); last = m;",
        f"        trap = min(trap, min(abs({z}.x), abs({z}.y)));",
        "    }",
    ]
    mix_ = b.param(0.0, 1.0)
    return b.let("float", f"mix(acc / {float(iterations)}, exp(-trap * {b.param(2.0, 8.0)}), {mix_})")


def generate(seed: int) -> Program:
    """The ``ifs`` program of ``seed``."""
    b = Builder(np.random.default_rng([int(seed), 0x1F5]))
    q = b.let("vec2", f"rot({b.param(0.0, 6.2832)}) * p")
    kind = b.choice(["julia", "mandelbrot", "kali", "kifs"], [1.3, 0.8, 1, 1])
    t = _escape(b, q, kind) if kind in ("julia", "mandelbrot") else _fold(b, q, kind)
    bands = b.let("float", f"{t} * {b.param(1.0, 4.0)} + {b.param(0.0, 1.0)}")
    if b.rng.random() < 0.6:
        col = b.let("vec3", f"cosine_palette({bands}, {b.vec3(0.35, 0.65)}, {b.vec3(0.25, 0.5)}, "
                            f"{b.vec3(0.5, 1.5)}, {b.vec3(0.0, 1.0)})")
    else:
        col = b.let("vec3", f"hsv2rgb(vec3({bands}, {b.param(0.4, 0.9)}, clamp(0.25 + {t}, 0.0, 1.0)))")
    return b.program(f"ifs-{seed}", "ifs", col)
