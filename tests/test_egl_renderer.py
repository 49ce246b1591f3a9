"""Headless EGL context and renderer: determinism, orientation, tiling, failures and degenerate images."""

import ctypes

import numpy as np
import pytest

from datamodules.procedural import egl
from datamodules.procedural.programs import Program, generate_program
from datamodules.procedural.renderer import Renderer, degenerate


def _program(name: str, body: str, params: int = 1) -> Program:
    return Program(name, "vec3 image(vec2 p) {\n" + body + "\n}\n", "grammar",
                   np.zeros(params, np.float32), np.ones(params, np.float32))


def test_missing_egl_names_the_debian_packages(monkeypatch):
    real = ctypes.CDLL

    def fake(name, *args, **kwargs):
        if "EGL" in name:
            raise OSError(f"{name}: cannot open shared object file")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(ctypes, "CDLL", fake)
    with pytest.raises(egl.EGLUnavailableError) as err:
        egl.check_libraries()
    for package in ("libegl1", "libegl-mesa0", "libgl1-mesa-dri", "libopengl0"):
        assert package in str(err.value)


@pytest.mark.egl
def test_context_and_deterministic_tiled_rendering():
    renderer = Renderer(64, tiles=4)
    assert egl.current_context().device
    program = generate_program(11)
    params = program.sample_params(np.random.default_rng(1), 6)  # 6 draws: one full and one partial framebuffer
    a = renderer.render(program, params)
    b = Renderer(64, tiles=1).render(program, params)
    assert a.shape == (6, 64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b), "tiling must not change pixels"
    assert np.array_equal(a, renderer.render(program, params)), "renders must be byte-identical"


@pytest.mark.egl
def test_rows_come_back_top_down():
    renderer = Renderer(32, tiles=4)
    images = renderer.render(_program("top-white", "return vec3(p.y > 0.0 ? 1.0 : 0.0);"), np.zeros((2, 1), np.float32))
    assert (images[:, :16] == 255).all() and (images[:, 16:] == 0).all()


@pytest.mark.egl
def test_failed_compile_is_logged_and_not_fatal(caplog):
    renderer = Renderer(32, tiles=2)
    broken = _program("broken", "return undefined_function(p);")
    assert renderer.render(broken, np.zeros((2, 1), np.float32)) is None
    assert renderer.compile_failures == 1
    assert "failed to compile" in caplog.text
    # The renderer keeps working afterwards.
    assert renderer.render(generate_program(2), generate_program(2).sample_params(np.random.default_rng(0), 2)) is not None


def test_degenerate_detection():
    rng = np.random.default_rng(0)
    flat = np.full((1, 64, 64, 3), 120, np.uint8)
    specks = flat.copy()
    specks[0, ::16, ::16] = 255  # one flat colour with a few specks
    noisy = rng.integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    gradient = np.broadcast_to(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None, None], (1, 64, 64, 3)).copy()
    assert degenerate(np.concatenate([flat, specks, noisy, gradient])).tolist() == [True, True, False, False]


@pytest.mark.egl
def test_nan_and_constant_programs_render_degenerate():
    renderer = Renderer(32, tiles=2)
    nan = renderer.render(_program("nan", "return vec3(sqrt(-1.0 - dot(p, p)));"), np.zeros((2, 1), np.float32))
    const = renderer.render(_program("const", "return vec3(0.2, 0.5, P(0));"), np.full((2, 1), 0.3, np.float32))
    assert degenerate(nan).all() and degenerate(const).all()


@pytest.mark.egl
def test_shadertoy_folder(tmp_path):
    from datamodules.procedural.shadertoy import load_shadertoy_folder

    (tmp_path / "waves.glsl").write_text(
        "void mainImage(out vec4 fragColor, in vec2 fragCoord) {\n"
        "    vec2 uv = fragCoord / iResolution.xy;\n"
        "    fragColor = vec4(0.5 + 0.5 * cos(iTime + uv.xyx * 6.0 + vec3(0, 2, 4)), 1.0);\n}\n"
    )
    (tmp_path / "notes.txt").write_text("not a shader")
    programs = load_shadertoy_folder(tmp_path)
    assert [p.kind for p in programs] == ["shadertoy"]
    images = Renderer(48).render(programs[0], np.array([[1.0], [4.0]], np.float32))
    assert not degenerate(images).any() and not np.array_equal(images[0], images[1])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no Shadertoy programs"):
        load_shadertoy_folder(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_shadertoy_folder(tmp_path / "missing")
