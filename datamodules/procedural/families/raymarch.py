"""Family ``raymarch``: 3D signed-distance scenes, ray-marched under a perspective camera and lit.

A 2D grammar lacks shape-from-shading, perspective and occlusion cues; shaders21k holds many raymarched
scenes (REFERENCE.md section 10). The seed writes a scene function ``vec2 map(vec3 q)`` (distance,
material id): a ground plane (usually), 2-3 objects (sphere, rounded box, torus, capsule, cylinder,
octahedron) blended by smooth unions, one of them possibly repeated on a bounded grid (domain
repetition). Uniforms set the camera (orbit angle, elevation, distance, focal length), object placements
and sizes, the blend radius, the sun direction, material colours, texture scales and fog density.

Shading: Lambert diffuse + Blinn-Phong specular from a sun, soft shadows (penumbra from the closest
miss along the shadow ray), ambient occlusion (distance samples along the normal), a sky fill light,
procedural surface textures (checkers, stripes or value noise on the hit point) and distance fog
towards the sky colour.

Per-pixel cost is bounded: at most ``MARCH_STEPS`` scene evaluations for the primary ray (it exits on
a hit or past ``FAR``), 4 for the normal, ``SHADOW_STEPS`` for the shadow and ``AO_SAMPLES`` for the
occlusion; these were chosen so the family renders within ~3x of ``patterns`` at 224 px on llvmpipe
(``make bench-render``).
"""

from __future__ import annotations

import numpy as np

from .builder import Builder
from .program import Program

# Measured on llvmpipe (CPU time per 224 px image, interleaved with `patterns`): one scene evaluation
# of 4 objects costs ~0.4 of a `patterns` image, and most rays converge well before the step bound,
# so the object count matters more than the bounds; these keep the family near 3x `patterns`.
MARCH_STEPS = 40  # primary ray: sphere-tracing steps
SHADOW_STEPS = 8  # soft-shadow ray steps
AO_SAMPLES = 2  # ambient-occlusion distance samples
RELAXATION = 1.2  # primary-ray step = RELAXATION x distance: fewer steps, a rare overshoot is harmless here
FAR = 20.0  # the march gives up beyond this distance (the sky)
CEILING = 2.6  # no object reaches above this height: a rising ray above it sees only sky
OBJECTS_RANGE = (2, 3)

PRIMITIVES = r"""
float sd3_sphere(vec3 q, float r) { return length(q) - r; }
float sd3_box(vec3 q, vec3 s, float r) { vec3 d = abs(q) - s + r; return length(max(d, 0.0)) + min(max(d.x, max(d.y, d.z)), 0.0) - r; }
float sd3_torus(vec3 q, float big, float small) { return length(vec2(length(q.xz) - big, q.y)) - small; }
float sd3_capsule(vec3 q, float h, float r) { q.y -= clamp(q.y, -h, h); return length(q) - r; }
float sd3_cylinder(vec3 q, float h, float r) { vec2 d = abs(vec2(length(q.xz), q.y)) - vec2(r, h); return min(max(d.x, d.y), 0.0) + length(max(d, 0.0)); }
float sd3_octahedron(vec3 q, float s) { q = abs(q); return (q.x + q.y + q.z - s) * 0.57735027; }
mat2 rot_dir(vec2 cs) { return mat2(cs.x, cs.y, -cs.y, cs.x); }
// Smooth union of (distance, material) pairs; the material of the nearer surface wins.
vec2 op_union(vec2 a, vec2 b, float k) {
    float h = clamp(0.5 + 0.5 * (b.x - a.x) / k, 0.0, 1.0);
    return vec2(mix(b.x, a.x, h) - k * h * (1.0 - h), h > 0.5 ? a.y : b.y);
}
"""

