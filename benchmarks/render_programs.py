"""``make bench-render``, the program rows: what many programs per block cost, whether data stalls
training, the anchor's real decode cost, and rendering crops directly. Called by :mod:`benchmarks.render`.

Every measurement runs with a fresh Mesa shader cache (``MESA_SHADER_CACHE_DIR`` set by ``render.main``
before any worker starts), so "cold" means a machine's first run and "cached" means after a first pass.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, IterableDataset

from datamodules.procedural.blocks import BlockConfig, scheduled_program_seeds
from datamodules.procedural.warm_pool import warm_programs
from datamodules.shaders import ShaderDataModule
from procedural_perception.core.benchmark_rows import quick, row
from procedural_perception.training.data_wait import DataWait


@contextmanager
def fresh_shader_cache(folder: Path):
    """Mesa's disk cache in ``folder`` (empty: every program compiles cold) for this process and the workers
    it starts, then the previous setting back."""
    previous = os.environ.get("MESA_SHADER_CACHE_DIR")
    os.environ["MESA_SHADER_CACHE_DIR"] = str(folder)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MESA_SHADER_CACHE_DIR", None)
        else:
            os.environ["MESA_SHADER_CACHE_DIR"] = previous


# ------------------------------------------------------------------------------------ per-program costs


class _ProgramCosts(IterableDataset):
    """ms per program in a fresh worker process: compile + first draw, and a steady-state draw.

    ``opaque``: write alpha too (the renderer's colour mask before it left alpha out), so llvmpipe JITs
    both rasterisation functions of each program."""

    def __init__(self, seeds: range, size: int, opaque: bool = False):
        self.seeds, self.size, self.opaque = seeds, size, opaque

    def __iter__(self):
        from datamodules.procedural.programs import generate_program
        from datamodules.procedural.renderer import Renderer

        renderer = Renderer(self.size, tiles=16, cache_size=len(self.seeds) + 1)
        rng = np.random.default_rng(0)
        warmup = generate_program(10**8)  # the context, framebuffer and vertex shader
        renderer.render(warmup, warmup.sample_params(rng, 1))
        if self.opaque:
            from OpenGL import GL

            GL.glColorMask(GL.GL_TRUE, GL.GL_TRUE, GL.GL_TRUE, GL.GL_TRUE)
        first, steady = [], []
        for seed in self.seeds:
            program = generate_program(seed)
            start = time.perf_counter()
            renderer.render(program, program.sample_params(rng, 1))
            middle = time.perf_counter()
            renderer.render(program, program.sample_params(rng, 16))
            first.append(time.perf_counter() - start)
            steady.append((time.perf_counter() - middle) / 16)
        yield {"first_ms": 1000 * float(np.median(first)), "draw_ms": 1000 * float(np.median(steady))}


def _program_costs(seeds: range, size: int, opaque: bool = False) -> dict:
    return next(iter(DataLoader(_ProgramCosts(seeds, size, opaque), batch_size=None, num_workers=1)))


def program_cost_rows(sizes=(64, 224)) -> list[dict]:
    """Cold compile + first draw vs a load from Mesa's disk cache, per program (medians, one process); and
    the cold compile with alpha written (an opaque fragment variant: llvmpipe JITs two functions per program)."""
    rows = []
    for size in sizes:
        seeds = range(900_000 + size * 1000, 900_000 + size * 1000 + (8 if quick() else 32))
        with tempfile.TemporaryDirectory() as other, fresh_shader_cache(Path(other)):  # the same programs, cold
            opaque = _program_costs(seeds, size, opaque=True)
        cold = _program_costs(seeds, size)
        cached = _program_costs(seeds, size)  # a new process: only the disk cache carries over
        first_draw = "ms of a steady-state draw (same programs, same run)"
        rows += [
            row(f"programs/cold_compile_{size}px", cold["first_ms"], "ms per program", first_draw, cold["draw_ms"],
                higher_is_better=False, programs=len(seeds), note="compile + link + LLVM JIT at the first draw"),
            row(f"programs/cached_load_{size}px", cached["first_ms"], "ms per program",
                "cold compile + first draw (same programs)", cold["first_ms"], higher_is_better=False,
                programs=len(seeds), note="a fresh process, programs in Mesa's disk cache"),
            row(f"programs/cold_compile_{size}px_alpha_masked", cold["first_ms"], "ms per program",
                "the same programs with alpha written, in another fresh cache (opaque: whole-tile and edge "
                "functions JIT-ed)", opaque["first_ms"],
                higher_is_better=False, programs=len(seeds), draw_ms=cold["draw_ms"], opaque_draw_ms=opaque["draw_ms"],
                note="the renderer leaves alpha out of the colour mask (images identical)"),
        ]
    return rows


# ------------------------------------------------------------------------------------ 64 vs 4 per block


def _images_per_second(dm: ShaderDataModule, n: int) -> float:
    start, seen = time.perf_counter(), 0
    for batch in dm.train_dataloader():
        seen += len(batch)
        if seen >= n:
            break
    elapsed = time.perf_counter() - start
    dm.teardown("fit")  # stop the kept workers now: a later loader's forked workers must not inherit them
    return seen / elapsed


def programs_per_block_rows(workers: int, batch_size: int, n: int) -> list[dict]:
    """kml_mixup images/s with each profile's many programs per block (cpu: 128 of a pool of 5,120 at 64 px;
    paper: 64 of 21,000 at 224 px) vs 4 fresh programs per block (the code's default and the first
    generator), same size and run.

    Each configuration runs twice over the same blocks with new worker processes: the first pass
    compiles cold (a machine's first run without the warm-up), the second loads the programs from Mesa's
    disk cache (every run after the warm-up that ``prepare_data`` does once per machine).
    """
    from procedural_perception.core.config import compose

    rows = []
    for profile, size in (("cpu", 64), ("paper", 224)):
        data = compose(["data=kml_mixup", f"profile={profile}"]).data
        many = dict(programs_per_block=data.programs_per_block, program_pool=data.program_pool)
        common = dict(image_size=size, batch_size=batch_size, num_workers=workers, samples_per_epoch=n,
                      shuffle_blocks=1, warm_programs=False)
        speeds = {name: [_images_per_second(ShaderDataModule("kml_mixup", **common, **engine), n)  # cold, cached
                         for _ in range(2)]
                  for name, engine in (("4", dict(programs_per_block=4, program_pool=0)), ("many", many))}
        extra = dict(workers=workers, image_size=size, samples=n, **many)
        name = f"render/kml_mixup/{profile}_{many['programs_per_block']}_of_{many['program_pool']}_programs"
        baseline = f"kml_mixup, 4 fresh programs per block, {size} px, same pass"
        rows += [
            row(f"{name}_cached", speeds["many"][1], "images/s", baseline, speeds["4"][1], **extra,
                note="programs in Mesa's disk cache (after the warm-up); target ratio >= 0.9"),
            row(f"{name}_first_run", speeds["many"][0], "images/s", baseline, speeds["4"][0], **extra,
                note="fresh disk cache, no warm-up: every program compiles cold in the loader workers"),
        ]
    return rows


# ------------------------------------------------------------------------------------ data wait in training


def _data_wait(steps: int, *overrides: str):
    """(DataWait monitor, data module) after ``steps`` cpu-profile kml_mixup training steps with ``overrides``."""
    import lightning as L

    from procedural_perception.core.config import compose, instantiate

    # warm_programs=false: the caller compiled exactly the measured blocks' programs (not the whole pool)
    cfg = compose(["data=kml_mixup", "profile=cpu", "data.warm_programs=false", *overrides])
    model = instantiate(cfg.model)
    dm = instantiate(cfg.data, transform=model.train_transform())
    timer = DataWait()  # the monitor every training run has (time/data_wait_pct)
    with tempfile.TemporaryDirectory() as logs:
        trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, max_epochs=-1, logger=False,
                            callbacks=[timer], enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, default_root_dir=logs)
        trainer.fit(model, datamodule=dm)
    return timer, dm


def data_wait_rows(steps: int) -> list[dict]:
    """Fraction of the cpu-profile training step spent waiting for data: the real DataModule + DINO with the
    profile's 128 programs per block from 5,120, the loader's workers kept across epochs (the default) and,
    as the baseline in the same run, new workers each epoch (``data.keep_workers=false``, the loader
    before). Also the images/s of both, and the default's training images/s against 4 fresh programs per
    block (the first generator, ``data.programs_per_block=4 data.program_pool=0``).

    The programs of the blocks the run reads are compiled into the disk cache first (warm_programs, timed
    and reported: what a machine's first run pays on top), so the measured steps see the steady state.
    """
    from procedural_perception.core.config import compose, instantiate

    few_programs = ("data.programs_per_block=4", "data.program_pool=0")
    dm = instantiate(compose(["data=kml_mixup", "profile=cpu"]).data)
    config: BlockConfig = dm.config
    per_epoch = dm.blocks_per_epoch()  # whole epochs: the loader renders a shuffle window ahead of training
    epochs = math.ceil(steps * dm.batch_size / (per_epoch * config.block_size))
    blocks = per_epoch * epochs

    def warm(blocks_config: BlockConfig) -> dict:
        """Compile the measured blocks' programs (warm_programs takes pool indices; pool entry i is program
        seed i, program_pool.pool_program_seed)."""
        seeds = {int(i) for b in range(blocks) for i in scheduled_program_seeds(blocks_config, b)}
        return warm_programs(sorted(seeds), config.image_size)

    def images_per_s(monitor: DataWait) -> float:
        return monitor.steps * dm.batch_size / (monitor.wait_s + monitor.busy_s)

    first_run = warm(config)
    warm(instantiate(compose(["data=kml_mixup", "profile=cpu", *few_programs]).data).config)
    old, _ = _data_wait(steps, "data.keep_workers=false", "data.prefetch_batches=null")
    first, _ = _data_wait(steps, *few_programs)
    timer, dm = _data_wait(steps)
    extra = dict(steps=timer.steps, batch_size=dm.batch_size, num_workers=dm.num_workers,
                 programs_per_block=config.programs_per_block, program_pool=config.program_pool,
                 image_size=config.image_size, prefetch_batches=dm.prefetch_batches, epochs=epochs)
    per_epoch_name = "new loader workers each epoch, DataLoader prefetch 2 (data.keep_workers=false)"
    return [
        row("train/cpu_profile_data_wait", timer.percent(), "% of step time", per_epoch_name, old.percent(),
            higher_is_better=False, **extra, startup_s=timer.startup_s, target=5.0,
            note="loader wait between steps / (wait + step), first batch excluded; programs in the disk cache"),
        row("train/cpu_profile_images_per_s", images_per_s(timer), "images/s", per_epoch_name, images_per_s(old),
            **extra, note="training throughput over the same steps (waiting included)"),
        row(f"train/cpu_profile_images_per_s_{config.programs_per_block}_of_{config.program_pool}_programs",
            images_per_s(timer), "images/s", "4 fresh programs per block (the first generator), same steps",
            images_per_s(first), steps=timer.steps, data_wait=timer.percent(), baseline_data_wait=first.percent(),
            programs_per_block=config.programs_per_block, program_pool=config.program_pool,
            note="the cpu profile's programs per block from its pool: training throughput; target ratio >= 0.9"),
        row("train/cpu_profile_first_run_compile", first_run["seconds"], "s", "seconds of those steps' training",
            timer.busy_s + timer.wait_s, higher_is_better=False, programs=first_run["compiled"],
            note="compiling the measured blocks' programs cold (2 processes): a machine's first run pays this"),
    ]


# ------------------------------------------------------------------------------------ crops


def _cropped(program, crop_params: int = 4):
    """``program`` drawn over a sub-rectangle of its plane: ``image(p)`` -> ``image(c + p * h)`` with the
    centre c and half-size h as 4 extra uniforms (a crop is just another viewport transform)."""
    from datamodules.procedural.programs import Program

    k = program.num_params
    source = program.source.replace("vec3 image(vec2 p)", "vec3 image_full(vec2 p)") + (
        f"vec3 image(vec2 p) {{ return image_full(vec2(P({k}), P({k + 1})) + p * vec2(P({k + 2}), P({k + 3}))); }}\n")
    low = np.concatenate([program.low, np.zeros(crop_params, np.float32)])
    return Program(program.name + "-crop", source, program.kind, low, low.copy())


def _crop_vectors(params: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Parameter vectors followed by crop boxes (centre x, y, half-size x, y in the [-1, 1] plane)."""
    return np.concatenate([np.repeat(params, len(boxes), axis=0), np.tile(boxes, (len(params), 1))], axis=1)


def _random_boxes(rng, n: int, scale: tuple[float, float]) -> np.ndarray:
    """n square-ish crop boxes covering ``scale`` of the image area (RandomResizedCrop's scale range)."""
    area = rng.uniform(*scale, n)
    ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3), n))
    half = np.stack([np.sqrt(area * ratio), np.sqrt(area / ratio)], 1).clip(max=1.0)
    centre = rng.uniform(-1 + half, 1 - half)
    return np.concatenate([centre, half], 1).astype(np.float32)


