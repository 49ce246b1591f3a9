"""Warming a program pool into Mesa's disk cache: once per (pool, image size, families), with progress, stamped."""

import logging

import pytest

from datamodules.procedural import warm_pool
from datamodules.shaders import ShaderDataModule


@pytest.fixture
def shader_cache(tmp_path, monkeypatch):
    """A fresh Mesa cache (and stamp folder) for this test; warm processes are spawned, so they inherit it."""
    monkeypatch.setenv("MESA_SHADER_CACHE_DIR", str(tmp_path / "mesa"))
    monkeypatch.delenv("MESA_SHADER_CACHE_DISABLE", raising=False)
    return tmp_path / "mesa"


@pytest.mark.egl
def test_a_pool_is_warmed_once_with_progress_and_stamped(shader_cache, monkeypatch, caplog):
    monkeypatch.setattr(warm_pool, "PROGRESS_EVERY_S", 0.0)  # a progress line after every chunk
    monkeypatch.setattr(warm_pool, "CHUNK", 3)
    with caplog.at_level(logging.INFO, logger=warm_pool.__name__):
        result = warm_pool.ensure_warm(7, 16, workers=2)
    assert result["compiled"] + result["failed"] == 7 and result["compiled"] >= 6
    stamp = warm_pool.stamp_path(7, 16)
    assert stamp.is_file() and stamp.is_relative_to(shader_cache)
    lines = [r.getMessage() for r in caplog.records if "warming programs" in r.getMessage()]
    assert lines and lines[-1].startswith("warming programs into Mesa's shader cache: 7 / 7 (100 %)")
    assert any((shader_cache / "mesa_shader_cache").rglob("*")), "the compiled programs are in Mesa's cache"
    assert warm_pool.ensure_warm(7, 16) is None, "a stamped pool is not warmed again"
    assert warm_pool.ensure_warm(7, 16, workers=1, force=True)["compiled"] == result["compiled"], "unless forced"
    assert not warm_pool.stamp_path(7, 24).exists(), "each image size is warmed on its own"
    assert warm_pool.stamp_path(7, 16, {"patterns": 1.0, "flat": 1.0}) != stamp, "the families change the programs"


def test_a_disabled_cache_is_not_warmed(shader_cache, monkeypatch):
    monkeypatch.setenv("MESA_SHADER_CACHE_DISABLE", "true")
    assert warm_pool.ensure_warm(7, 16) is None
    assert not warm_pool.stamp_path(7, 16).exists()


@pytest.mark.egl
def test_prepare_data_warms_the_pool_only_when_asked(shader_cache):
    def module(**kw):
        return ShaderDataModule(image_size=16, num_workers=0, block_size=8, programs_per_block=2, **kw)

    module(program_pool=0).prepare_data()  # fresh programs: nothing to warm
    module(program_pool=5, warm_programs=False).prepare_data()
    ShaderDataModule("dead_leaves", image_size=16, program_pool=5).prepare_data()  # no programs
    assert not (shader_cache / "procedural_pool_warm").exists()
    module(program_pool=5).prepare_data()
    assert warm_pool.stamp_path(5, 16).is_file()


def test_the_command_line_says_when_a_pool_is_already_warm(shader_cache, capsys):
    stamp = warm_pool.stamp_path(3, 16)
    stamp.parent.mkdir(parents=True)
    stamp.write_text("{}")
    warm_pool.main(["--pool", "3", "--image-size", "16"])
    assert "already warm" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        warm_pool.main(["--pool", "0"])


def test_the_command_line_refuses_unknown_families_and_bad_json(shader_cache, capsys):
    for bad in ('{"patterns": 1, "raymrach": 1}', "{patterns: 1}", '["patterns"]'):
        with pytest.raises(SystemExit) as exit_info:
            warm_pool.main(["--pool", "3", "--image-size", "16", "--families", bad])
        assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown program family raymrach; valid families: patterns" in err
    assert not (shader_cache / "procedural_pool_warm").exists()


def test_progress_rate_counts_from_the_first_finished_chunk():
    """Worker start-up before the first chunk must not make a fast (cached) pool look slow."""
    import re
    import time

    def rate(line: str) -> float:
        return float(re.search(r"([\d.]+) programs/s", line).group(1))

    now = time.perf_counter()
    assert 10 < rate(warm_pool._progress(32, 256, since=(16, now - 1.0))) <= 16.5  # 16 in ~1 s, not 32 in the run