SHADING = f"""
vec3 scene_normal(vec3 q) {{  // tetrahedral central differences: 4 scene evaluations
    const vec2 e = vec2(1.0, -1.0) * 0.002;
    return normalize(e.xyy * map(q + e.xyy).x + e.yyx * map(q + e.yyx).x + e.yxy * map(q + e.yxy).x + e.xxx * map(q + e.xxx).x);
}}
float soft_shadow(vec3 ro, vec3 rd, float k) {{  // penumbra from the nearest miss (k: sharpness)
    float res = 1.0, t = 0.03;
    for (int i = 0; i < {SHADOW_STEPS}; i++) {{
        float h = map(ro + rd * t).x;
        res = min(res, k * h / t);
        t += clamp(h, 0.05, 0.6);
        if (res < 0.01 || t > 8.0) break;
    }}
    return clamp(res, 0.0, 1.0);
}}
float ambient_occlusion(vec3 q, vec3 n) {{
    float occ = 0.0, w = 1.0;
    for (int i = 1; i <= {AO_SAMPLES}; i++) {{
        float d = 0.08 * float(i * i);
        occ += w * (d - map(q + n * d).x); w *= 0.6;
    }}
    return clamp(1.0 - 2.5 * occ, 0.0, 1.0);
}}
"""


def _object(b: Builder, index: int) -> list[str]:
    """GLSL lines adding object ``index`` to the running (distance, material) pair ``s`` of ``map``."""
    size = b.param(0.3, 0.8)
    lines = [f"    o = q - vec3({b.param(-1.6, 1.6)}, {size} * {b.param(0.6, 1.4)}, {b.param(-1.6, 1.6)});",
             # A rotation about y from a direction (normalize is cheaper than cos and sin per evaluation).
             f"    o.xz = rot_dir(normalize(vec2({b.param(-1.0, 1.0)}, {b.param(-1.0, 1.0)}) + 1e-4)) * o.xz;"]
    if b.rng.random() < 0.35:  # domain repetition on a bounded grid (a row or a field of copies)
        cells = b.choice(["vec2(2.0, 0.0)", "vec2(1.0, 1.0)", "vec2(3.0, 1.0)"])
        lines.append(f"    {{ float sp = {size} * {b.param(2.4, 3.5)}; o.xz -= sp * clamp(round(o.xz / sp), -{cells}, {cells}); }}")
    kind = b.choice(["sphere", "box", "torus", "capsule", "cylinder", "octahedron"])
    shapes = {  # lambdas: only the chosen shape draws its uniforms
        "sphere": lambda: f"sd3_sphere(o, {size})",
        "box": lambda: f"sd3_box(o, {size} * {b.vec3(0.5, 1.1)}, {size} * {b.param(0.0, 0.3)})",
        "torus": lambda: f"sd3_torus(o.xzy, {size} * 0.75, {size} * {b.param(0.15, 0.35)})",
        "capsule": lambda: f"sd3_capsule(o, {size} * {b.param(0.3, 0.9)}, {size} * 0.45)",
        "cylinder": lambda: f"sd3_cylinder(o, {size} * {b.param(0.5, 1.0)}, {size} * {b.param(0.3, 0.8)})",
        "octahedron": lambda: f"sd3_octahedron(o, {size} * 1.3)",
    }
    d = shapes[kind]()
    lines.append(f"    s = op_union(s, vec2({d}, {float(index + 1)}), k);")
    return lines


def _scene(b: Builder) -> str:
    """GLSL source of ``vec2 map(vec3 q)``."""
    k = b.param(0.05, 0.5)
    ground = b.rng.random() < 0.85
    lines = [f"    float k = {k};", "    vec3 o;",
             f"    vec2 s = vec2({'q.y' if ground else '1e3'}, 0.0);"]
    for i in range(int(b.rng.integers(OBJECTS_RANGE[0], OBJECTS_RANGE[1] + 1))):
        lines += _object(b, i)
    return "vec2 map(vec3 q) {\n" + "\n".join(lines) + "\n    return s;\n}\n"


def _texture(b: Builder) -> str:
    """float in [0, 1]: the surface texture at hit point ``pos`` (world space)."""
    f = b.param(1.5, 6.0)
    kind = b.choice(["checkers", "stripes", "noise"])
    if kind == "checkers":
        return f"step(0.0, sin(pos.x * {f} * 1.5) * sin(pos.y * {f} * 1.5) * sin(pos.z * {f} * 1.5))"
    if kind == "stripes":
        return f"0.5 + 0.5 * sin(dot(pos, {b.vec3(-1.0, 1.0)}) * {f} * 2.0)"
    return f"fbm_value(pos.xz * {f} + pos.y * {f} * 0.7, 3, 0.5)"


