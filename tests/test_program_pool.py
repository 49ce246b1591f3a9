"""The program pool: many distinct programs per block and per run, scheduled as a pure function of the block."""

import numpy as np
import pytest

from datamodules.procedural.blocks import (
    BlockConfig,
    BlockMaker,
    fresh_program_seeds,
    scheduled_program_seeds,
)
from datamodules.procedural.program_pool import (
    block_programs,
    blocks_per_cycle,
    distinct_programs,
    pool_program_seed,
)
from datamodules.shaders import ShaderDataModule
from procedural_perception.core.config import ConfigError


def test_a_block_schedules_distinct_programs_and_cycles_cover_the_pool():
    pool, per_block = 1000, 64
    cycle = blocks_per_cycle(pool, per_block)
    blocks = [block_programs(7, pool, per_block, b) for b in range(cycle)]
    assert all(len(set(b.tolist())) == per_block for b in blocks)
    used = np.concatenate(blocks)
    assert len(set(used.tolist())) == cycle * per_block, "blocks of one cycle must not share programs"
    assert used.min() >= 0 and used.max() < pool
    assert np.array_equal(block_programs(7, pool, per_block, 3), blocks[3]), "a pure function of the block"
    assert not np.array_equal(block_programs(8, pool, per_block, 3), blocks[3]), "the seed reorders the pool"
    # The next cycle is a fresh permutation: together two cycles reach (almost) the whole pool.
    assert distinct_programs(7, pool, per_block, 2 * cycle) > cycle * per_block
    assert distinct_programs(7, pool, per_block, 5) == 5 * per_block


def test_distinct_count_matches_the_schedule():
    pool, per_block, blocks = 300, 64, 11  # crosses two cycle boundaries (4 blocks per cycle)
    seen = {int(i) for b in range(blocks) for i in block_programs(1, pool, per_block, b)}
    assert distinct_programs(1, pool, per_block, blocks) == len(seen)


@pytest.mark.parametrize("data", ["kml_mixup", "shaders", "mixup", "kml", "kml_mixup_pool"])
def test_a_cpu_profile_run_sees_at_least_5000_programs_and_64_per_block(data):
    """``make train DATA=<process>`` (the cpu profile, chosen without a GPU) through the real block schedule: at
    least 64 programs per block and 5,000 in a run, warmed before training; the paper profile draws 64 per
    block from a pool of 21,000 (shaders21k's count)."""
    from procedural_perception.core.config import compose, instantiate

    cfg = compose([f"data={data}", "profile=cpu"])
    dm = instantiate(cfg.data, rank=0, world_size=1)
    config = dm.config
    assert config.programs_per_block >= 64 and config.program_pool >= 5000 and dm.warm_programs
    assert len(set(scheduled_program_seeds(config, 0).tolist())) == config.programs_per_block
    dm.epoch, dm.batches_consumed = cfg.trainer.max_epochs - 1, dm.batches_per_epoch()  # the end of the run
    count = dm.distinct_programs()
    assert count >= 5000, f"a cpu-profile run sees only {count} distinct programs"
    paper = instantiate(compose([f"data={data}", "profile=paper"]).data, rank=0, world_size=1).config
    if data != "kml_mixup_pool":  # the ablation's config pins its own pool on every profile
        assert paper.program_pool >= 21_000 and paper.programs_per_block >= 64


def test_pool_smaller_than_a_block_is_a_clear_error():
    with pytest.raises(ConfigError, match="program_pool"):
        ShaderDataModule(programs_per_block=64, program_pool=10)
    with pytest.raises(ValueError, match="program_pool"):
        BlockConfig(programs_per_block=64, program_pool=-1)


def test_data_module_counts_programs_of_consumed_blocks():
    dm = ShaderDataModule(batch_size=32, num_workers=1, samples_per_epoch=1536, programs_per_block=128,
                          program_pool=5120, rank=0, world_size=1)
    assert dm.distinct_programs() == 0
    dm.batches_consumed = 17  # 544 samples: into the second block
    assert dm.distinct_programs() == 2 * 128
    dm.epoch, dm.batches_consumed = 19, 48  # the end of a 20-epoch run
    assert dm.distinct_programs() == 5120


@pytest.mark.egl
@pytest.mark.timeout(1800)  # 128 programs compile cold on a fresh machine (~0.16 s each idle, far more when loaded)
def test_a_pool_block_draws_its_ingredients_from_at_least_64_programs():
    import dataclasses

    import torch

    from procedural_perception.core.config import compose, instantiate

    config = instantiate(compose(["data=kml_mixup", "profile=cpu"]).data, rank=0, world_size=1).config
    config = dataclasses.replace(config, seed=5, image_size=16)  # the profile's block and pool, tiny images
    maker = BlockMaker(config)
    block = maker(0)
    assert block.shape == (config.block_size, 3, 16, 16)
    assert maker.stats.distinct_programs >= 64
    scheduled = {f"grammar-{i}" for i in block_programs(5, config.program_pool, config.programs_per_block, 0)}
    assert len(scheduled & maker.stats.distinct) >= 0.9 * len(scheduled), "most come from the schedule"
    draws = config.pool_size // config.programs_per_block  # pool images are in slot (program) order
    generator = torch.Generator().manual_seed(0)
    programs = torch.unique(maker.ingredient_indices(0, generator) // draws)
    assert len(programs) >= 64, f"a block's ingredients come from only {len(programs)} programs"


def test_data_stats_logs_distinct_programs_on_logging_steps():
    from types import SimpleNamespace

    from procedural_perception.training.data_stats import DataStats

    logged = []
    module = SimpleNamespace(log=lambda name, value, **kw: logged.append((name, value)))
    trainer = SimpleNamespace(datamodule=SimpleNamespace(distinct_programs=lambda: 256), global_step=10,
                              log_every_n_steps=5)
    DataStats().on_train_batch_end(trainer, module, None, None, 0)
    trainer.global_step = 11
    DataStats().on_train_batch_end(trainer, module, None, None, 0)
    trainer.datamodule = SimpleNamespace()  # a data module without the count: nothing logged
    trainer.global_step = 15
    DataStats().on_train_batch_end(trainer, module, None, None, 0)
    assert logged == [("data/distinct_programs", 256.0)]


def test_scheduled_program_seeds_follow_the_pool_or_the_fresh_draws():
    pooled = BlockConfig(process="shaders", seed=3, programs_per_block=8, program_pool=40)
    expected = [pool_program_seed(int(i)) for i in block_programs(3, 40, 8, 5)]
    assert scheduled_program_seeds(pooled, 5).tolist() == expected
    fresh = BlockConfig(process="shaders", seed=3, programs_per_block=8, program_pool=0)
    assert scheduled_program_seeds(fresh, 5).tolist() == fresh_program_seeds(3, 5, 8).tolist()
