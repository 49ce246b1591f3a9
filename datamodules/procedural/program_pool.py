"""The program pool: which programs each block renders, drawn from a fixed, seed-defined set.

A run's programs come from a pool of ``pool`` programs, pool index ``i`` being the grammar program of
seed ``i`` (:func:`pool_program_seed`). The pool does not depend on the run's seed: like the paper's
shaders21k it is one fixed set of programs, so every run, worker and rank draws from the same programs,
and Mesa's on-disk shader cache (``MESA_SHADER_CACHE_DIR``, on by default) turns every program's
second compile, in any later process, into a cache load (measured here: ~40x cheaper than the cold
compile + LLVM JIT at the first draw; see ``benchmarks/render.py``).

Blocks walk through the pool in *cycles*: cycle ``c`` is a permutation of the pool keyed by
(seed, c); its first ``blocks_per_cycle * per_block`` entries are cut into consecutive runs of
``per_block`` programs, one per block. So

- a block's programs are distinct (``per_block <= pool``),
- consecutive blocks use disjoint programs until the cycle ends, so a run of ``n`` blocks sees
  ``min(n * per_block, blocks_per_cycle * per_block)`` distinct programs in its first cycle, and
- the schedule is a pure function of (seed, pool, per_block, block): the same for any worker count,
  world size or resume.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


def pool_program_seed(index: int) -> int:
    """The program seed of pool entry ``index`` (the pool is the programs of seeds 0 .. pool - 1)."""
    return int(index)


def blocks_per_cycle(pool: int, per_block: int) -> int:
    """Blocks before the pool is re-shuffled: each block takes ``per_block`` unused pool entries."""
    if not 1 <= per_block <= pool:
        raise ValueError(
            f"programs_per_block={per_block} needs a program pool of at least that many programs "
            f"(program_pool={pool}); raise data.program_pool or lower data.programs_per_block"
        )
    return pool // per_block


@lru_cache(maxsize=4)
def _cycle_order(seed: int, pool: int, cycle: int) -> np.ndarray:
    """int64 [pool]: the order in which cycle ``cycle`` visits the pool (a permutation, cached)."""
    return np.random.default_rng([seed, cycle, 0x9001]).permutation(pool)


def block_programs(seed: int, pool: int, per_block: int, block: int) -> np.ndarray:
    """int64 [per_block]: the distinct pool indices block ``block`` renders, in slot order."""
    cycle, position = divmod(block, blocks_per_cycle(pool, per_block))
    return _cycle_order(seed, pool, cycle)[position * per_block : (position + 1) * per_block].copy()


def distinct_programs(seed: int, pool: int, per_block: int, blocks: int) -> int:
    """How many distinct pool programs blocks ``0 .. blocks - 1`` schedule (replacements not counted).

    Exact, through :func:`block_programs`; a whole cycle covers ``blocks_per_cycle * per_block`` programs,
    so whole cycles after the first only add what earlier cycles left out.
    """
    seen = np.zeros(pool, dtype=bool)
    per_cycle = blocks_per_cycle(pool, per_block)
    for cycle_start in range(0, blocks, per_cycle):
        cycle = cycle_start // per_cycle
        used = min(blocks - cycle_start, per_cycle) * per_block
        seen[_cycle_order(seed, pool, cycle)[:used]] = True
        if seen.all():
            break
    return int(seen.sum())
