"""Live rendering throughput versus decoding pre-rendered JPEGs: ``make bench-render`` (QUICK=1: < 60 s).

For each process (shaders, mixup, kml, kml_mixup) at 224 x 224: images/s delivered by the
ShaderDataModule's DataLoader with one worker per core, as float [B, 3, 224, 224] batches; the GL-free
baselines (stylegan, dead_leaves) at 224 and at 64 px. Baseline,
measured just before each process in the same run: the anchor's way of feeding training, 224 x 224
JPEGs (quality 95, pre-rendered by this engine) decoded with PIL and converted to float tensors in a
DataLoader with the same worker count and batch size. Both timings include starting the workers.

Where the time of a mixed sample goes is reported too, in one worker process: milliseconds per sample
spent compiling and rendering its share of the block's programs and mixing (masks and composites),
beside the milliseconds to decode and convert one JPEG. When mixing alone costs about as much as a
decode, no rendering speed-up can lift the ratio above 1.0x on a CPU.

Program families (datamodules/procedural/families): images/s of each family's programs at 224 and
64 px in one process (warm programs, 16 tiles per readback, families interleaved seed by seed so machine
load hits them alike), each against ``patterns`` measured in the same loop, plus the milliseconds of a
program's first render (compile + JIT).

The full run (without QUICK) also compiles and renders the programs of seeds 0..999 and reports how
many compile and give non-degenerate images, for ``patterns`` (row ``programs/...``) and for every
family (``families/<name>/valid_seeds_0_999``: compiles and < 50% of 4 renders degenerate). Timings are
noisy on a shared machine.

Program rows (:mod:`benchmarks.render_programs`): cold compile vs a load from Mesa's disk cache per
program (and with alpha written, as before the colour mask); kml_mixup images/s with the cpu profile's
128 programs per block from 5,120 at 64 px and the paper's 64 from 21,000 at 224 px, each vs 4 fresh programs
per block, first run and cached (alone, with the data-wait rows: ``python -m benchmarks.render pool``);
the compiled engine (4 fresh programs per block) vs the interpreted one with 4, 64 and 128 (full run only;
alone: ``python -m benchmarks.render_programs``);
the anchor's real input cost (512 px JPEG decode + RandomResizedCrop(224)); rendering crops directly vs
render-then-crop; and the fraction of cpu-profile training steps spent waiting for data. The whole
benchmark runs with a fresh ``MESA_SHADER_CACHE_DIR``; the programs-per-block rows run first and leave
the programs of blocks 0..1 (seed 0) cached, so the per-process rows see a machine's steady state.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from benchmarks.render_programs import (
    crop_rows,
    data_wait_rows,
    engine_rows,
    fresh_shader_cache,
    program_cost_rows,
    programs_per_block_rows,
)
from datamodules.procedural.processes import PROCESSES
from datamodules.shaders import ShaderDataModule
from procedural_perception.core.benchmark_rows import quick, row, write_rows

IMAGE_SIZE = 224
BATCH_SIZE = 64


class JpegFolder(Dataset):
    """The baseline: decode JPEG files with PIL into float [3, H, W] tensors in [0, 1]."""

    def __init__(self, paths: list[Path], length: int, transform=None):
        self.paths = paths
        self.length = length
        self.transform = transform  # e.g. RandomResizedCrop(224) on the float tensor

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.paths[i % len(self.paths)]) as image:
            array = np.asarray(image.convert("RGB"))
        image = torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)
        return image if self.transform is None else self.transform(image)


def images_per_second(loader, n: int) -> float:
    start = time.perf_counter()
    seen = 0
    for batch in loader:
        seen += len(batch)
        if seen >= n:
            break
    return seen / (time.perf_counter() - start)


def write_jpegs(folder: Path, n: int, workers: int, size: int = IMAGE_SIZE) -> list[Path]:
    """n kml_mixup samples as JPEG files (rendered in DataLoader workers, never in this process)."""
    folder.mkdir(parents=True, exist_ok=True)
    dm = ShaderDataModule("kml_mixup", seed=12345, image_size=size, batch_size=min(BATCH_SIZE, n),
                          num_workers=max(workers, 1), samples_per_epoch=n, block_size=128, shuffle_blocks=1,
                          programs_per_block=4, program_pool=0)  # content only: few programs, few compiles
    paths = []
    for batch in dm.train_dataloader():
        for image in batch:
            path = folder / f"{len(paths):06d}.jpg"
            Image.fromarray((image * 255).round().byte().permute(1, 2, 0).numpy()).save(path, quality=95)
            paths.append(path)
    return paths[:n]


def program_validity(seeds: range) -> list[dict]:
    """Compile and render every program of ``seeds`` once (4 uniform draws each) in a worker process."""
    loader = DataLoader(_ProgramCheck(seeds), batch_size=None, num_workers=1)
    results = list(loader)
    valid = sum(r["valid"] for r in results)
    compile_ms = float(np.mean([r["compile_ms"] for r in results]))
    return [
        row("programs/valid_seeds_0_999", valid, f"of {len(seeds)}"),
        row("programs/compile_and_first_draw", compile_ms, "ms", higher_is_better=False),
    ]


class _ProgramCheck(torch.utils.data.IterableDataset):
    def __init__(self, seeds: range):
        self.seeds = seeds

    def __iter__(self):
        from datamodules.procedural.programs import generate_program
        from datamodules.procedural.renderer import Renderer, degenerate

        renderer = Renderer(IMAGE_SIZE, tiles=4)
        rng = np.random.default_rng(0)
        for seed in self.seeds:
            program = generate_program(seed)
            start = time.perf_counter()
            images = renderer.render(program, program.sample_params(rng, 4))
            ms = 1000 * (time.perf_counter() - start)
            ok = images is not None and int(degenerate(images).sum()) <= 2
            yield {"seed": seed, "valid": bool(ok), "compile_ms": ms}


class _FamilyCosts(torch.utils.data.IterableDataset):
    """Per family at one size: seconds rendering warm programs, images, and first-render milliseconds."""

    def __init__(self, size: int, programs: int, draws: int):
        self.size, self.programs, self.draws = size, programs, draws

    def __iter__(self):
        from datamodules.procedural.families import FAMILIES
        from datamodules.procedural.renderer import Renderer

        renderer = Renderer(self.size, tiles=16)
        rng = np.random.default_rng(0)
        seconds, first = dict.fromkeys(FAMILIES, 0.0), dict.fromkeys(FAMILIES, 0.0)
        for seed in range(self.programs):
            for family, generate in FAMILIES.items():
                program = generate(seed)
                start = time.perf_counter()
                renderer.render(program, program.sample_params(rng, 1))
                first[family] += time.perf_counter() - start
                start = time.perf_counter()
                renderer.render(program, program.sample_params(rng, self.draws))
                seconds[family] += time.perf_counter() - start
        for family in FAMILIES:
            yield {"family": family, "images_per_s": self.programs * self.draws / seconds[family],
                   "first_ms": 1000 * first[family] / self.programs}


class _FamilyValidity(torch.utils.data.IterableDataset):
    """Per family: how many of ``seeds`` compile and render < 50% degenerate images (4 draws at 64 px)."""

    def __init__(self, seeds: range):
        self.seeds = seeds

    def __iter__(self):
        from datamodules.procedural.families import FAMILIES
        from datamodules.procedural.renderer import Renderer, degenerate

        renderer = Renderer(64, tiles=4)
        rng = np.random.default_rng(0)
        for family, generate in FAMILIES.items():
            valid = 0
            for seed in self.seeds:
                program = generate(seed)
                images = renderer.render(program, program.sample_params(rng, 4))
                valid += images is not None and degenerate(images).mean() < 0.5
            yield {"family": family, "valid": valid}


def family_costs() -> list[dict]:
    """Rows: images/s per family at 224 and 64 px (baseline: patterns in the same loop), first-render ms."""
    rows = []
    for size in (224, 64):
        programs, draws = (3, 32) if quick() else (12, 32)
        loader = DataLoader(_FamilyCosts(size, programs, draws), batch_size=None, num_workers=1)
        results = {r["family"]: r for r in loader}
        base = results["patterns"]
        for family, r in results.items():
            rows.append(row(f"families/{family}/{size}px", r["images_per_s"], "images/s",
                            f"patterns programs at {size}px, same loop", base["images_per_s"],
                            image_size=size, programs=programs, renders=programs * draws))
            rows.append(row(f"families/{family}/{size}px_first_render", r["first_ms"], "ms",
                            f"patterns programs at {size}px, same loop", base["first_ms"], higher_is_better=False))
    return rows


def family_validity(seeds: range) -> list[dict]:
    loader = DataLoader(_FamilyValidity(seeds), batch_size=None, num_workers=1)
    return [row(f"families/{r['family']}/valid_seeds_0_999", r["valid"], f"of {len(seeds)}") for r in loader]


class _PhaseCosts(torch.utils.data.IterableDataset):
    """Per-sample milliseconds of a block's three phases, compiling, rendering and mixing, in a worker.

    Per block: ``pool(b)`` the first time compiles and renders; again, it only renders (compiled programs
    are cached); ``maker(b)`` then renders and mixes. The differences give each phase.
    """

    def __init__(self, process: str, blocks: int):
        self.process, self.blocks = process, blocks

    def __iter__(self):
        from datamodules.procedural.blocks import BlockConfig, BlockMaker
        from datamodules.procedural.processes import get_process

        reuse = get_process(self.process).default_reuse
        config = BlockConfig(self.process, seed=0, image_size=IMAGE_SIZE, reuse=reuse)
        maker = BlockMaker(config)
        maker(0)  # warm-up: the GL context, the workspace buffers
        seconds = np.zeros(3)  # first pool, second pool, whole block
        for block in range(1, self.blocks + 1):
            for i, make in enumerate((maker.pool, maker.pool, maker)):
                start = time.perf_counter()
                make(block)
                seconds[i] += time.perf_counter() - start
        first, again, whole = 1000 * seconds / (self.blocks * config.block_size)
        yield {"compiling": first - again, "rendering": again, "mixing": whole - again}


def phase_costs(process: str, jpeg_paths: list[Path]) -> list[dict]:
    """Rows: ms per sample compiling, rendering and mixing (one worker), against ms per JPEG decode."""
    costs = next(iter(DataLoader(_PhaseCosts(process, 1 if quick() else 3), batch_size=None, num_workers=1)))
    decode = JpegFolder(jpeg_paths, len(jpeg_paths))
    start = time.perf_counter()
    for i in range(len(decode)):
        decode[i]
    decode_ms = 1000 * (time.perf_counter() - start) / len(decode)
    baseline = "PIL decode + float conversion of one 224px JPEG, one process"
    return [row(f"phase/{process}/{phase}", float(ms), "ms per sample", baseline, decode_ms, higher_is_better=False)
            for phase, ms in costs.items()]


def generated_rows(paths: list[Path], workers: int, baseline_name: str) -> list[dict]:
    """Rows ``render/<process>[_64px]``: images/s of the processes that make their samples without GL
    (stylegan, dead_leaves) at 224 and 64 px, each against the same JPEG-decoding baseline measured just
    before it. Fewer images than the shader rows (they are slower per image at 224 px); blocks of 64."""
    n = 128 if quick() else 2048
    rows = []
    for process in [name for name, p in PROCESSES.items() if p.generate is not None]:
        for size in (IMAGE_SIZE, 64):
            jpeg = DataLoader(JpegFolder(paths, n), batch_size=BATCH_SIZE, num_workers=workers)
            baseline = images_per_second(jpeg, n)
            dm = ShaderDataModule(process, seed=0, image_size=size, batch_size=BATCH_SIZE, num_workers=workers,
                                  samples_per_epoch=n, block_size=64, shuffle_blocks=1)
            value = images_per_second(dm.train_dataloader(), n)
            name = f"render/{process}" + ("" if size == IMAGE_SIZE else f"_{size}px")
            rows.append(row(name, value, "images/s", baseline_name, baseline, workers=workers, image_size=size))
    return rows


def anchor_decode_rows(paths_512: list[Path], paths_224: list[Path], workers: int, n: int) -> list[dict]:
    """What the anchor really fed DINO: its 512 px JPEGs decoded plus RandomResizedCrop(224), beside the
    224 px decode row, and today's kml_mixup render rate against it (same run)."""
    from torchvision.transforms import v2

    crop = v2.RandomResizedCrop(IMAGE_SIZE, antialias=True)
    anchor = images_per_second(DataLoader(JpegFolder(paths_512, n, crop), batch_size=BATCH_SIZE,
                                          num_workers=workers), n)
    small = images_per_second(DataLoader(JpegFolder(paths_224, n), batch_size=BATCH_SIZE, num_workers=workers), n)
    dm = ShaderDataModule("kml_mixup", seed=0, image_size=IMAGE_SIZE, batch_size=BATCH_SIZE, num_workers=workers,
                          samples_per_epoch=n, shuffle_blocks=1)
    rendered = images_per_second(dm.train_dataloader(), n)
    name = f"PIL decode of 512px JPEGs + RandomResizedCrop(224), DataLoader x{workers} workers"
    return [row("decode/jpeg512_random_resized_crop_224", anchor, "images/s",
                f"PIL decode of 224px JPEGs, DataLoader x{workers} workers", small, workers=workers),
            row("render/kml_mixup_vs_anchor_decode", rendered, "images/s", name, anchor, workers=workers,
                programs_per_block=dm.config.programs_per_block)]


