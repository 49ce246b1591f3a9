"""Compile a program pool once into Mesa's on-disk shader cache, before training needs it.

On llvmpipe a program's first compile on a machine (GLSL compile + LLVM JIT at its first draw, ~160 ms)
costs ~20x what loading it from Mesa's disk cache costs (~9 ms; ``python -m benchmarks.render pool``: rows
``programs/cold_compile_64px`` and ``programs/cached_load_64px``). A run draws its programs from a fixed
pool (:mod:`.program_pool`), so compiling the pool once makes every later run on the machine, at any seed,
worker count or world size, start with warm programs. Sources depend on the image size (``TILE_SIZE``) and
the family weights: each (pool, size, families) is warmed on its own.

:meth:`datamodules.shaders.ShaderDataModule.prepare_data` calls :func:`ensure_warm` (Lightning runs it once
per node, before training; ``data.warm_programs=false`` skips it), so ``make train DATA=kml_mixup`` warms
its pool on a machine's first run (5,120 programs at 64 px: 474 s on 2 cores), with progress lines, and a stamp
makes every later check instant. By hand:

    python -m datamodules.procedural.warm_pool --pool 5120 --image-size 64     # the cpu profile
    python -m datamodules.procedural.warm_pool --pool 21000 --image-size 224   # the paper profile

Runs ``workers`` processes (one EGL context each), each compiling and drawing its share of the
programs once. Without this step a run compiles its programs as it meets them (slower, same samples:
the cache never changes what is rendered).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import multiprocessing as mp
import os
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from functools import cache
from pathlib import Path

import numpy as np

from procedural_perception.core.atomic import atomic_write_json

from . import egl
from .program_pool import pool_program_seed
from .programs import family_weights, generate_program

log = logging.getLogger(__name__)

CHUNK = 16  # programs per task: progress every few seconds, shares balanced between processes
MAX_WORKERS = 8  # processes by default: each holds a GL context (on a GPU node, GPU memory), JIT needs one core
PROGRESS_EVERY_S = 10.0  # seconds between progress lines (they go to the log: no terminal needed)


@cache
def _renderer(image_size: int):
    """This process's one renderer per size: its small cache frees each program's GL objects as others come."""
    from .renderer import Renderer

    os.environ.setdefault("LP_NUM_THREADS", "1")  # one core per process: the work is JIT, not pixels
    return Renderer(image_size, tiles=1, cache_size=8)


def _warm_share(indices: list[int], image_size: int, families: dict | None, engine: str) -> tuple[int, int]:
    """Compile and draw the pool programs ``indices`` once each in this process: (compiled, failed).

    Programs that share a compiled shader (the interpreted engine's variants) compile once per process: the
    renderer caches by compile key."""
    renderer = _renderer(image_size)
    rng = np.random.default_rng(0x3A9)
    compiled = failed = 0
    for index in indices:
        program = generate_program(pool_program_seed(index), families, engine)
        if renderer.render(program, program.sample_params(rng, 1)) is None:
            failed += 1
        else:
            compiled += 1
    return compiled, failed


def _progress(done: int, total: int, since: tuple[int, float]) -> str:
    """One progress line, the rate measured from ``since`` = (done, time) at the first finished chunk: the
    processes' start-up before it (~10 s of imports) would make a cached pool look slow."""
    rate = (done - since[0]) / max(time.perf_counter() - since[1], 1e-9)
    left = (total - done) / max(rate, 1e-9)
    return (f"warming programs into Mesa's shader cache: {done:,} / {total:,} ({100 * done / total:.0f} %), "
            f"{rate:.1f} programs/s, about {left / 60:.0f} min left")


def warm_programs(indices, image_size: int, workers: int | None = None, families: Mapping[str, float] | None = None,
                  engine: str = "compiled") -> dict:
    """Compile the pool programs ``indices`` at ``image_size`` into the disk cache; counts and seconds.

    Logs a progress line (done, rate, time left) every :data:`PROGRESS_EVERY_S` seconds."""
    egl.check_libraries()
    indices = [int(i) for i in indices]
    if not indices:
        return {"compiled": 0, "failed": 0, "seconds": 0.0}
    families = None if families is None else dict(families)
    workers = max(1, min(workers or min(os.cpu_count() or 1, MAX_WORKERS), len(indices)))
    chunks = [indices[i : i + CHUNK] for i in range(0, len(indices), CHUNK)]
    start = last = time.perf_counter()
    compiled = failed = done = 0
    first = None  # (done, time) at the first finished chunk: rates are measured from there
    with mp.get_context("spawn").Pool(workers) as processes:
        tasks = [(chunk, image_size, families, engine) for chunk in chunks]
        for chunk, (ok, bad) in processes.imap_unordered(_chunk_task, tasks):
            compiled, failed, done = compiled + ok, failed + bad, done + len(chunk)
            now = time.perf_counter()
            if first is None:
                first = (done, now)
            elif now - last >= PROGRESS_EVERY_S:
                log.info(_progress(done, len(indices), first))
                last = now
    return {"compiled": compiled, "failed": failed, "seconds": time.perf_counter() - start}


def _chunk_task(task: tuple) -> tuple[list[int], tuple[int, int]]:
    """One chunk in a pool process: (its indices, (compiled, failed))."""
    return task[0], _warm_share(*task)


def warm_pool(pool: int, image_size: int, workers: int | None = None, families: Mapping[str, float] | None = None,
              engine: str = "compiled") -> dict:
    """Compile every program of a ``pool`` at ``image_size`` into the disk cache; counts and seconds."""
    return warm_programs(range(pool), image_size, workers, families, engine)


# ----------------------------------------------------------------------------- the stamp of a warmed pool
def shader_cache_base() -> Path:
    """The folder Mesa keeps its shader cache in (``MESA_SHADER_CACHE_DIR``, else the XDG cache home)."""
    folder = os.environ.get("MESA_SHADER_CACHE_DIR")
    if folder:
        return Path(folder)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def pool_key(pool: int, image_size: int, families: Mapping[str, float] | None, engine: str) -> str:
    """A digest of what the pool compiles to: its size, the image size, families, engine and the full GLSL
    sources of 32 programs spread over the pool (a change to the generator or its library changes them)."""
    from .renderer import full_source

    digest = hashlib.sha256(repr((pool, image_size, sorted((families or {}).items()), engine)).encode())
    for index in np.unique(np.linspace(0, pool - 1, 32).astype(int)):
        digest.update(full_source(generate_program(pool_program_seed(int(index)), families, engine), image_size).encode())
    return digest.hexdigest()[:16]


def stamp_path(pool: int, image_size: int, families: Mapping[str, float] | None = None,
               engine: str = "compiled") -> Path:
    """Where :func:`ensure_warm` records a warmed pool: beside Mesa's cache, so clearing one clears both."""
    name = f"pool{pool}_{image_size}px_{pool_key(pool, image_size, families, engine)}.json"
    return shader_cache_base() / "procedural_pool_warm" / name


def ensure_warm(pool: int, image_size: int, families: Mapping[str, float] | None = None, engine: str = "compiled",
                workers: int | None = None, force: bool = False) -> dict | None:
    """Warm the pool unless its stamp says it already is (``force``: warm anyway); the warm's counts, or None
    when nothing was done.

    Mesa's cache being switched off (``MESA_SHADER_CACHE_DISABLE``) makes warming pointless: it is skipped
    with a warning. If Mesa evicts entries later (its size limit) or is upgraded, the stamp overstates the
    warmth: programs then compile as they are met, with the same samples."""
    if os.environ.get("MESA_SHADER_CACHE_DISABLE", "").lower() in ("1", "true", "yes"):
        log.warning("MESA_SHADER_CACHE_DISABLE is set: the program pool is not warmed, every run compiles its programs")
        return None
    stamp = stamp_path(pool, image_size, families, engine)
    if stamp.exists() and not force:
        return None
    _show_progress()
    log.info("first run with this program pool (%d programs at %d px) on this machine: compiling it once into "
             "Mesa's shader cache; later runs load each program in a few ms (data.warm_programs=false skips this)",
             pool, image_size)
    result = warm_pool(pool, image_size, workers, families, engine)
    log.info("%d programs compiled (%d failed, replaced at run time) in %.0f s", result["compiled"], result["failed"],
             result["seconds"])
    atomic_write_json(stamp, {**result, "pool": pool, "image_size": image_size, "engine": engine,
                              "families": dict(families or {}), "date": datetime.now(timezone.utc).isoformat()})
    return result


def _show_progress() -> None:
    """Progress lines reach stderr even where nothing configured logging (a training run's own output)."""
    log.setLevel(logging.INFO)
    if not log.hasHandlers():
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(handler)


def _families(text: str) -> dict[str, float]:
    """``--families``: JSON family weights, checked as ``data.families`` is (unknown names list the valid ones)."""
    try:
        return dict(family_weights(json.loads(text)))
    except (ValueError, TypeError, AttributeError) as error:  # json.JSONDecodeError is a ValueError
        raise argparse.ArgumentTypeError(f"{error} (e.g. '{{\"patterns\": 1, \"raymarch\": 1}}')") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", type=int, default=21_000, help="programs in the pool (data.program_pool)")
    parser.add_argument("--image-size", type=int, default=224, help="render size (data.image_size)")
    parser.add_argument("--families", type=_families, default=None,
                        help='family weights as JSON (data.families), e.g. \'{"patterns": 1, "raymarch": 1}\'')
    parser.add_argument("--workers", type=int, default=None, help=f"processes (default: one per core, at most {MAX_WORKERS})")
    parser.add_argument("--force", action="store_true", help="warm even when the stamp says it is done")
    args = parser.parse_args(argv)
    if args.pool < 1 or args.image_size < 8:
        parser.error("--pool must be >= 1 and --image-size >= 8")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    result = ensure_warm(args.pool, args.image_size, args.families, workers=args.workers, force=args.force)
    if result is None:
        print(f"the pool of {args.pool} programs at {args.image_size} px is already warm "
              f"({stamp_path(args.pool, args.image_size, args.families)}); --force warms it again")
    else:
        print(f"{result['compiled']} programs compiled into Mesa's shader cache at {args.image_size} px "
              f"({result['failed']} failed to compile, replaced at run time) in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