def generate(seed: int) -> Program:
    """The ``raymarch`` program of ``seed``."""
    b = Builder(np.random.default_rng([int(seed), 0x3D3D]))
    scene = _scene(b)
    az, el, dist, focal = b.param(0.0, 6.2832), b.param(0.12, 0.75), b.param(3.5, 6.0), b.param(1.2, 2.2)
    sun_az, sun_el = b.param(0.0, 6.2832), b.param(0.25, 1.1)
    b.lines += [
        f"    vec3 target = vec3({b.param(-0.4, 0.4)}, {b.param(0.2, 0.7)}, {b.param(-0.4, 0.4)});",
        f"    vec3 ro = target + {dist} * vec3(cos({el}) * cos({az}), sin({el}), cos({el}) * sin({az}));",
        "    vec3 fw = normalize(target - ro), rt = normalize(cross(fw, vec3(0.0, 1.0, 0.0))), up = cross(rt, fw);",
        f"    vec3 rd = normalize(p.x * rt + p.y * up + {focal} * fw);",
        f"    vec3 sun = vec3(cos({sun_el}) * cos({sun_az}), sin({sun_el}), cos({sun_el}) * sin({sun_az}));",
        f"    vec3 sky = mix({b.vec3(0.5, 0.9)}, {b.vec3(0.1, 0.6)}, clamp(rd.y * 1.5, 0.0, 1.0));",
        "    sky += vec3(1.0, 0.8, 0.6) * 0.5 * pow(max(dot(rd, sun), 0.0), 24.0);",
        "    float t = 0.05; vec2 h = vec2(1.0, -1.0);",
        f"    for (int i = 0; i < {MARCH_STEPS}; i++) {{",
        "        h = map(ro + rd * t);",
        f"        if (h.x < 0.001 * t || t > {FAR}) break;",
        # Rising above every object (they stand below y = 2.5 on a ground at y = 0): only sky is left.
        f"        if (rd.y > 0.0 && ro.y + rd.y * t > {CEILING}) {{ t = {FAR} + 1.0; break; }}",
        f"        t += h.x * {RELAXATION};",
        "    }",
        "    vec3 col = sky;",
        f"    if (t < {FAR}) {{",
        "        vec3 pos = ro + rd * t, n = scene_normal(pos);",
        f"        float tex = {_texture(b)};",
        f"        vec3 albedo = cosine_palette(h.y * {b.param(0.1, 0.4)} + {b.param(0.0, 1.0)}, {b.vec3(0.4, 0.6)}, "
        f"{b.vec3(0.2, 0.45)}, vec3(1.0), {b.vec3(0.0, 1.0)});",
        f"        albedo *= mix(1.0, 0.45 + 0.75 * tex, {b.param(0.3, 0.9)});",
        "        float diffuse = max(dot(n, sun), 0.0);",
        f"        float shadow = diffuse > 0.0 ? soft_shadow(pos + n * 0.01, sun, {b.param(4.0, 16.0)}) : 0.0;",
        "        float ao = ambient_occlusion(pos, n);",
        f"        float spec = pow(max(dot(n, normalize(sun - rd)), 0.0), {b.param(8.0, 64.0)}) * {b.param(0.1, 0.8)};",
        "        col = albedo * (vec3(1.1, 1.0, 0.85) * diffuse * shadow + sky * (0.25 + 0.25 * n.y) * ao)",
        "            + vec3(1.0, 0.95, 0.85) * spec * shadow;",
        f"        col = mix(col, sky, 1.0 - exp(-{b.param(0.001, 0.02)} * t * t));",
        "    }",
    ]
    col = b.let("vec3", "pow(clamp(col, 0.0, 1.0), vec3(0.4545))")
    return b.program(f"raymarch-{seed}", "raymarch", col, PRIMITIVES + scene + SHADING)