class _CropCosts(IterableDataset):
    """ms per DINO multi-crop set (2 global + n_local local crops) of one program image, two ways."""

    def __init__(self, images: int, global_size: int, local_size: int, n_local: int):
        self.images, self.g, self.l, self.n_local = images, global_size, local_size, n_local

    def __iter__(self):
        from torchvision.transforms import v2

        from datamodules.procedural.programs import generate_program
        from datamodules.procedural.renderer import Renderer

        rng = np.random.default_rng(0)
        program = generate_program(4242)
        cropped = _cropped(program)
        full, at_g, at_l = Renderer(self.g), Renderer(self.g), Renderer(self.l)
        params = program.sample_params(rng, self.images)
        global_crop = v2.RandomResizedCrop(self.g, scale=(0.4, 1.0), antialias=True)
        local_crop = v2.RandomResizedCrop(self.l, scale=(0.05, 0.4), antialias=True)
        for _ in range(2):  # the first round compiles; the second is timed
            start = time.perf_counter()
            images = torch_from(full.render(program, params))
            for image in images:
                [global_crop(image) for _ in range(2)] + [local_crop(image) for _ in range(self.n_local)]
            then = time.perf_counter()
            at_g.render(cropped, _crop_vectors(params, _random_boxes(rng, 2, (0.4, 1.0))))
            at_l.render(cropped, _crop_vectors(params, _random_boxes(rng, self.n_local, (0.05, 0.4))))
            end = time.perf_counter()
        yield {"render_then_crop": 1000 * (then - start) / self.images, "direct": 1000 * (end - then) / self.images}


