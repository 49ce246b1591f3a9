"""Offscreen renderer: compiles fragment programs, draws them with many uniform vectors, reads back uint8.

One framebuffer holds ``tiles_x * tiles_y`` images side by side; each tile is one small draw (its own
viewport and uniform vector) and a single ``glReadPixels`` returns them all, which amortises the
readback and synchronisation cost (measured here: 16 tiles ~1.4x faster than one image per readback).
Drawing all tiles in *one* draw, each indexing its slice of a uniform array by ``gl_FragCoord``, was
measured ~10 % slower on llvmpipe than per-tile draws: dynamic uniform indexing defeats the shader
compiler's uniform loads, so tiles share a readback, not a draw. Shadertoy programs, which may read
``gl_FragCoord`` themselves, are drawn one image per framebuffer.

A program that fails to compile or link is logged and ``compile`` returns ``None`` (the caller picks
another program); it is never fatal. :func:`degenerate` flags near-constant or single-flat-colour images
(what NaNs and infinities become after the clamp to [0, 1]).
"""

from __future__ import annotations

import ctypes
import logging
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from . import egl
from .families.pattern_interpreter import MAX_PARAMS
from .glsl_library import LIBRARY
from .programs import Program
from .shadertoy import SHADERTOY_PREAMBLE

log = logging.getLogger(__name__)

# Degenerate-image thresholds (on uint8 values, every 4th pixel): largest per-channel standard
# deviation below MIN_STD looks constant; more than MAX_FLAT_FRACTION of the pixels within FLAT_TOLERANCE
# of the median colour is one flat colour with a few specks.
MIN_STD = 6.0
MAX_FLAT_FRACTION = 0.9
FLAT_TOLERANCE = 3

VERTEX_SHADER = """#version 330 core
void main() {  // one triangle covering the framebuffer; no vertex buffer needed
    vec2 v = vec2((gl_VertexID << 1) & 2, gl_VertexID & 2);
    gl_Position = vec4(v * 2.0 - 1.0, 0.0, 1.0);
}
"""

GRAMMAR_MAIN = """
void main() {
    vec2 local = gl_FragCoord.xy - u_origin;
    vec2 p = (2.0 * local - float(TILE_SIZE)) / float(TILE_SIZE);  // y in [-1, 1], y up
    out_color = vec4(clamp(image(p), 0.0, 1.0), 1.0);
}
"""


def program_header(num_params: int, size: int) -> str:
    return (
        "#version 330 core\n"
        f"#define NUM_PARAMS {max(num_params, 1)}\n#define TILE_SIZE {size}\n"
        "uniform float u_params[NUM_PARAMS];\nuniform vec2 u_origin;  // the tile's lower-left pixel\n"
        "out vec4 out_color;\n"
        "#define P(i) u_params[i]\n"
    )


def full_source(program: Program, size: int) -> str:
    """The complete fragment shader source of ``program`` for ``size`` x ``size`` images."""
    if program.structure is not None:  # the interpreter: fixed uniform sizes, the structure in u_struct
        header = program_header(MAX_PARAMS, size) + (
            f"#define NUM_STRUCT {len(program.structure)}\nuniform int u_struct[NUM_STRUCT];\n#define S(i) u_struct[i]\n")
        return header + LIBRARY + program.source + GRAMMAR_MAIN
    header = program_header(program.num_params, size)
    if program.kind == "shadertoy":
        return header + SHADERTOY_PREAMBLE + program.source + "\n"
    return header + LIBRARY + program.source + GRAMMAR_MAIN


def degenerate(images: np.ndarray) -> np.ndarray:
    """bool [N]: which uint8 images [N, H, W, 3] are near-constant or essentially one flat colour."""
    x = images[:, ::4, ::4].reshape(len(images), -1, 3)
    std = x.std(axis=1, dtype=np.float32).max(axis=1)
    median = np.median(x, axis=1, keepdims=True)
    flat = (np.abs(x.astype(np.int16) - median).max(axis=2) <= FLAT_TOLERANCE).mean(axis=1)
    return (std < MIN_STD) | (flat > MAX_FLAT_FRACTION)