def main() -> None:
    workers = os.cpu_count() or 1
    n = 1024 if quick() else 8192
    rows = []
    with tempfile.TemporaryDirectory() as tmp, fresh_shader_cache(Path(tmp) / "mesa"):  # cold programs
        paths = write_jpegs(Path(tmp) / "224", 256 if quick() else 1024, workers)
        rows += program_cost_rows()
        rows += programs_per_block_rows(workers, BATCH_SIZE, n)
        if not quick():  # compiled vs interpreted engines (QUICK: python -m benchmarks.render_programs)
            rows += engine_rows(seed=1)  # seed 1: blocks the rows above did not compile
        baseline_name = f"PIL decode of 224px JPEGs, DataLoader x{workers} workers"
        for process in PROCESSES:
            if PROCESSES[process].generate is not None:
                continue  # the GL-free baselines: below
            jpeg = DataLoader(JpegFolder(paths, n), batch_size=BATCH_SIZE, num_workers=workers)
            baseline = images_per_second(jpeg, n)
            dm = ShaderDataModule(process, seed=0, image_size=IMAGE_SIZE, batch_size=BATCH_SIZE, num_workers=workers,
                                  samples_per_epoch=n, shuffle_blocks=1 if quick() else 2)
            value = images_per_second(dm.train_dataloader(), n)
            rows.append(row(f"render/{process}", value, "images/s", baseline_name, baseline,
                            workers=workers, image_size=IMAGE_SIZE, reuse_factor=dm.config.reuse_factor))
        rows += generated_rows(paths, workers, baseline_name)
        rows += anchor_decode_rows(write_jpegs(Path(tmp) / "512", 64 if quick() else 256, workers, 512), paths,
                                   workers, n)
        rows += crop_rows()
        rows += phase_costs("kml_mixup", paths)
        rows += data_wait_rows(24 if quick() else 144)
    rows += family_costs()
    if not quick():
        rows += program_validity(range(1000))
        rows += family_validity(range(1000))
    write_rows("render", rows)