def torch_from(images: np.ndarray):
    import torch

    return torch.from_numpy(images).permute(0, 3, 1, 2)


def crop_rows(n_local: int = 8) -> list[dict]:
    """Rendering each crop at its coordinates and size vs rendering the image then cropping (paper crops)."""
    costs = next(iter(DataLoader(_CropCosts(16 if quick() else 64, 224, 96, n_local), batch_size=None,
                                 num_workers=1)))
    verdict = ("direct rendering is cheaper" if costs["direct"] < costs["render_then_crop"] else
               "render-then-crop is cheaper")
    return [row("crops/direct_render", costs["direct"], "ms per multi-crop set", "render 224 px, then "
                f"RandomResizedCrop 2 x 224 + {n_local} x 96", costs["render_then_crop"], higher_is_better=False,
                note=f"one program image (shaders); {verdict}; a mixed sample needs every ingredient "
                f"rendered per crop (x6 for kml_mixup), so mixed processes keep render-then-crop")]


# ------------------------------------------------------------------------------------ compiled vs interpreted

ENGINE_CONFIGS = (  # (row name, BlockConfig settings); the first is today's cpu default, the baseline
    ("compiled_4", dict(programs_per_block=4)),
    ("interpreted_4", dict(programs_per_block=4, program_engine="interpreted")),
    ("interpreted_64", dict(programs_per_block=64, program_engine="interpreted")),
    ("interpreted_128", dict(programs_per_block=128, program_engine="interpreted")),
)


