"""ShaderDataModule: procedural images rendered live, sharded over ranks and workers, resumable.

Samples come from :class:`datamodules.procedural.stream.ProceduralStream` (an IterableDataset). The
module counts the batches handed to training, and ``state_dict()`` / ``load_state_dict()`` carry
(epoch, batches consumed), so a Lightning checkpoint stores the stream position and a resumed run
continues with exactly the samples it would have seen.

By default (``keep_workers``) the training loader keeps one worker iterator for the whole run: workers
do not restart at each epoch (the restart and the first window's render were the cpu profile's data wait,
all at epoch boundaries). ``prefetch_batches`` sets how far ahead a worker renders; on 2 cores rendering
further ahead competes with training and lowers images/s (``configs/profile/cpu.yaml``).

Each DataLoader worker creates its own EGL context on its first block. When this process already holds
a context (it rendered something itself, e.g. a contact sheet), forked workers would hang at their first
draw, so the loader then starts its workers with ``spawn``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import lightning as L
from torch.utils.data import DataLoader

from procedural_perception.core.config import ConfigError, check_minimums

from .procedural import egl
from .procedural.blocks import BlockConfig, fresh_program_seeds
from .procedural.processes import get_process
from .procedural.program_pool import distinct_programs
from .procedural.programs import check_engine, family_weights
from .procedural.sandbox import DRAW_TIMEOUT_S
from .procedural.stream import ProceduralStream, blocks_per_epoch


class ShaderDataModule(L.LightningDataModule):
    """Procedural training images: ``process`` in shaders | mixup | kml | kml_mixup, or the GL-free baselines
    stylegan | dead_leaves (which ignore ``programs_per_block``, ``reuse``, ``tiles`` and ``shader_dir``).

    Batches are ``[B, 3, H, W]`` float in [0, 1] without ``transform``; with one, each sample is
    ``transform(image)`` (the DINO multi-crop list when training). ``samples_per_epoch`` counts all ranks.
    Engine options: ``block_size`` (samples per block), ``programs_per_block``, ``program_pool`` (the
    fixed set of programs blocks draw from, :mod:`.procedural.program_pool`), ``reuse`` (ingredient
    uses per rendered image; None: the process's ``default_reuse``), ``shuffle_blocks`` (blocks per shuffle window),
    ``tiles`` (images per framebuffer readback), ``draw_timeout_s`` (with ``shader_dir``: a user program
    whose draw takes longer is abandoned and replaced, see ``procedural/sandbox.py``), ``rank`` /
    ``world_size`` (override the process group's, for tests and tools). ``families``: program families and
    their weights, e.g. ``{patterns: 1, raymarch: 1}`` (datamodules/procedural/families; None: ``patterns`` only).
    ``program_engine``: ``compiled`` (each program its own GLSL program) or ``interpreted`` (patterns programs
    on one shared interpreter shader, no compile per program; other families stay compiled).
    ``keep_workers``: one loader iterator for the whole run, rendering across epoch boundaries (False: new
    workers each epoch, as before; same batches either way). ``prefetch_batches``: batches each worker keeps
    ready ahead of training (the DataLoader's ``prefetch_factor``; None: its default, 2).
    ``warm_programs``: with a ``program_pool``, :meth:`prepare_data` compiles the whole pool into Mesa's disk
    cache once per machine and image size before training (:mod:`.procedural.warm_pool`; False: programs
    compile as blocks meet them, same samples).
    """

    def __init__(
        self,
        process: str = "kml_mixup",
        seed: int = 0,
        image_size: int = 224,
        batch_size: int = 64,
        num_workers: int = 2,
        samples_per_epoch: int = 1_300_000,
        shader_dir: str | None = None,
        draw_timeout_s: float = DRAW_TIMEOUT_S,
        transform: Callable | None = None,
        block_size: int = 512,
        programs_per_block: int = 4,
        program_pool: int = 0,
        reuse: float | None = None,
        shuffle_blocks: int = 2,
        tiles: int = 16,
        rank: int | None = None,
        world_size: int | None = None,
        families: Mapping[str, float] | None = None,
        program_engine: str = "compiled",
        keep_workers: bool = True,
        prefetch_batches: int | None = None,
        warm_programs: bool = True,
    ):
        super().__init__()
        default_reuse = get_process(process).default_reuse  # and fail early on a typo
        check_minimums("data", batch_size=(batch_size, 1), num_workers=(num_workers, 0), image_size=(image_size, 8),
                       samples_per_epoch=(samples_per_epoch, 1), block_size=(block_size, 1),
                       programs_per_block=(programs_per_block, 1), program_pool=(program_pool, 0), shuffle_blocks=(shuffle_blocks, 1), tiles=(tiles, 1),
                       draw_timeout_s=(draw_timeout_s, 0.01))
        if prefetch_batches is not None:
            check_minimums("data", prefetch_batches=(prefetch_batches, 1))
        try:
            check_engine(program_engine)
        except ValueError as error:
            raise ConfigError(f"data.program_engine: {error}") from None
        if 0 < program_pool < programs_per_block and shader_dir is None:
            raise ConfigError(
                f"data.program_pool ({program_pool}) is smaller than data.programs_per_block ({programs_per_block}): "
                "a block renders distinct programs of the pool; raise the pool or lower programs_per_block "
                "(data.program_pool=0 draws fresh programs instead)"
            )
        self.config = BlockConfig(
            process=process, seed=seed, image_size=image_size, block_size=block_size,
            programs_per_block=programs_per_block, program_pool=program_pool, reuse=default_reuse if reuse is None else reuse,
            shader_dir=shader_dir, draw_timeout_s=draw_timeout_s, families=None if families is None else family_weights(dict(families)),
            program_engine=program_engine,
        )
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.keep_workers = keep_workers
        self.prefetch_batches = prefetch_batches
        self.warm_programs = warm_programs
        self.dataset = ProceduralStream(
            self.config, samples_per_epoch, shuffle_blocks=shuffle_blocks, transform=transform, tiles=tiles,
            rank=rank, world_size=world_size,
        )
        self.dataset.batch_size = batch_size
        self.epoch = 0
        self.batches_consumed = 0  # batches handed out in the current epoch
        self._fresh_seeds: set[int] = set()  # program seeds of blocks 0 .. _fresh_blocks - 1 (program_pool=0)
        self._fresh_blocks = 0

    # ------------------------------------------------------------------ loaders
    def prepare_data(self) -> None:
        """Lightning's once-per-node step before training: warm the program pool (``warm_programs``).

        A pool program's first compile on llvmpipe costs ~0.16 s, its load from Mesa's disk cache ~9 ms, so
        a run that draws many programs per block pays the compiles once per machine here, in one process
        per core with progress lines, instead of inside its loader worker while training waits. Under DDP the
        other ranks of the node wait at Lightning's barrier (the cpu profile's pool: ~8 min on 2 cores)."""
        cfg = self.config
        if not self.warm_programs or cfg.program_pool == 0 or cfg.shader_dir is not None \
                or get_process(cfg.process).generate is not None:
            return
        from .procedural.warm_pool import ensure_warm

        ensure_warm(cfg.program_pool, cfg.image_size, None if cfg.families is None else dict(cfg.families),
                    cfg.program_engine)

    def train_dataloader(self) -> DataLoader:
        # Without a transform, or across epochs, workers yield whole batches (ProceduralStream.batched /
        # .continuous), so the loader itself does not batch.
        self.dataset.batched = self.dataset.transform is None
        batched = self.dataset.batched or self.keep_workers
        workers = {} if self.num_workers == 0 else {
            "prefetch_factor": self.prefetch_batches,
            "multiprocessing_context": "spawn" if egl.context_exists() else None,
        }
        self._loader = _PositionedLoader(self, self.dataset, batch_size=None if batched else self.batch_size,
                                         num_workers=self.num_workers, **workers)
        return self._loader

    def teardown(self, stage: str) -> None:
        """After fit: stop the kept workers (they would otherwise idle, with their renderers, until exit)."""
        loader = getattr(self, "_loader", None)
        if loader is not None:
            loader.close()

    def batches_per_epoch(self) -> int:
        """Batches this rank's loader yields in an epoch (each worker's last one may be short)."""
        workers = max(self.num_workers, 1)
        return self.dataset.batches_per_slot(self.dataset.layout().world_size * workers) * workers

    def blocks_per_epoch(self) -> int:
        layout = self.dataset.layout()
        return blocks_per_epoch(self.dataset.samples_per_epoch, self.config.block_size,
                                layout.world_size * max(self.num_workers, 1))

    def distinct_programs(self) -> int:
        """Distinct programs in the blocks this run has rendered so far (all ranks and workers).

        The block schedule is a pure function of (seed, block), so the count follows from the number of
        samples consumed (rounded up to whole blocks; blocks of one pool cycle never share a program, so
        which blocks of the epoch were rendered does not matter), without asking the workers. Programs that replaced
        failing ones are not counted (workers log their own exact counts). Without a pool, the fresh program
        seeds of those blocks (:func:`fresh_program_seeds`, gathered incrementally). 0 with ``shader_dir`` or
        a process without programs.
        """
        cfg = self.config
        if cfg.shader_dir is not None or get_process(cfg.process).generate is not None:
            return 0
        trainer = getattr(self, "trainer", None)
        world = trainer.world_size if trainer is not None else self.dataset.layout().world_size
        per_epoch = self.blocks_per_epoch() * cfg.block_size
        samples = self.epoch * per_epoch + self.batches_consumed * self.batch_size * world
        blocks = min(-(-samples // cfg.block_size), (self.epoch + 1) * self.blocks_per_epoch())
        if cfg.program_pool == 0:
            return self.fresh_distinct_programs(blocks)
        return distinct_programs(cfg.seed, cfg.program_pool, cfg.programs_per_block, blocks)

    def fresh_distinct_programs(self, blocks: int) -> int:
        """Distinct fresh program seeds of blocks ``0 .. blocks - 1`` (``program_pool=0``), counted incrementally."""
        cfg = self.config
        if blocks < self._fresh_blocks:  # asked about fewer blocks than seen (a resume rewound): recount
            self._fresh_seeds, self._fresh_blocks = set(), 0
        for block in range(self._fresh_blocks, blocks):
            self._fresh_seeds.update(int(s) for s in fresh_program_seeds(cfg.seed, block, cfg.programs_per_block))
        self._fresh_blocks = max(self._fresh_blocks, blocks)
        return len(self._fresh_seeds)

    # ------------------------------------------------------------------ stream position
    def state_dict(self) -> dict:
        """Stream position. Under a Trainer, the batch Lightning's fetcher holds ahead is not counted."""
        consumed = self.batches_consumed
        trainer = getattr(self, "trainer", None)
        if trainer is not None and consumed > 0 and getattr(trainer, "training", False):
            consumed -= 1  # the prefetching fetcher has taken one batch more than training used
        layout = self.dataset.layout()
        return {"epoch": self.epoch, "batches_consumed": consumed, "batch_size": self.batch_size,
                "num_workers": self.num_workers, "world_size": layout.world_size,
                "process": self.config.process, "seed": self.config.seed}

    def load_state_dict(self, state: dict) -> None:
        """Resume at a saved position (exact when batch size, worker count and world size are unchanged)."""
        layout = self.dataset.layout()
        same = (state.get("batch_size"), state.get("num_workers"), state.get("world_size")) == (
            self.batch_size, self.num_workers, layout.world_size)
        self.epoch = int(state["epoch"])
        if same:
            self.batches_consumed = int(state["batches_consumed"])
        else:
            import warnings

            warnings.warn(
                "the procedural stream resumes at the start of epoch "
                f"{self.epoch}: batch size / workers / world size changed since the checkpoint "
                f"({state.get('batch_size')}/{state.get('num_workers')}/{state.get('world_size')} -> "
                f"{self.batch_size}/{self.num_workers}/{layout.world_size}), so the mid-epoch position "
                "cannot be mapped exactly", stacklevel=2,
            )
            self.batches_consumed = 0


class _PositionedLoader(DataLoader):
    """A DataLoader that starts its workers at the module's stream position and counts what it yields.

    With ``module.keep_workers`` the workers' iterator (over every epoch, ``ProceduralStream.continuous``)
    is kept between epochs: each epoch takes its :meth:`ShaderDataModule.batches_per_epoch` batches from
    it. It is started again only when the module's position moved elsewhere (a checkpoint was loaded).
    """

    def __init__(self, module: ShaderDataModule, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._module = module
        self._workers = None  # the kept iterator over every epoch (keep_workers)
        self._at: tuple[int, int] | None = None  # (epoch, batches consumed) where _workers stands

    def _start(self):
        # Workers receive a copy of the dataset when the iterator starts (and ProceduralStream reads its mode
        # and position then): set them first. Only this iterator runs on across epochs; any other loader
        # over the same dataset stays per epoch.
        self.dataset.epoch = self._module.epoch
        self.dataset.batches_done = self._module.batches_consumed
        self.dataset.continuous = self._module.keep_workers
        try:
            return super().__iter__()
        finally:
            self.dataset.continuous = False

    def __iter__(self):
        module = self._module
        if not module.keep_workers:
            for batch in self._start():
                module.batches_consumed += 1
                yield batch
        else:
            if self._workers is None or self._at != (module.epoch, module.batches_consumed):
                self._workers = self._start()
            for _ in range(module.batches_per_epoch() - module.batches_consumed):
                batch = next(self._workers)
                module.batches_consumed += 1
                self._at = (module.epoch, module.batches_consumed)
                yield batch
        module.epoch += 1
        module.batches_consumed = 0
        self._at = (module.epoch, 0)

    def close(self) -> None:
        """Shut the kept workers down now (a later epoch starts new ones at the module's position)."""
        workers, self._workers, self._at = self._workers, None, None
        shutdown = getattr(workers, "_shutdown_workers", None)  # multi-process iterators only
        if shutdown is not None:
            shutdown()
