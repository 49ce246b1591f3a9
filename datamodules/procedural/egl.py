"""Headless OpenGL contexts through EGL: no window system, no X server.

Device choice, in order:

1. A hardware EGL device (NVIDIA, AMD, Intel). On a multi-GPU node each process takes the device of
   its *local rank* (``LOCAL_RANK`` from torchrun / Lightning / SLURM), so eight DDP ranks render on
   eight GPUs. NVIDIA devices expose their CUDA ordinal (``EGL_NV_device_cuda``); devices are ordered
   by it, and ``CUDA_VISIBLE_DEVICES`` (when it lists integers) maps the local rank to the physical
   GPU, so rank r renders on the GPU its training runs on.
2. Mesa's software device (llvmpipe, ``EGL_MESA_device_software``): desktop GL 4.5 core on the CPU.
3. Mesa's surfaceless platform (``EGL_PLATFORM_SURFACELESS_MESA``), for drivers without device
   enumeration.

``eglGetDisplay(EGL_DEFAULT_DISPLAY)`` is not used: Mesa's default platform is X11 and fails headless.

Contexts are created lazily, by the first :func:`current_context` call *inside the process that
renders*. A process forked after its parent created a context and drew hangs at its first draw, so
DataLoader workers each create their own (see ``datamodules/shaders.py``, which switches the loader to
``spawn`` when the parent already holds a context).

Missing system libraries raise :class:`EGLUnavailableError` naming the Debian packages to install.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from dataclasses import dataclass

# PyOpenGL picks its platform at first import; EGL must be chosen before anything imports OpenGL.
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
# Mesa's on-disk shader cache (on by default, ~/.cache/mesa_shader_cache or MESA_SHADER_CACHE_DIR) keeps
# compiled programs across processes; its default 1 GB limit would evict part of a 21,000-program pool
# (~40 KB per program and image size, measured with llvmpipe). Read when the driver loads.
os.environ.setdefault("MESA_SHADER_CACHE_MAX_SIZE", "4G")

log = logging.getLogger(__name__)

DEBIAN_PACKAGES = "libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0"

EGL_PLATFORM_DEVICE_EXT = 0x313F
EGL_PLATFORM_SURFACELESS_MESA = 0x31DD
EGL_CUDA_DEVICE_NV = 0x323A

_CONTEXT: Context | None = None


class EGLUnavailableError(RuntimeError):
    """Headless EGL cannot be used in this process (missing libraries or no usable device)."""


@dataclass
class Context:
    """A current EGL context. ``device`` says where it renders (for logs and benchmarks)."""

    display: object
    context: object
    device: str
    pid: int


def check_libraries() -> None:
    """Raise :class:`EGLUnavailableError` with the install command when libEGL / libOpenGL are missing.

    Checked with ctypes first: without libEGL, ``import OpenGL.EGL`` fails with an AttributeError
    deep inside PyOpenGL that names neither the library nor the fix.
    """
    missing = []
    for lib in ("libEGL.so.1", "libOpenGL.so.0"):
        try:
            ctypes.CDLL(lib)
        except OSError:
            missing.append(lib)
    if missing:
        raise EGLUnavailableError(
            f"Headless rendering needs {', '.join(missing)}, which could not be loaded. Install the EGL "
            f"and Mesa libraries: `sudo apt-get install {DEBIAN_PACKAGES}` (Debian/Ubuntu), or `make system`."
        )
    platform = sys.modules.get("OpenGL.platform")
    chosen = type(platform.PLATFORM).__name__ if platform is not None else "EGLPlatform"
    if os.environ.get("PYOPENGL_PLATFORM") != "egl" or "EGL" not in chosen:
        raise EGLUnavailableError(
            f"PYOPENGL_PLATFORM={os.environ.get('PYOPENGL_PLATFORM')!r}, but headless rendering needs 'egl'. "
            "Something imported OpenGL before datamodules.procedural.egl: set PYOPENGL_PLATFORM=egl in the "
            "environment (the Makefile does) or import this module first."
        )


def current_context() -> Context:
    """This process's EGL context, created on first use (and again after a fork)."""
    global _CONTEXT
    if _CONTEXT is None or _CONTEXT.pid != os.getpid():
        _CONTEXT = _create_context()
    return _CONTEXT


def context_exists() -> bool:
    """True when this very process already holds a context (forking it now would hang children)."""
    return _CONTEXT is not None and _CONTEXT.pid == os.getpid()


def _preload_conflicting_llvm() -> None:
    """Load triton (torch's compiler, with its own LLVM) before Mesa loads libLLVM.

    Measured here: importing triton (e.g. via torchvision or lightning) *after* llvmpipe has created a
    context segfaults inside triton's shared library; loaded first, both coexist.
    """
    try:
        import triton  # noqa: F401
    except Exception:  # not installed (CPU wheels) or broken: nothing to pre-empt
        pass


def _create_context() -> Context:
    check_libraries()
    _preload_conflicting_llvm()
    from OpenGL import EGL

    errors: list[str] = []
    for display, name in _candidate_displays(EGL, errors):
        try:
            context = _make_current(EGL, display)
        except EGLUnavailableError as err:
            errors.append(f"{name}: {err}")
            continue
        log.info("EGL context on %s", name)
        return Context(display, context, name, os.getpid())
    raise EGLUnavailableError(
        "No EGL display gave an OpenGL 3.3+ context: " + "; ".join(errors) + ". On a CPU-only machine install "
        f"Mesa: `sudo apt-get install {DEBIAN_PACKAGES}`; with a GPU check the driver's EGL vendor files."
    )


