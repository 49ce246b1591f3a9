"""A render process for untrusted programs: a per-draw time limit, a memory cap, and a restart on failure.

A user's ``shader_dir`` is arbitrary GLSL. A program with an endless or pathologically slow loop makes
``glDrawArrays``/``glReadPixels`` never return, and a GL call cannot be interrupted inside a process: a
DataLoader worker drawing it in-process would freeze the run (on a GPU the driver's watchdog may also
reset the device). A program can also crash the driver (huge local arrays overflow llvmpipe's thread
stacks) or exhaust memory while compiling. So user programs are drawn in a child process that owns its
own EGL context (:class:`SandboxedRenderer`, a drop-in for :class:`~.renderer.Renderer`):

* the parent sends ``(program, params)``; the child compiles, then draws and sends back one chunk of
  images at a time (one image per draw for Shadertoy programs);
* the parent waits at most ``compile_timeout_s`` for the compile and ``draw_timeout_s`` per draw; past
  that, or when the child dies (a crash, the memory cap), the child is killed (SIGKILL) and the
  program *abandoned*: ``render`` returns ``None`` as for a program that does not compile, the
  caller (:class:`~.blocks.BlockMaker`) replaces it from the stream keyed by (seed, block, slot,
  attempt), and the next call starts a fresh child with a new context;
* an abandoned program is remembered for the life of the renderer and refused at once afterwards
  (the outcome is the same as timing out again, only without the wait).

Determinism: replacements are keyed exactly as for compile failures, so the stream is the same in every
run *provided a program's fate does not depend on timing*: an endless loop always times out, a normal
program always finishes. A program whose draws take close to the limit can differ between machines;
the defaults leave two orders of magnitude above normal draws (1-100 ms on llvmpipe at 224 px).

Cost (``make bench-faults``, "hostile programs: isolation overhead"): one process start per renderer
(~1 s), and per draw a pipe round trip of its image (150 kB at 224 px).
"""

from __future__ import annotations

import logging
import os
import pickle
import resource
import select
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .programs import Program

log = logging.getLogger(__name__)

# Generous limits: a normal draw takes 1-100 ms on llvmpipe at 224 px, a large program compiles in < 5 s.
# Starting the child (Python, numpy, PyOpenGL, an EGL context) takes ~1 s, more on a loaded machine.
DRAW_TIMEOUT_S = 10.0  # per draw (one image of a Shadertoy program, one tile grid of a grammar program)
COMPILE_TIMEOUT_S = 60.0  # compile + link of one program
START_TIMEOUT_S = 120.0  # child start up to its EGL context
# Address-space cap of the child on llvmpipe: a compile or draw that would exceed it fails inside the child
# only (measured: a 10M-float local array dies of std::bad_alloc under a 1.3 GiB cap). The child reserves
# ~1 GiB of virtual memory at start; 8 GiB leaves room for big programs and protects a shared machine.
# Not applied to hardware drivers, which reserve tens of GiB of virtual address space for the GPU.
MEMORY_LIMIT_BYTES = 8 << 30

_HEADER = struct.Struct("<cQ")  # frame tag, payload length
READY, COMPILED, FAILED, IMAGES = b"R", b"C", b"F", b"I"
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding `datamodules/`


