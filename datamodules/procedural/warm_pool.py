"""Compile a program pool once into Mesa's on-disk shader cache, before training needs it.

On llvmpipe a program's first compile on a machine (GLSL compile + LLVM JIT at its first draw) costs
~40x what loading it from Mesa's disk cache costs (``make bench-render``: ``programs/cold_compile`` and
``programs/warm_cache_load``). A run draws its programs from a fixed pool (:mod:`.program_pool`), so
compiling the pool once makes every later run on the machine, at any seed, worker count or world size,
start with warm programs. Sources depend on the image size (``TILE_SIZE``): warm each size you train at.

    python -m datamodules.procedural.warm_pool --pool 5120 --image-size 64     # the cpu profile
    python -m datamodules.procedural.warm_pool --pool 21000 --image-size 224   # the paper profile

Runs ``workers`` processes (one EGL context each), each compiling and drawing its share of the
programs once. Without this step the first run compiles its programs as it meets them (slower, same
samples: the cache never changes what is rendered).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time

import numpy as np

from . import egl
from .program_pool import pool_program_seed
from .programs import generate_program


def _warm_share(indices: list[int], image_size: int) -> tuple[int, int]:
    """Compile and draw the pool programs ``indices`` once each in this process: (compiled, failed)."""
    from .renderer import Renderer

    os.environ.setdefault("LP_NUM_THREADS", "1")  # one core per process: the work is JIT, not pixels
    renderer = Renderer(image_size, tiles=1, cache_size=1)
    rng = np.random.default_rng(0x3A9)
    compiled = failed = 0
    for index in indices:
        program = generate_program(pool_program_seed(index))
        if renderer.render(program, program.sample_params(rng, 1)) is None:
            failed += 1
        else:
            compiled += 1
    return compiled, failed


def warm_programs(indices, image_size: int, workers: int | None = None) -> dict:
    """Compile the pool programs ``indices`` at ``image_size`` into the disk cache; counts and seconds."""
    egl.check_libraries()
    indices = [int(i) for i in indices]
    workers = max(1, min(workers or os.cpu_count() or 1, len(indices)))
    start = time.perf_counter()
    with mp.get_context("spawn").Pool(workers) as processes:
        shares = processes.starmap(_warm_share, [(indices[w::workers], image_size) for w in range(workers)])
    compiled, failed = (sum(s[i] for s in shares) for i in range(2))
    return {"compiled": compiled, "failed": failed, "seconds": time.perf_counter() - start}


def warm_pool(pool: int, image_size: int, workers: int | None = None) -> dict:
    """Compile every program of a ``pool`` at ``image_size`` into the disk cache; counts and seconds."""
    return warm_programs(range(pool), image_size, workers)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", type=int, default=21_000, help="programs in the pool (data.program_pool)")
    parser.add_argument("--image-size", type=int, default=224, help="render size (data.image_size)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    args = parser.parse_args(argv)
    if args.pool < 1 or args.image_size < 8:
        parser.error("--pool must be >= 1 and --image-size >= 8")
    result = warm_pool(args.pool, args.image_size, args.workers)
    print(f"{result['compiled']} programs compiled into Mesa's shader cache at {args.image_size} px "
          f"({result['failed']} failed to compile, replaced at run time) in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