class _EngineCosts(IterableDataset):
    """In one fresh worker process: seconds per kml_mixup block of each engine configuration (blocks
    interleaved so machine load hits them alike), the interpreter's compile + first draw, and ms per image
    of compiled vs interpreted draws of the same programs and parameters (the per-pixel cost of the switches)."""

    def __init__(self, size: int, blocks: int, seed: int = 0, configs: tuple = (), steady: bool = False):
        self.size, self.blocks, self.seed, self.steady = size, blocks, seed, steady
        self.configs = configs or tuple(name for name, _ in ENGINE_CONFIGS)

    def __iter__(self):
        from datamodules.procedural.blocks import BlockMaker
        from datamodules.procedural.families.pattern_interpreter import interpreted
        from datamodules.procedural.programs import generate_program
        from datamodules.procedural.renderer import Renderer

        renderer = Renderer(self.size, tiles=16, cache_size=64)
        rng = np.random.default_rng(0)
        warm = generate_program(10**8)  # the context, framebuffer and vertex shader
        renderer.render(warm, warm.sample_params(rng, 1))
        start = time.perf_counter()
        first = interpreted(10**8)
        renderer.render(first, first.sample_params(rng, 1))
        compile_s = time.perf_counter() - start
        draw = {"compiled": 0.0, "interpreted": 0.0}
        for seed in range(700_000, 700_000 + (4 if quick() else 32)):
            pair = {"compiled": generate_program(seed), "interpreted": interpreted(seed)}
            params = pair["compiled"].sample_params(rng, 16)
            renderer.render(pair["compiled"], params[:1])  # compile outside the timing
            for name, program in pair.items():
                begin = time.perf_counter()
                renderer.render(program, params)
                draw[name] += time.perf_counter() - begin
        makers = {name: BlockMaker(BlockConfig("kml_mixup", seed=self.seed, image_size=self.size, **settings))
                  for name, settings in ENGINE_CONFIGS if name in self.configs}
        seconds = dict.fromkeys(makers, 0.0)
        if self.steady:  # make the blocks once untimed: every program and variant compiled in this process
            for block in range(self.blocks):
                for maker in makers.values():
                    maker(block)
        for block in range(self.blocks):
            for name, maker in makers.items():
                begin = time.perf_counter()
                maker(block)
                seconds[name] += time.perf_counter() - begin
        samples = self.blocks * makers["compiled_4"].config.block_size
        yield {"images_per_s": {name: samples / s for name, s in seconds.items()}, "compile_s": compile_s,
               "draw_ratio": draw["interpreted"] / draw["compiled"]}


