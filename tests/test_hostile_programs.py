"""Hostile user programs (issue: hostile programs): an endless or pathologically slow loop, a render process
that dies, NaN/Inf output, programs beyond llvmpipe's resource limits, and thousands that fail to compile.

User programs (``data.shader_dir``) are drawn in a killable render process (datamodules/procedural/sandbox.py).
The programs and the trial helpers are those of ``make bench-faults`` (benchmarks/faults_programs.py).
"""

import logging
import pickle
import threading
import time

import numpy as np
import pytest
import torch

from benchmarks.faults_programs import (
    BROKEN,
    ENDLESS,
    GOOD,
    GOOD_RINGS,
    HALF_NAN,
    HUGE_ARRAY,
    NAN_INF,
    TOO_MANY_UNIFORMS,
    compile_storm,
    hostile_trial,
    make_block,
    write_folder,
)

pytestmark = pytest.mark.egl


def program(name: str, source: str):
    from datamodules.procedural.programs import Program

    return Program(name, source, "shadertoy", np.array([0.1], np.float32), np.array([10.0], np.float32))


def params(n: int = 2) -> np.ndarray:
    return np.random.default_rng(0).uniform(0.1, 10.0, (n, 1)).astype(np.float32)


@pytest.mark.slow
def test_an_endless_loop_is_abandoned_logged_and_replaced_like_a_compile_failure(tmp_path, caplog):
    folder = write_folder(tmp_path / "user", {"good": GOOD, "rings": GOOD_RINGS, "endless": ENDLESS})
    start = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="datamodules.procedural.sandbox"):
        maker, block = make_block(folder, seed=0)
    assert time.perf_counter() - start < 90  # drawn in-process, one draw alone would take minutes at 224 px
    assert maker.renderer.timeouts == 1 and maker.renderer.abandoned == {"shadertoy-endless.glsl"}
    assert maker.renderer.restarts == 1  # refused at once when drawn again: one timeout, one restart
    assert "shadertoy-endless.glsl abandoned: draw took longer than 1 s" in caplog.text
    twin = write_folder(tmp_path / "twin", {"good": GOOD, "rings": GOOD_RINGS, "endless": BROKEN})
    _, expected = make_block(twin, seed=0)
    np.testing.assert_array_equal(block, expected)  # the stream stays a function of (seed, block)


@pytest.mark.slow
def test_an_endless_loop_in_a_dataloader_worker_does_not_freeze_the_loader(tmp_path):
    from datamodules.shaders import ShaderDataModule

    folder = write_folder(tmp_path / "user", {"good": GOOD, "endless": ENDLESS})
    module = ShaderDataModule(process="shaders", image_size=32, batch_size=4, num_workers=1, samples_per_epoch=32,
                              block_size=8, programs_per_block=4, shader_dir=str(folder), draw_timeout_s=1.0)
    start = time.perf_counter()
    batches = list(module.train_dataloader())
    assert time.perf_counter() - start < 120
    assert len(batches) == 8 and all(b.shape == (4, 3, 32, 32) and torch.isfinite(b).all() for b in batches)


def test_a_render_process_that_dies_mid_draw_is_restarted_and_the_program_replaced(caplog):
    from datamodules.procedural.sandbox import SandboxedRenderer

    renderer = SandboxedRenderer(32, draw_timeout_s=120.0)
    assert renderer.render(program("good", GOOD), params()).shape == (2, 32, 32, 3)
    child = renderer._child
    threading.Timer(0.5, child.kill).start()  # stands for a driver crash while drawing
    with caplog.at_level(logging.WARNING, logger="datamodules.procedural.sandbox"):
        assert renderer.render(program("endless", ENDLESS), params()) is None
    assert renderer.crashes == 1 and renderer.timeouts == 0 and "the render process died during the" in caplog.text
    images = renderer.render(program("rings", GOOD_RINGS), params())
    assert images.shape == (2, 32, 32, 3) and renderer.restarts == 1 and renderer._child is not child
    assert renderer.render(program("endless", ENDLESS), params()) is None  # abandoned: refused without a draw
    renderer.close()


def test_nan_and_inf_are_clamped_and_an_all_nan_program_is_replaced(tmp_path):
    from datamodules.procedural.renderer import Renderer, degenerate

    renderer = Renderer(32)
    nan_images = renderer.render(program("nan", NAN_INF), params(4))
    half = renderer.render(program("half", HALF_NAN), params(4))
    assert degenerate(nan_images).all()  # one flat colour: redrawn, then the program replaced
    assert not degenerate(half).any()  # NaN pixels become a defined colour; the right half is a real image
    left = half[:, :, :16].reshape(-1, 3)
    assert (left == left[0]).all()  # the clamp maps NaN to one value, not garbage
    ok, lost, _, detail = hostile_trial({"nan": NAN_INF, "half_nan": HALF_NAN}, ["nan"], seed=0, work=tmp_path)
    assert ok and lost == 0, detail


@pytest.mark.slow
def test_programs_beyond_llvmpipe_limits_are_replaced(tmp_path):
    ok, lost, _, detail = hostile_trial({"uniforms": TOO_MANY_UNIFORMS, "huge_array": HUGE_ARRAY},
                                        ["uniforms", "huge_array"], seed=1, work=tmp_path)
    assert ok and lost == 0, detail


@pytest.mark.slow
def test_the_memory_cap_kills_only_the_render_process(caplog):
    from datamodules.procedural.sandbox import SandboxedRenderer

    renderer = SandboxedRenderer(32, draw_timeout_s=120.0, memory_limit_bytes=int(1.3 * 2**30))
    with caplog.at_level(logging.WARNING, logger="datamodules.procedural.sandbox"):
        assert renderer.render(program("huge", HUGE_ARRAY), params()) is None
    assert renderer.crashes == 1 and "1.3 GiB memory cap on llvmpipe" in caplog.text
    assert renderer.render(program("good", GOOD), params()).shape == (2, 32, 32, 3)
    renderer.close()


def test_thousands_of_programs_that_fail_to_compile_stop_with_a_clear_error(tmp_path):
    ok, _, seconds, detail = compile_storm(2000, tmp_path)
    assert ok, detail
    assert seconds < 120


def test_a_sandboxed_renderer_pickles_without_its_process_and_restarts_in_the_new_owner():
    from datamodules.procedural.sandbox import SandboxedRenderer

    renderer = SandboxedRenderer(32)
    renderer.render(program("good", GOOD), params())
    copy = pickle.loads(pickle.dumps(renderer))
    assert copy._child is None and renderer._child is not None
    np.testing.assert_array_equal(copy.render(program("good", GOOD), params()),
                                  renderer.render(program("good", GOOD), params()))
    renderer.close()
    copy.close()


def test_a_draw_limit_below_its_minimum_is_a_configuration_error(tmp_path):
    from datamodules.shaders import ShaderDataModule
    from procedural_perception.core.config import ConfigError

    with pytest.raises(ConfigError, match="data.draw_timeout_s must be at least"):
        ShaderDataModule(process="shaders", shader_dir=str(tmp_path), draw_timeout_s=0)