def _candidate_displays(EGL, errors: list[str]):
    """Yield (display, description) in preference order: hardware device, software device, surfaceless."""
    from OpenGL.EGL.EXT.device_base import egl_get_devices
    from OpenGL.EGL.EXT.device_query import eglQueryDeviceAttribEXT, eglQueryDeviceStringEXT
    from OpenGL.EGL.EXT.platform_base import eglGetPlatformDisplayEXT

    try:
        devices = list(egl_get_devices(16))
    except Exception as err:  # EGL without EGL_EXT_device_enumeration
        errors.append(f"device enumeration: {err}")
        devices = []
    hardware, software = [], []
    for device in devices:
        extensions = (eglQueryDeviceStringEXT(device, EGL.EGL_EXTENSIONS) or b"").decode()
        if "EGL_MESA_device_software" in extensions:
            software.append(device)
            continue
        cuda = None
        if "EGL_NV_device_cuda" in extensions:
            value = (EGL.EGLAttrib * 1)()
            if eglQueryDeviceAttribEXT(device, EGL_CUDA_DEVICE_NV, value):
                cuda = int(value[0])
        hardware.append((cuda if cuda is not None else len(hardware), device))
    hardware.sort(key=lambda pair: pair[0])
    if hardware:
        index = _hardware_index([cuda for cuda, _ in hardware])
        order = [hardware[index]] + [h for i, h in enumerate(hardware) if i != index]
        for cuda, device in order:
            yield eglGetPlatformDisplayEXT(EGL_PLATFORM_DEVICE_EXT, device, None), f"hardware EGL device {cuda}"
    for device in software:
        yield eglGetPlatformDisplayEXT(EGL_PLATFORM_DEVICE_EXT, device, None), "Mesa software device (llvmpipe)"
    yield eglGetPlatformDisplayEXT(EGL_PLATFORM_SURFACELESS_MESA, None, None), "Mesa surfaceless platform"


def _hardware_index(cuda_ids: list[int]) -> int:
    """Which hardware device this process uses: the one of its local rank.

    With ``CUDA_VISIBLE_DEVICES=2,3`` local rank 1 trains on physical GPU 3, and EGL (which ignores that
    variable) lists physical GPUs, so the rank is mapped through the list first.
    """
    from procedural_perception.core.distributed import local_rank

    rank = local_rank()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    entries = [v.strip() for v in visible.split(",") if v.strip()]
    if entries and all(v.isdigit() for v in entries) and rank < len(entries):
        physical = int(entries[rank])
        if physical in cuda_ids:
            return cuda_ids.index(physical)
    return rank % len(cuda_ids)


def _make_current(EGL, display):
    """Initialise ``display``, bind desktop OpenGL, create a context with no surface and make it current."""
    if not display:
        raise EGLUnavailableError("no display")
    major, minor = EGL.EGLint(), EGL.EGLint()
    try:
        if not EGL.eglInitialize(display, major, minor):
            raise EGLUnavailableError("eglInitialize failed")
    except EGL.EGLError as err:
        raise EGLUnavailableError(f"eglInitialize failed ({err})") from err
    # Offscreen rendering only: ask for pbuffer-capable configs (the default asks for windows: 0 configs).
    attribs = [EGL.EGL_SURFACE_TYPE, EGL.EGL_PBUFFER_BIT, EGL.EGL_RENDERABLE_TYPE, EGL.EGL_OPENGL_BIT,
               EGL.EGL_RED_SIZE, 8, EGL.EGL_GREEN_SIZE, 8, EGL.EGL_BLUE_SIZE, 8, EGL.EGL_NONE]
    config = EGL.EGLConfig()
    count = EGL.EGLint()
    if not EGL.eglChooseConfig(display, (EGL.EGLint * len(attribs))(*attribs), config, 1, count) or count.value < 1:
        raise EGLUnavailableError("no pbuffer/OpenGL config")
    if not EGL.eglBindAPI(EGL.EGL_OPENGL_API):
        raise EGLUnavailableError("desktop OpenGL API unavailable")
    ctx_attribs = [EGL.EGL_CONTEXT_MAJOR_VERSION, 3, EGL.EGL_CONTEXT_MINOR_VERSION, 3,
                   EGL.EGL_CONTEXT_OPENGL_PROFILE_MASK, EGL.EGL_CONTEXT_OPENGL_CORE_PROFILE_BIT, EGL.EGL_NONE]
    context = EGL.eglCreateContext(display, config, EGL.EGL_NO_CONTEXT, (EGL.EGLint * len(ctx_attribs))(*ctx_attribs))
    if not context:
        raise EGLUnavailableError("eglCreateContext failed (no OpenGL 3.3 core)")
    # Surfaceless: rendering goes to our own framebuffer object (EGL_KHR_surfaceless_context).
    if not EGL.eglMakeCurrent(display, EGL.EGL_NO_SURFACE, EGL.EGL_NO_SURFACE, context):
        raise EGLUnavailableError("eglMakeCurrent without a surface failed")
    return context
