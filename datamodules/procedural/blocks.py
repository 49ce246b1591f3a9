"""A block of the stream: ``block_size`` samples that are a pure function of (config, block index).

A block takes ``programs_per_block`` programs (fresh seeds by default; the paper profile schedules 64
from a fixed pool of ``program_pool`` = 21,000 programs by :mod:`.program_pool`), renders a pool of program images with several uniform
draws per program, then builds its samples with the process, each sample drawing its ingredients from
the pool. A program's first compile on a machine costs a cold compile + LLVM JIT on llvmpipe; Mesa's
on-disk shader cache makes every later one a cache load, which is why the programs come from a fixed
pool. One rendered image may serve several samples:

    reuse factor = block_size * ingredients / pool_size   (ingredient uses per rendered image)

The anchor wrote 1.3M program images to disk and drew each mixed sample's ingredients from them, i.e.
one rendered image per sample per epoch: reuse 6 for mixup and kml_mixup. ``reuse`` sets the factor.

Programs that fail to compile are logged and replaced; programs whose renders are mostly degenerate are
replaced; isolated degenerate renders are redrawn with new uniforms. All replacements draw from random
streams keyed by (seed, block, slot, attempt), so they are deterministic too.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .processes import get_process
from .program_pool import block_programs, blocks_per_cycle, pool_program_seed
from .programs import Program, check_engine, generate_program
from .renderer import Renderer, degenerate
from .sandbox import DRAW_TIMEOUT_S, SandboxedRenderer

log = logging.getLogger(__name__)

# Samples combined per tensor operation: bounds memory (mixup gathers 32 x 6 x 3 x 224^2 floats = 116 MB).
# Part of the sample definition (random draws are made chunk by chunk), so a constant, not an option.
CHUNK = 32
# Attempts per program slot before giving up (compile failures / mostly-degenerate programs).
MAX_PROGRAM_ATTEMPTS = 16
# Rounds of redrawing the uniforms of isolated degenerate renders.
REDRAW_ROUNDS = 3
# A program is replaced when more than this fraction of its first renders is degenerate.
MAX_DEGENERATE_FRACTION = 0.5


@dataclass(frozen=True)
class BlockConfig:
    """What a block depends on. Same config + same block index -> byte-identical samples."""

    process: str = "kml_mixup"
    seed: int = 0
    image_size: int = 224
    block_size: int = 512  # samples per block
    # Distinct programs rendered per block. The paper profile takes 64 from a pool of 21,000 (Baradad et al.
    # 2022: accuracy keeps rising with the number of programs), the cpu profile 128 from 5,120. A program's
    # first compile on a machine (GLSL + LLVM JIT at its first draw, ~160 ms on llvmpipe) is paid once per
    # pool by ShaderDataModule.prepare_data (warm_pool.py); later loads from Mesa's disk cache take ~9 ms.
    # The code's default (no profile, and the experiment's pinned first generator): 4 fresh programs per block.
    programs_per_block: int = 4
    # Programs a run draws from (pool entry i = grammar program of seed i, walked in seeded cycles so a
    # machine's disk cache serves every later run); 0: a fresh, never-repeated program seed for every slot.
    program_pool: int = 0
    reuse: float = 6.0  # ingredient uses per rendered program image (capped at 1 for `shaders`)
    shader_dir: str | None = None  # folder of Shadertoy programs instead of the grammar
    # Program families and weights as sorted (name, weight) pairs (families.family_weights); None: patterns.
    families: tuple[tuple[str, float], ...] | None = None
    draw_timeout_s: float = DRAW_TIMEOUT_S  # shader_dir only: a longer draw abandons the program (sandbox.py)
    # "compiled": each program is its own GLSL program (a compile + JIT per program, ~0.55 s on llvmpipe);
    # "interpreted": patterns programs run on one shared interpreter shader, their structure as uniforms
    # (no compile per program; other families stay compiled). Same programs, same images (families/pattern_interpreter.py).
    program_engine: str = "compiled"

    def __post_init__(self):
        check_engine(self.program_engine)
        if self.program_pool < 0:
            raise ValueError(f"program_pool must be >= 0 (0: fresh programs per block), got {self.program_pool}")
        if self.program_pool and self.shader_dir is None:
            blocks_per_cycle(self.program_pool, self.programs_per_block)  # a clear error when the pool is too small

    @property
    def ingredients(self) -> int:
        return get_process(self.process).ingredients

    @property
    def pool_size(self) -> int:
        """Program images rendered per block (a multiple of programs_per_block)."""
        reuse = min(self.reuse, 1.0) if self.ingredients == 1 else self.reuse
        wanted = math.ceil(self.block_size * self.ingredients / max(reuse, 1e-6))
        per_program = max(1, math.ceil(wanted / self.programs_per_block))
        return per_program * self.programs_per_block

    @property
    def reuse_factor(self) -> float:
        return self.block_size * self.ingredients / self.pool_size


def slot_rng(seed: int, block: int, slot: int, attempt: int) -> np.random.Generator:
    """The random stream of one program slot's ``attempt``: its program (without a pool) and its uniforms."""
    return np.random.default_rng([seed, block, slot, attempt])