def pipeline_main() -> None:
    """Only the rows about feeding training (``python -m benchmarks.render pipeline``, written to
    ``render_pipeline.json``): the anchor's 512 px decode + RandomResizedCrop, direct crop rendering and the
    cpu profile's data-wait fraction. They need an otherwise idle machine, which the whole benchmark
    (tens of minutes) rarely gets; these take a few minutes."""
    workers = os.cpu_count() or 1
    n = 1024 if quick() else 4096
    with tempfile.TemporaryDirectory() as tmp, fresh_shader_cache(Path(tmp) / "mesa"):
        paths = write_jpegs(Path(tmp) / "224", 256 if quick() else 1024, workers)
        rows = anchor_decode_rows(write_jpegs(Path(tmp) / "512", 64 if quick() else 256, workers, 512), paths,
                                  workers, n)
        rows += crop_rows()
        rows += data_wait_rows(24 if quick() else 144)
    write_rows("render_pipeline", rows)


def pool_main() -> None:
    """Only the rows about many programs per block (``python -m benchmarks.render pool``, written to
    ``render_pool.json``): a program's cold compile vs its cached load, each profile's programs per block vs
    4 fresh ones (first run and cached), and the cpu profile's data wait (with its pool). ~15 min idle."""
    workers = os.cpu_count() or 1
    n = 1024 if quick() else 4096
    with tempfile.TemporaryDirectory() as tmp, fresh_shader_cache(Path(tmp) / "mesa"):
        rows = program_cost_rows((64,))
        rows += programs_per_block_rows(workers, BATCH_SIZE, n)
        rows += data_wait_rows(24 if quick() else 144)
    write_rows("render_pool", rows)


if __name__ == "__main__":
    {"pipeline": pipeline_main, "pool": pool_main}.get(sys.argv[1] if sys.argv[1:] else "", main)()