def draw_cost_row(size: int, ratio: float) -> dict:
    """Time of an interpreted draw over the same program's compiled draw (same parameters, same process)."""
    return row(f"programs/interpreted_draw_cost_{size}px", ratio, "x compiled draw time",
               "the same programs compiled (1.0)", 1.0, higher_is_better=False,
               note="llvmpipe runs every case of a uniform switch masked: the sum of all kinds per slot")


def engine_rows(sizes=(64, 224), seed: int = 0) -> list[dict]:
    """kml_mixup images/s of the interpreted engine with 4, 64 and 128 programs per block against today's
    compiled engine with 4 fresh programs per block, measured in the same worker process.

    Each size runs twice in new worker processes: the first with every program cold (a machine's first
    run; the interpreter's own one-off compile is timed apart and not counted), the second with the
    compiled programs and the interpreter in Mesa's disk cache (a later run of the same configuration,
    today's steady state). Call with a fresh ``MESA_SHADER_CACHE_DIR`` (``render.main`` sets one) and a
    ``seed`` whose blocks no earlier row rendered.
    """
    rows = []
    for size in sizes:
        blocks = 1 if quick() else 4
        cold, cached = (next(iter(DataLoader(_EngineCosts(size, blocks, seed), batch_size=None, num_workers=1)))
                        for _ in range(2))
        baseline = f"compiled, 4 fresh programs per block, {size} px, same process"
        for name, _ in ENGINE_CONFIGS[1:]:
            for label, costs, when in (("", cached, "programs in the disk cache (a later run)"),
                                       ("_first_run", cold, "every compiled program cold (a machine's first run)")):
                rows.append(row(f"render/engines/{name}_{size}px{label}", costs["images_per_s"][name], "images/s",
                                f"{baseline}, {when}", costs["images_per_s"]["compiled_4"], image_size=size,
                                blocks=blocks, process="kml_mixup", note="target ratio >= 0.9 (issue 12)"))
        rows += [
            row(f"programs/interpreter_compile_{size}px", 1000 * cold["compile_s"], "ms", "ms of a cached load",
                1000 * cached["compile_s"], higher_is_better=False,
                note="the interpreter's one-off compile + JIT + first draw, per worker process and image size"),
            draw_cost_row(size, cached["draw_ratio"]),
        ]
    return rows


def engine_steady_rows(size: int = 224, seed: int = 0) -> list[dict]:
    """A cheaper steady-state comparison for a loaded machine: compiled 4 vs interpreted 128 per block in ONE
    worker process, each block made once untimed (every program compiled, in the renderer's cache) and then
    timed; a later run's cost without the disk-cache loads of the compiled programs (~20 ms each)."""
    costs = next(iter(DataLoader(_EngineCosts(size, 1, seed, ("compiled_4", "interpreted_128"), steady=True),
                                 batch_size=None, num_workers=1)))
    speeds = costs["images_per_s"]
    return [
        row(f"render/engines/interpreted_128_{size}px_steady", speeds["interpreted_128"], "images/s",
            f"compiled, 4 fresh programs per block, {size} px, same process, programs compiled",
            speeds["compiled_4"], image_size=size, blocks=1, process="kml_mixup", note="target ratio >= 0.9 (issue 12)"),
        draw_cost_row(size, costs["draw_ratio"]),
    ]


if __name__ == "__main__":  # the engine rows alone: python -m benchmarks.render_programs [sizes] (QUICK=1: ~2 min idle)
    import sys

    from procedural_perception.core.benchmark_rows import write_rows

    # Arguments: image sizes (default 64 224); "steady" first: only engine_steady_rows (a loaded machine).
    steady = sys.argv[1:2] == ["steady"]
    name = "render_engines_steady" if steady else "render_engines"
    rows = []
    for size in [int(arg) for arg in sys.argv[1 + steady:]] or [64, 224]:
        with tempfile.TemporaryDirectory() as cache, fresh_shader_cache(Path(cache)):
            rows += engine_steady_rows(size) if steady else engine_rows((size,))
        write_rows(name, rows)  # after each size: a long run keeps what it measured