def fresh_program_seeds(seed: int, block: int, per_block: int) -> np.ndarray:
    """int64 [per_block]: the program seeds block ``block`` draws first without a pool (``program_pool=0``).

    The first draw of :func:`slot_rng` at attempt 0, as :meth:`BlockMaker._program` makes it (replacements
    not included), so a run's distinct-program count follows from its block schedule without rendering.
    """
    return np.array([slot_rng(seed, block, slot, 0).integers(2**31) for slot in range(per_block)])


def scheduled_program_seeds(config: BlockConfig, block: int) -> np.ndarray:
    """int64 [programs_per_block]: the program seeds block ``block`` renders first (replacements not included),
    from the pool (``program_pool > 0``) or fresh; what :meth:`BlockMaker._program` draws at attempt 0."""
    if config.program_pool == 0:
        return fresh_program_seeds(config.seed, block, config.programs_per_block)
    indices = block_programs(config.seed, config.program_pool, config.programs_per_block, block)
    return np.array([pool_program_seed(int(i)) for i in indices])


@dataclass
class BlockStats:
    """Counts over the blocks a :class:`BlockMaker` made (per process: DataLoader workers keep their own)."""

    blocks: int = 0
    samples: int = 0
    rendered: int = 0  # program images kept in pools
    degenerate: int = 0  # renders rejected as degenerate (then redrawn or their program replaced)
    compile_failures: int = 0
    replaced_programs: int = 0
    programs: int = 0  # programs rendered (after replacements)
    distinct: set = field(default_factory=set)  # names of the distinct programs this process rendered

    @property
    def distinct_programs(self) -> int:
        return len(self.distinct)

    @property
    def reuse_factor(self) -> float:
        return 0.0 if self.rendered == 0 else self.samples * self._ingredients / self.rendered

    _ingredients: int = 1