class SandboxedRenderer:
    """Renders like :class:`~.renderer.Renderer` (same ``render`` contract) in a killable child process.

    ``size``/``tiles``: as for ``Renderer``. ``draw_timeout_s``/``compile_timeout_s``: the limits above.
    Counters (per renderer, i.e. per DataLoader worker): ``compile_failures`` (the driver rejected the
    program), ``timeouts`` (a compile or draw ran past its limit), ``crashes`` (the child died, e.g. a
    driver crash or the memory cap), ``restarts`` (children started after the first), ``abandoned``
    (names of programs given up on). Picklable: the child is started lazily in the rendering process.
    """

    def __init__(self, size: int = 224, tiles: int = 16, draw_timeout_s: float = DRAW_TIMEOUT_S,
                 compile_timeout_s: float = COMPILE_TIMEOUT_S, memory_limit_bytes: int | None = MEMORY_LIMIT_BYTES):
        self.size = size
        self.tiles = max(1, tiles)
        self.draw_timeout_s = draw_timeout_s
        self.compile_timeout_s = compile_timeout_s
        self.memory_limit_bytes = memory_limit_bytes
        self.compile_failures = self.timeouts = self.crashes = self.restarts = self.starts = 0
        self.abandoned: set[str] = set()
        self._child: subprocess.Popen | None = None
        self._owner_pid: int | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_child"], state["_owner_pid"] = None, None  # a child belongs to the process that started it
        return state

    # ------------------------------------------------------------------ child process
    def _start(self) -> subprocess.Popen:
        env = dict(os.environ, PYOPENGL_PLATFORM="egl",
                   PYTHONPATH=os.pathsep.join(p for p in (str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")) if p))
        args = [sys.executable, "-m", "datamodules.procedural.sandbox", str(self.size), str(self.tiles),
                str(self.memory_limit_bytes or 0), str(os.getpid())]
        child = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=PACKAGE_ROOT)
        self.restarts += self.starts > 0
        self.starts += 1
        self._child, self._owner_pid = child, os.getpid()
        tag, _ = self._read_frame(time.monotonic() + START_TIMEOUT_S)
        if tag != READY:
            self.close()
            raise RuntimeError(f"the render process did not start within {START_TIMEOUT_S:.0f} s (see its log above)")
        return child

    def close(self) -> None:
        """Kill the child (if any); the next ``render`` starts a fresh one."""
        child, self._child = self._child, None
        if child is not None and self._owner_pid == os.getpid():
            child.kill()
            child.wait()
            for stream in (child.stdin, child.stdout):
                stream.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the child dies with its parent (PR_SET_PDEATHSIG)
            pass

    def _read_exact(self, n: int, deadline: float) -> bytes | None:
        """``n`` bytes from the child, or ``None`` when the deadline passes or the child died."""
        fd = self._child.stdout.fileno()
        parts, got = [], 0
        while got < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            part = os.read(fd, min(n - got, 1 << 20))
            if not part:  # end of file: the child died
                self._child.wait()
                return None
            parts.append(part)
            got += len(part)
        return b"".join(parts)

    def _read_frame(self, deadline: float) -> tuple[bytes | None, bytes]:
        header = self._read_exact(_HEADER.size, deadline)
        if header is None:
            return None, b""
        tag, length = _HEADER.unpack(header)
        payload = self._read_exact(length, deadline) if length else b""
        return (tag, payload) if payload is not None else (None, b"")

    def _abandon(self, program: Program, what: str, limit: float) -> None:
        exit_code = self._child.poll() if self._child is not None else None
        if exit_code is None:
            self.timeouts += 1
            reason = f"{what} took longer than {limit:g} s (an endless or pathologically slow loop?)"
        else:
            self.crashes += 1
            reason = (f"the render process died during the {what} (exit status {exit_code}: a driver crash or "
                      f"the {(self.memory_limit_bytes or 0) / 2**30:g} GiB memory cap on llvmpipe)")
        self.close()
        self.abandoned.add(program.name)
        log.warning("User program %s abandoned: %s. The render process was restarted and the program is "
                    "replaced (%d abandoned so far).", program.name, reason, len(self.abandoned))

    # ------------------------------------------------------------------ public API
    def render(self, program: Program, params: np.ndarray) -> np.ndarray | None:
        """uint8 [N, size, size, 3] for float32 ``params`` [N, K]; ``None`` when it fails to compile or is abandoned."""
        if program.name in self.abandoned:
            return None
        if self._child is None or self._owner_pid != os.getpid() or self._child.poll() is not None:
            self._child = None
            self._start()
        params = np.ascontiguousarray(params, dtype=np.float32)
        request = pickle.dumps((program, params), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self._child.stdin.write(_HEADER.pack(b"Q", len(request)) + request)
            self._child.stdin.flush()
        except (BrokenPipeError, OSError):
            self._abandon(program, "request", 0)
            return None
        tag, _ = self._read_frame(time.monotonic() + self.compile_timeout_s)
        if tag == FAILED:
            self.compile_failures += 1
            return None
        if tag != COMPILED:
            self._abandon(program, "compile", self.compile_timeout_s)
            return None
        out = np.empty((len(params), self.size, self.size, 3), dtype=np.uint8)
        flat = out.reshape(len(params), -1)
        done = 0
        while done < len(params):
            tag, payload = self._read_frame(time.monotonic() + self.draw_timeout_s * self._per_frame(program))
            if tag != IMAGES:
                self._abandon(program, "draw", self.draw_timeout_s)
                return None
            n = len(payload) // flat.shape[1]
            flat[done : done + n] = np.frombuffer(payload, dtype=np.uint8).reshape(n, -1)
            done += n
        return out

    def _per_frame(self, program: Program) -> int:
        """Draws per returned chunk: one image for Shadertoy programs, one tile grid otherwise."""
        return 1 if program.kind == "shadertoy" else self.tiles


# ---------------------------------------------------------------------- the child
def _die_with_parent(parent: int) -> None:
    """Linux: SIGKILL this process when its parent exits (a killed DataLoader worker leaves no renderer)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _one_pixel_target():
    """A function drawing a program into a 1-pixel framebuffer and waiting for it.

    llvmpipe translates a program to machine code at its first draw, not at link time; drawing one pixel
    first puts that translation under the compile limit, so the per-draw limit measures drawing only.
    """
    from OpenGL import GL

    fbo, rbo = GL.glGenFramebuffers(1), GL.glGenRenderbuffers(1)
    GL.glBindRenderbuffer(GL.GL_RENDERBUFFER, rbo)
    GL.glRenderbufferStorage(GL.GL_RENDERBUFFER, GL.GL_RGBA8, 1, 1)  # the renderer's format: same machine code
    GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, fbo)
    GL.glFramebufferRenderbuffer(GL.GL_FRAMEBUFFER, GL.GL_COLOR_ATTACHMENT0, GL.GL_RENDERBUFFER, rbo)

    def draw(handle: int) -> None:
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, fbo)
        GL.glViewport(0, 0, 1, 1)
        GL.glUseProgram(handle)
        GL.glDrawArrays(GL.GL_TRIANGLES, 0, 3)
        GL.glFinish()

    return draw


def serve(size: int, tiles: int, memory_limit: int, parent: int) -> None:
    """The child's loop: read a request from stdin, answer with frames on (the original) stdout."""
    _die_with_parent(parent)
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # anything else printing (Mesa, PyOpenGL) goes to stderr, never into the frames
    logging.basicConfig(level=logging.WARNING, format=f"render process {os.getpid()}: %(message)s")
    from OpenGL import GL

    from .renderer import Renderer

    renderer = Renderer(size, tiles=tiles)
    renderer._ensure_gl()
    if memory_limit and b"llvmpipe" in (GL.glGetString(GL.GL_RENDERER) or b""):
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))

    def send(tag: bytes, payload: bytes = b"") -> None:
        out.write(_HEADER.pack(tag, len(payload)))
        if payload:
            out.write(payload)

    first_draw = _one_pixel_target()
    send(READY)
    stdin = sys.stdin.buffer
    compiled_here: set[str] = set()
    while header := stdin.read(_HEADER.size):
        _, length = _HEADER.unpack(header)
        program, params = pickle.loads(stdin.read(length))
        compiled = renderer.compile(program)
        if compiled is None:
            send(FAILED)
            continue
        if program.name not in compiled_here:
            first_draw(compiled.handle)
            compiled_here.add(program.name)
        send(COMPILED)
        chunk = 1 if program.kind == "shadertoy" else renderer.tiles
        for start in range(0, len(params), chunk):
            send(IMAGES, renderer.render(program, params[start : start + chunk]).tobytes())


if __name__ == "__main__":
    serve(*(int(a) for a in sys.argv[1:5]))
