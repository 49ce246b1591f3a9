"""Hostile user programs (the programs part of `make bench-faults`), each run as N trials, with what survived.

A user's ``shader_dir`` is arbitrary code; ``datamodules/procedural/sandbox.py`` draws it in a killable
render process with a per-draw time limit and a memory cap. :func:`scenarios` returns one row per case
in the shared format with ``trials``, ``survived``, ``samples_lost``, ``recover_s`` and the message a
user sees. A trial makes one block from a folder holding the hostile program among good ones, with a
fresh renderer (so each trial pays a process start). It survives when the block is complete and equals,
byte for byte, the block made from the same folder with the hostile program replaced by one that fails
to compile (same file name): an abandoned program is replaced exactly like a compile failure, so the
stream stays a pure function of (seed, block). ``recover_s`` is the extra wall time the hostile program
cost against that twin folder. A last row measures the isolation's cost on a normal folder: images/s
through the render process against drawing in-process, in the same run.

Program sources (also used by ``tests/test_hostile_programs.py``). Measured on llvmpipe here: its loops
are bounded by the driver (a bare ``while (true)`` finishes in ~1 s per 32 px image, and so do nested
loops of 10^6 iterations), so what freezes a CPU worker is a loop whose *body* is heavy. ENDLESS is both:
never-ending by its condition (a real hang on a GPU) and several seconds per 32 px image on llvmpipe
(minutes at 224 px), far beyond any draw limit used here.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from procedural_perception.core.benchmark_rows import quick, row, write_rows

_STEP = "x = fract(sin(x * 12.9 + iTime) * 43758.5);"

GOOD = (
    "void mainImage(out vec4 fragColor, in vec2 fragCoord) {\n"
    "    vec2 uv = fragCoord / iResolution.xy;\n"
    "    fragColor = vec4(0.5 + 0.5 * cos(iTime + uv.xyx * 6.0 + vec3(0, 2, 4)), 1.0);\n}\n"
)
GOOD_RINGS = (
    "void mainImage(out vec4 fragColor, in vec2 fragCoord) {\n"
    "    vec2 uv = fragCoord / iResolution.xy - 0.5;\n"
    "    float r = length(uv) * (8.0 + iTime);\n"
    "    fragColor = vec4(0.5 + 0.5 * sin(r), 0.5 + 0.5 * cos(r * 1.3 + uv.x * 9.0), fract(uv.y * 3.0), 1.0);\n}\n"
)
ENDLESS = (
    "void mainImage(out vec4 fragColor, in vec2 fragCoord) {\n"
    "    float x = fragCoord.x * 0.01;\n"
    f"    while (x < 2.0) {{ {_STEP * 16} }}  // fract() < 1: never ends\n"
    "    fragColor = vec4(x, x, x, 1.0);\n}\n"
)
NAN_INF = (
    "void mainImage(out vec4 fragColor, in vec2 fragCoord) {\n"
    "    float zero = iTime - iTime;\n"
    "    fragColor = vec4(zero / zero, 1.0 / zero, -1.0 / zero, 1.0);  // NaN, +Inf, -Inf everywhere\n}\n"
)
HALF_NAN = (  # NaN on the left half, a gradient on the right: the clamp must leave finite bytes
    "void mainImage(out vec4 fragColor, in vec2 fragCoord) {\n"
    "    vec2 uv = fragCoord / iResolution.xy;\n"
    "    float zero = iTime - iTime;\n"
    "    fragColor = uv.x < 0.5 ? vec4(zero / zero) : vec4(uv, 0.5 + 0.5 * sin(iTime), 1.0);\n}\n"
)
TOO_MANY_UNIFORMS = (  # llvmpipe allows 81920 uniform locations: a link error
    "uniform float many[200000];\n"
    "void mainImage(out vec4 fragColor, in vec2 fragCoord) { fragColor = vec4(many[int(fragCoord.x)]); }\n"
)
HUGE_ARRAY = (  # 10M floats per pixel: llvmpipe's compile or draw exhausts memory or time
    "void mainImage(out vec4 fragColor, in vec2 fragCoord) {\n"
    "    float a[10000000];\n"
    "    for (int i = 0; i < 10000000; i++) a[i] = float(i) * iTime;\n"
    "    fragColor = vec4(a[int(fragCoord.x)] / 1e6);\n}\n"
)
BROKEN = "void mainImage(out vec4 fragColor, in vec2 fragCoord) { fragColor = vec4(undefined_thing); }\n"


def write_folder(folder: Path, programs: dict[str, str]) -> Path:
    """``folder`` holding ``<name>.glsl`` for each entry (created if needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in programs.items():
        (folder / f"{name}.glsl").write_text(source)
    return folder


# --------------------------------------------------------------------------- trials
SIZE = 32  # image size of the trials: small, so a good draw takes ~1 ms and the limits dominate
DRAW_TIMEOUT_S = 1.0  # the per-draw limit in the trials (the default, 10 s, would only make them slower)
MEMORY_LIMIT_BYTES = 3 << 30  # keeps the memory-hungry programs from crowding a shared machine


def make_block(folder: Path, seed: int, programs_per_block: int = 8, block_size: int = 16,
               sandboxed: bool = True) -> tuple[object, np.ndarray]:
    """(maker, uint8 block [block_size, 3, SIZE, SIZE]) of process ``shaders`` over ``folder``."""
    from datamodules.procedural.blocks import BlockConfig, BlockMaker
    from datamodules.procedural.renderer import Renderer
    from datamodules.procedural.sandbox import SandboxedRenderer

    config = BlockConfig(process="shaders", seed=seed, image_size=SIZE, block_size=block_size,
                         programs_per_block=programs_per_block, reuse=1.0, shader_dir=str(folder),
                         draw_timeout_s=DRAW_TIMEOUT_S)
    maker = BlockMaker(config)
    if sandboxed:
        maker.renderer = SandboxedRenderer(SIZE, draw_timeout_s=DRAW_TIMEOUT_S, memory_limit_bytes=MEMORY_LIMIT_BYTES)
    else:
        maker.renderer = Renderer(SIZE)
    try:
        return maker, maker(0).numpy()
    finally:
        if sandboxed:
            maker.renderer.close()


def hostile_trial(hostile: dict[str, str], replaced: list[str], seed: int, work: Path) -> tuple[bool, int, float, str]:
    """One block over {GOOD, GOOD_RINGS, *hostile}, compared with the twin folder where the programs that must be
    replaced (``replaced``) are BROKEN: equal blocks mean they were replaced exactly like compile failures."""
    folder = write_folder(work / f"hostile{seed}", {"good": GOOD, "rings": GOOD_RINGS, **hostile})
    twin = write_folder(work / f"twin{seed}", {"good": GOOD, "rings": GOOD_RINGS,
                                               **{n: BROKEN if n in replaced else s for n, s in hostile.items()}})
    start = time.perf_counter()
    try:
        maker, block = make_block(folder, seed)
    except Exception as exc:  # the failure this scenario looks for
        return False, 16, time.perf_counter() - start, f"seed {seed}: {type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    _, expected = make_block(twin, seed)
    twin_seconds = time.perf_counter() - start
    same = block.shape == expected.shape and bool((block == expected).all())
    detail = (f"seed {seed}: timeouts {maker.renderer.timeouts}, crashes {maker.renderer.crashes}, compile failures "
              f"{maker.renderer.compile_failures}, degenerate {maker.stats.degenerate}")
    return same, 0 if same else len(block), max(0.0, seconds - twin_seconds), "" if same else detail


def compile_storm(count: int, work: Path) -> tuple[bool, int, float, str]:
    """A folder of ``count`` programs that all fail to compile: a clear stop, not a crash or a hang."""
    folder = write_folder(work / "storm", {f"broken{i:05d}": BROKEN for i in range(count)})
    start = time.perf_counter()
    try:
        make_block(folder, 0, programs_per_block=1, block_size=4)
    except RuntimeError as exc:
        ok = "do its programs compile" in str(exc)
        return ok, 0, time.perf_counter() - start, "" if ok else str(exc)
    return False, 0, time.perf_counter() - start, "no error"


def isolation_cost(size: int, block_size: int, blocks: int, work: Path) -> dict:
    """images/s of one normal folder drawn through the render process against in-process, same run."""
    from datamodules.procedural.blocks import BlockConfig, BlockMaker
    from datamodules.procedural.renderer import Renderer

    folder = write_folder(work / "normal", {"good": GOOD, "rings": GOOD_RINGS})
    config = BlockConfig(process="shaders", seed=0, image_size=size, block_size=block_size, programs_per_block=2,
                         reuse=1.0, shader_dir=str(folder))
    makers = {True: BlockMaker(config), False: BlockMaker(config)}
    makers[False].renderer = Renderer(size)
    begin = time.perf_counter()
    makers[True](0)  # warm: process start, EGL context, compiles
    start_s = time.perf_counter() - begin
    makers[False](0)
    rates = {True: 0.0, False: 0.0}
    for _ in range(3):  # interleaved, best of 3: the machine's load shifts between the two
        for sandboxed, maker in makers.items():
            begin = time.perf_counter()
            for b in range(1, blocks + 1):
                maker(b)
            rates[sandboxed] = max(rates[sandboxed], blocks * block_size / (time.perf_counter() - begin))
    makers[True].renderer.close()
    return row(f"hostile programs: isolation cost on a normal shader_dir ({size} px, images/s)", round(rates[True], 1),
               "images/s", "in-process renderer", round(rates[False], 1), trials=blocks, survived=blocks,
               samples_lost=0, recover_s=round(start_s, 3),
               user_message="(none: a normal folder renders as before; the render process starts once per worker)")


CASES = {
    "endless / pathologically slow loop": (
        {"endless": ENDLESS}, ["endless"],
        "User program shadertoy-endless.glsl abandoned: draw took longer than 10 s (an endless or pathologically "
        "slow loop?). The render process was restarted and the program is replaced (1 abandoned so far)."),
    "NaN / Inf written everywhere (degenerate, replaced) and on half the image (clamped)": (
        {"nan": NAN_INF, "half_nan": HALF_NAN}, ["nan"], "(none: counted as degenerate renders, replaced)"),
    "resource limits: too many uniforms, a 10M-float local array": (
        {"uniforms": TOO_MANY_UNIFORMS, "huge_array": HUGE_ARRAY}, ["uniforms", "huge_array"],
        "program shadertoy-uniforms.glsl failed to link: error: count of uniform locations > "
        "MAX_UNIFORM_LOCATIONS(200000 > 81920) ... / User program shadertoy-huge_array.glsl abandoned: the render "
        "process died during the draw (exit status -6: a driver crash or the 8 GiB memory cap on llvmpipe)"),
}


def _row(name: str, outcomes: list[tuple[bool, int, float, str]], message: str) -> dict:
    survived = sum(o[0] for o in outcomes)
    return row(name, survived, "trials survived", "trials run", len(outcomes), trials=len(outcomes),
               survived=survived, samples_lost=sum(o[1] for o in outcomes),
               recover_s=round(max((o[2] for o in outcomes), default=0.0), 3), user_message=message,
               failures=[o[3] for o in outcomes if not o[0]][:5])


def scenarios(trials: int | None = None) -> list[dict]:
    """The rows of this part of ``make bench-faults`` (QUICK=1: one trial per case, a smaller storm)."""
    import logging

    trials = trials or (1 if quick() else 4)
    logging.getLogger("datamodules").setLevel(logging.ERROR)  # the warnings are the behaviour under test
    work = Path(tempfile.mkdtemp(prefix="pp-faults-programs-"))
    try:
        rows = [_row(f"hostile programs: {case}", [hostile_trial(h, r, seed, work) for seed in range(trials)], message)
                for case, (h, r, message) in CASES.items()]
        storm = 200 if quick() else 2000
        rows.append(_row(f"hostile programs: {storm} programs that all fail to compile (a clear stop)",
                         [compile_storm(storm, work)],
                         "block 0 slot 0: 16 programs in a row failed to compile or rendered degenerate images; "
                         "check the log for GLSL errors (with shader_dir: do its programs compile?)"))
        rows.append(isolation_cost(64 if quick() else 224, 32 if quick() else 64, 1 if quick() else 4, work))
    finally:
        logging.getLogger("datamodules").setLevel(logging.NOTSET)
        shutil.rmtree(work, ignore_errors=True)
    return rows


if __name__ == "__main__":
    write_rows("faults_programs", scenarios())