class BlockMaker:
    """Makes blocks: ``maker(b)`` -> uint8 [block_size, 3, H, W]. Renders in the calling process (lazy EGL)."""

    def __init__(self, config: BlockConfig, tiles: int = 16):
        self.config = config
        self.process = get_process(config.process)
        # SEAM (hostile programs): a user's shader_dir is arbitrary code, drawn in a killable render process
        # with a per-draw time limit (sandbox.py); an abandoned program comes back as None, like a compile failure.
        if config.shader_dir is not None:
            self.renderer = SandboxedRenderer(config.image_size, tiles=tiles, draw_timeout_s=config.draw_timeout_s)
        else:  # a small LRU of compiled programs: a slot redraws with its program right away, and blocks of
            # one pool cycle share no programs (a program's next use loads from Mesa's disk cache)
            self.renderer = Renderer(config.image_size, tiles=tiles)
        self.stats = BlockStats(_ingredients=self.process.ingredients)
        self._workspace: dict = {}  # buffers reused by the process across chunks and blocks
        self._folder: list[Program] | None = None
        if config.shader_dir is not None:
            from .shadertoy import load_shadertoy_folder

            self._folder = load_shadertoy_folder(config.shader_dir)

    # ------------------------------------------------------------------ programs
    def _program(self, block: int, slot: int, attempt: int, rng: np.random.Generator) -> Program:
        """The program of a slot: scheduled from the pool (attempt 0), a random pool entry (replacements)."""
        cfg = self.config
        if self._folder is not None:
            return self._folder[int(rng.integers(len(self._folder)))]
        families = None if cfg.families is None else dict(cfg.families)
        if cfg.program_pool == 0:
            return generate_program(int(rng.integers(2**31)), families, cfg.program_engine)
        if attempt == 0:
            index = int(block_programs(cfg.seed, cfg.program_pool, cfg.programs_per_block, block)[slot])
        else:
            index = int(rng.integers(cfg.program_pool))
        return generate_program(pool_program_seed(index), families, cfg.program_engine)

    def _render_slot(self, block: int, slot: int, draws: int) -> np.ndarray:
        """``draws`` non-degenerate uint8 renders [draws, H, W, 3] of one program slot."""
        cfg = self.config
        for attempt in range(MAX_PROGRAM_ATTEMPTS):
            rng = slot_rng(cfg.seed, block, slot, attempt)
            program = self._program(block, slot, attempt, rng)
            images = self.renderer.render(program, program.sample_params(rng, draws))
            if images is None:
                self.stats.compile_failures += 1
                self.stats.replaced_programs += 1
                continue
            bad = degenerate(images)
            self.stats.degenerate += int(bad.sum())
            if bad.mean() > MAX_DEGENERATE_FRACTION:
                log.debug("program %s mostly degenerate (%d/%d); replaced", program.name, bad.sum(), draws)
                self.stats.replaced_programs += 1
                continue
            for _ in range(REDRAW_ROUNDS):
                if not bad.any():
                    break
                redo = np.flatnonzero(bad)
                images[redo] = self.renderer.render(program, program.sample_params(rng, len(redo)))
                still = degenerate(images[redo])
                self.stats.degenerate += int(still.sum())
                bad[redo] = still
            if bad.any():  # stubborn corners of parameter space: reuse this program's good renders
                good = np.flatnonzero(~bad)
                images[bad] = images[good[np.arange(bad.sum()) % len(good)]]
            self.stats.programs += 1
            self.stats.distinct.add(program.name)
            return images
        raise RuntimeError(
            f"block {block} slot {slot}: {MAX_PROGRAM_ATTEMPTS} programs in a row failed to compile or rendered "
            "degenerate images; check the log for GLSL errors (with shader_dir: do its programs compile?)"
        )

    # ------------------------------------------------------------------ blocks
    def pool(self, block: int) -> torch.Tensor:
        """The block's program images, uint8 [pool_size, 3, H, W] (programs in slot order)."""
        cfg = self.config
        draws = cfg.pool_size // cfg.programs_per_block
        images = np.concatenate([self._render_slot(block, s, draws) for s in range(cfg.programs_per_block)])
        self.stats.rendered += len(images)
        return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()

    def ingredient_indices(self, block: int, generator: torch.Generator) -> torch.Tensor:
        """long [block_size, ingredients]: pool images of each sample (distinct within a sample)."""
        cfg = self.config
        pool, k = cfg.pool_size, self.process.ingredients
        if k == 1 and pool >= cfg.block_size:
            return torch.randperm(pool, generator=generator)[: cfg.block_size, None]
        if pool >= k:
            return torch.rand(cfg.block_size, pool, generator=generator).argsort(dim=1)[:, :k]
        return torch.randint(pool, (cfg.block_size, k), generator=generator)

    def __call__(self, block: int) -> torch.Tensor:
        """Samples of block ``block``: uint8 [block_size, 3, H, W]."""
        cfg = self.config
        if self.process.generate is not None:  # a process that makes its samples itself: no GL, no pool
            out = self.process.generate(cfg, block)
            self.stats.blocks += 1
            self.stats.samples += cfg.block_size
            return out
        pool = self.pool(block)
        generator = torch.Generator().manual_seed(int(np.random.default_rng([cfg.seed, block, 0xB10C]).integers(2**62)))
        indices = self.ingredient_indices(block, generator)
        cache: dict = {"workspace": self._workspace}
        out = torch.empty((cfg.block_size, 3, cfg.image_size, cfg.image_size), dtype=torch.uint8)
        for start in range(0, cfg.block_size, CHUNK):
            out[start : start + CHUNK] = self.process.combine(pool, indices[start : start + CHUNK], generator, cache)
        self.stats.blocks += 1
        self.stats.samples += cfg.block_size
        return out