@dataclass
class _Compiled:
    handle: int
    params_location: int
    origin_location: int
    struct_location: int = -1  # the interpreter's u_struct


class Renderer:
    """Renders :class:`Program` s at ``size`` x ``size`` into uint8 arrays [N, size, size, 3] (rows top-down).

    ``tiles``: images per draw for grammar programs (a square-ish grid; capped by the uniform budget).
    The EGL context is created on first use in the calling process (never at construction), so a
    Renderer may be built in a parent and used in DataLoader workers.
    """

    def __init__(self, size: int = 224, tiles: int = 16, cache_size: int = 32):
        self.size = size
        self.tiles = max(1, tiles)
        self.cache_size = cache_size
        self._cache: OrderedDict[str, _Compiled | None] = OrderedDict()
        self._fbo_shape: tuple[int, int] | None = None
        self._gl_pid: int | None = None
        self.compile_failures = 0

    # ------------------------------------------------------------------ GL state
    def _ensure_gl(self) -> None:
        ctx = egl.current_context()
        if self._gl_pid == ctx.pid:
            return
        from OpenGL import GL

        self._cache.clear()  # handles from another process are meaningless here
        self._fbo_shape = None
        self._vao = GL.glGenVertexArrays(1)
        GL.glBindVertexArray(self._vao)
        self._vertex = self._compile_shader(GL.GL_VERTEX_SHADER, VERTEX_SHADER)
        GL.glPixelStorei(GL.GL_PACK_ALIGNMENT, 1)
        # Alpha is never read: without it in the colour mask llvmpipe's fragment variant is not "opaque", so
        # it JITs one rasterisation function per program instead of two (whole tile and edge). Measured here
        # (12 grammar programs, 64 px): a cold program's first draw 255 -> 140 ms median, the same draw time
        # (0.365 ms per image) and byte-identical images. A GPU ignores it.
        GL.glColorMask(GL.GL_TRUE, GL.GL_TRUE, GL.GL_TRUE, GL.GL_FALSE)
        self._gl_pid = ctx.pid

    def _framebuffer(self, tiles_x: int, tiles_y: int) -> None:
        from OpenGL import GL

        shape = (tiles_x * self.size, tiles_y * self.size)
        if self._fbo_shape == shape:  # rebind: another Renderer in this process may have bound its own
            GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, self._fbo)
            return
        if self._fbo_shape is not None:
            GL.glDeleteFramebuffers(1, [self._fbo])
            GL.glDeleteRenderbuffers(1, [self._rbo])
        self._fbo = GL.glGenFramebuffers(1)
        self._rbo = GL.glGenRenderbuffers(1)
        GL.glBindRenderbuffer(GL.GL_RENDERBUFFER, self._rbo)
        GL.glRenderbufferStorage(GL.GL_RENDERBUFFER, GL.GL_RGBA8, *shape)
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, self._fbo)
        GL.glFramebufferRenderbuffer(GL.GL_FRAMEBUFFER, GL.GL_COLOR_ATTACHMENT0, GL.GL_RENDERBUFFER, self._rbo)
        if GL.glCheckFramebufferStatus(GL.GL_FRAMEBUFFER) != GL.GL_FRAMEBUFFER_COMPLETE:
            raise RuntimeError(f"incomplete framebuffer of {shape[0]}x{shape[1]} pixels")
        GL.glViewport(0, 0, *shape)
        self._fbo_shape = shape

    @staticmethod
    def _compile_shader(kind: int, source: str) -> int | None:
        from OpenGL import GL

        shader = GL.glCreateShader(kind)
        GL.glShaderSource(shader, source)
        GL.glCompileShader(shader)
        if not GL.glGetShaderiv(shader, GL.GL_COMPILE_STATUS):
            info = GL.glGetShaderInfoLog(shader)
            GL.glDeleteShader(shader)
            log.warning("shader failed to compile: %s", info.decode(errors="replace")[:2000] if info else "?")
            return None
        return shader

    def _grid(self, program: Program) -> tuple[int, int, int]:
        """(tiles, tiles_x, tiles_y) for ``program``: as many tiles as requested and the uniform budget allows."""
        if program.kind == "shadertoy":
            return 1, 1, 1
        tiles = self.tiles
        tiles_x = int(np.ceil(np.sqrt(tiles)))
        tiles_y = int(np.ceil(tiles / tiles_x))
        return tiles_x * tiles_y, tiles_x, tiles_y

    # ------------------------------------------------------------------ public API
    def compile(self, program: Program) -> _Compiled | None:
        """Compile and link ``program`` (cached); ``None`` (logged, counted) when the driver rejects it."""
        self._ensure_gl()
        key = program.compile_key
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        from OpenGL import GL

        compiled = None
        shader = self._compile_shader(GL.GL_FRAGMENT_SHADER, full_source(program, self.size))
        if shader is not None:
            handle = GL.glCreateProgram()
            GL.glAttachShader(handle, self._vertex)
            GL.glAttachShader(handle, shader)
            GL.glLinkProgram(handle)
            GL.glDeleteShader(shader)
            if GL.glGetProgramiv(handle, GL.GL_LINK_STATUS):
                compiled = _Compiled(handle, GL.glGetUniformLocation(handle, "u_params"),
                                     GL.glGetUniformLocation(handle, "u_origin"),
                                     GL.glGetUniformLocation(handle, "u_struct"))
            else:
                log.warning("program %s failed to link: %s", program.name, GL.glGetProgramInfoLog(handle))
                GL.glDeleteProgram(handle)
        if compiled is None:
            self.compile_failures += 1
            log.warning("program %s skipped (compile failure); the caller replaces it", program.name)
        self._cache[key] = compiled
        while len(self._cache) > self.cache_size:
            _, old = self._cache.popitem(last=False)
            if old is not None:
                GL.glDeleteProgram(old.handle)
        return compiled

    def render(self, program: Program, params: np.ndarray) -> np.ndarray | None:
        """Images of ``program`` for each row of ``params`` (float32 [N, K]) -> uint8 [N, size, size, 3].

        ``None`` when the program does not compile.
        """
        compiled = self.compile(program)
        if compiled is None:
            return None
        from OpenGL import GL

        tiles, tiles_x, tiles_y = self._grid(program)
        self._framebuffer(tiles_x, tiles_y)
        GL.glUseProgram(compiled.handle)
        if program.structure is not None and compiled.struct_location >= 0:  # once per program, not per image
            GL.glUniform1iv(compiled.struct_location, len(program.structure), program.structure.astype(np.int32))
        k = max(program.num_params, 1)
        n = len(params)
        out = np.empty((n, self.size, self.size, 3), dtype=np.uint8)
        width, height = self._fbo_shape
        buffer = np.empty((height, width, 4), dtype=np.uint8)
        values = np.zeros((n, k), dtype=np.float32)
        values[:, : program.num_params] = params
        for start in range(0, n, tiles):
            chunk = values[start : start + tiles]
            for j, vector in enumerate(chunk):
                ty, tx = divmod(j, tiles_x)
                GL.glViewport(tx * self.size, ty * self.size, self.size, self.size)
                if compiled.origin_location >= 0:
                    GL.glUniform2f(compiled.origin_location, tx * self.size, ty * self.size)
                if compiled.params_location >= 0:
                    GL.glUniform1fv(compiled.params_location, k, vector)
                GL.glDrawArrays(GL.GL_TRIANGLES, 0, 3)
            used_rows = int(np.ceil(len(chunk) / tiles_x)) * self.size  # skip unused top rows of tiles
            GL.glReadPixels(0, 0, width, used_rows, GL.GL_RGBA, GL.GL_UNSIGNED_BYTE,
                            buffer.ctypes.data_as(ctypes.c_void_p))
            for j in range(len(chunk)):
                ty, tx = divmod(j, tiles_x)
                tile = buffer[ty * self.size : (ty + 1) * self.size, tx * self.size : (tx + 1) * self.size, :3]
                out[start + j] = tile[::-1]  # GL rows run bottom-up
        return out
