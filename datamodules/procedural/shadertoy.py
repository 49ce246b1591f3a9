"""User programs in Shadertoy form, as an alternative source to the grammar.

A folder of ``*.glsl`` / ``*.frag`` files, each defining
``void mainImage(out vec4 fragColor, in vec2 fragCoord)`` and using Shadertoy's uniforms (``iTime``,
``iResolution``, ``iFrame``, ``iMouse``, ``iDate``, ...). Anyone holding the shaders21k sources can
point ``shader_dir`` at them. As in that data set's renderer, only time varies between images:
``iTime ~ U(0.1, 10)``; ``iMouse = 0``, ``iDate = (3, 10, 3, 2021)``, and ``iChannel0-3`` are declared
but unbound (sampling returns black), so multi-pass and texture-driven programs look different from
the website. Programs that do not compile on the local driver are logged and skipped by the renderer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .programs import Program

SUFFIXES = (".glsl", ".frag", ".fs", ".txt")
TIME_RANGE = (0.1, 10.0)

# Declares Shadertoy's inputs for one image per draw; P(0) is the per-image iTime.
SHADERTOY_PREAMBLE = """
#define iTime P(0)
#define iFrame int(P(0) * 60.0)
const vec3 iResolution = vec3(float(TILE_SIZE), float(TILE_SIZE), 1.0);
const vec4 iMouse = vec4(0.0);
const vec4 iDate = vec4(3.0, 10.0, 3.0, 2021.0);
const float iTimeDelta = 1.0 / 60.0;
const float iFrameRate = 60.0;
const float iSampleRate = 44100.0;
const float iChannelTime[4] = float[4](0.0, 0.0, 0.0, 0.0);
const vec3 iChannelResolution[4] = vec3[4](vec3(1.0), vec3(1.0), vec3(1.0), vec3(1.0));
uniform sampler2D iChannel0;
uniform sampler2D iChannel1;
uniform sampler2D iChannel2;
uniform sampler2D iChannel3;
void mainImage(out vec4 fragColor, in vec2 fragCoord);
void main() {
    vec4 color = vec4(0.0, 0.0, 0.0, 1.0);
    mainImage(color, gl_FragCoord.xy);
    out_color = vec4(clamp(color.rgb, 0.0, 1.0), 1.0);
}
"""


def load_shadertoy_folder(folder: str | Path) -> list[Program]:
    """Every Shadertoy program in ``folder`` (recursively, sorted by path, so indices are stable)."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"shader_dir {root} is not a folder; give a folder of Shadertoy *.glsl files")
    programs = []
    for path in sorted(p for p in root.rglob("*") if p.suffix in SUFFIXES and p.is_file()):
        source = path.read_text(errors="replace")
        if "mainImage" not in source:
            continue
        # GLSL ES precision statements and a #version line would clash with our header.
        lines = [ln for ln in source.splitlines() if not ln.strip().startswith("#version")]
        programs.append(
            Program(
                name=f"shadertoy-{path.relative_to(root)}",
                source="\n".join(lines),
                kind="shadertoy",
                family="shadertoy",
                low=np.array([TIME_RANGE[0]], dtype=np.float32),
                high=np.array([TIME_RANGE[1]], dtype=np.float32),
            )
        )
    if not programs:
        raise FileNotFoundError(f"no Shadertoy programs (files {SUFFIXES} defining mainImage) under {root}")
    return programs
