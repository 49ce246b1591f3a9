"""The sample stream: disjoint blocks over DDP ranks x DataLoader workers, a bounded shuffle, a position.

Global sample ``i`` of (config, seed) is sample ``i % block_size`` of block ``i // block_size``, and a
block is a pure function of (config, block index) (:mod:`.blocks`). Epoch ``e`` covers the blocks
``[e * B, (e + 1) * B)``. The ``S = world_size * num_workers`` *slots* (rank r, worker w -> slot
``r * num_workers + w``) take the epoch's blocks round-robin, so they are disjoint, and ``B`` is rounded
down to a multiple of ``S`` so every rank yields the same number of batches (DDP needs equal counts).
Whatever the layout, an epoch therefore holds exactly the samples of its blocks: the same multiset for
1 or 8 ranks, 0 or 4 workers (when ``B`` is a multiple of both layouts' slot counts); only which
process sees which block, and the order, differ.

Each slot shuffles its samples within windows of ``shuffle_blocks`` consecutive blocks (a bounded
buffer, permutation keyed by (seed, epoch, slot, window)). A slot's position is "samples emitted this
epoch"; resuming at a position skips whole windows without rendering them and re-renders only the
current window, so the resumed stream is identical to the uninterrupted one.

With ``continuous`` set (the training loader does, see ``datamodules/shaders.py``), one iterator runs
through every epoch from ``epoch`` on, as batches: the workers never restart, so an epoch start costs no
new process, EGL context and program loads, and the next epoch's first window starts rendering as soon as
the DataLoader's prefetch reaches it. The batches are the ones the per-epoch iterators would give (a
worker's last batch of an epoch may be short in both).
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import IterableDataset, default_collate, get_worker_info

from procedural_perception.core.distributed import rank_and_world

from .blocks import BlockConfig, BlockMaker

log = logging.getLogger(__name__)

_MAKERS: dict[tuple, BlockMaker] = {}


@dataclass(frozen=True)
class Layout:
    """Where this iterator sits: DDP rank / world size and DataLoader worker / worker count."""

    rank: int = 0
    world_size: int = 1
    worker: int = 0
    num_workers: int = 1

    @property
    def slot(self) -> int:
        return self.rank * self.num_workers + self.worker

    @property
    def slots(self) -> int:
        return self.world_size * self.num_workers


def blocks_per_epoch(samples_per_epoch: int, block_size: int, slots: int) -> int:
    """Blocks in an epoch: samples_per_epoch / block_size, rounded down to a multiple of ``slots`` (>= slots)."""
    blocks = samples_per_epoch // block_size
    return max(slots, blocks - blocks % slots)


def slot_blocks(epoch: int, blocks: int, layout: Layout) -> range:
    """Global block indices of ``layout``'s slot in ``epoch`` (disjoint across slots)."""
    return range(epoch * blocks + layout.slot, (epoch + 1) * blocks, layout.slots)


def _shared_empty(shape: tuple[int, ...]) -> torch.Tensor:
    """float32 tensor of ``shape``; in a DataLoader worker, allocated in shared memory (as the default
    collate does), so handing it to the trainer process sends a handle instead of copying the batch."""
    if get_worker_info() is None:
        return torch.empty(shape)
    storage = torch.UntypedStorage._new_shared(int(np.prod(shape)) * 4)  # bytes of float32
    return torch.empty(0).set_(storage, 0, shape)


class ProceduralStream(IterableDataset):
    """Iterable of procedural samples for one epoch, sharded over ranks and workers.

    Items are ``transform(image)`` with image float [3, H, W] in [0, 1] (the image itself when
    ``transform`` is None). ``epoch`` and ``start`` (samples this slot already emitted in the epoch, see
    :meth:`slot_start`) are set by the owner before iterating. ``rank`` / ``world_size`` default to the
    process group's (1 process without one).
    """

    def __init__(
        self,
        config: BlockConfig,
        samples_per_epoch: int,
        shuffle_blocks: int = 4,
        transform: Callable | None = None,
        tiles: int = 16,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        self.config = config
        self.samples_per_epoch = samples_per_epoch
        self.shuffle_blocks = max(1, shuffle_blocks)
        self.transform = transform
        self.tiles = tiles
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.batches_done = 0  # batches of the whole loader (all workers) already consumed this epoch
        self.batch_size = 1
        self.indexed = False  # True: items are (global index, uint8 [3, H, W]) instead of transformed floats
        # True (and no transform, not indexed): items are whole float batches [<= batch_size, 3, H, W],
        # the batches a DataLoader with ``batch_size`` would collate, for a loader with batch_size=None.
        # A worker writes each batch once, straight into shared memory: no per-sample tensors, no
        # collate copy, and the trainer process does no conversion (measured faster, see benchmarks/render.py).
        self.batched = False
        # True: every epoch from ``epoch`` on, as batches of ``batch_size`` (collated here; a loader with
        # batch_size=None), one iterator that never stops (module docstring).
        self.continuous = False

    # ------------------------------------------------------------------ layout
    def layout(self) -> Layout:
        rank, world = rank_and_world()
        rank = rank if self.rank is None else self.rank
        world = world if self.world_size is None else self.world_size
        info = get_worker_info()
        if info is None:
            return Layout(rank, world, 0, 1)
        return Layout(rank, world, info.id, info.num_workers)

    def slot_start(self, layout: Layout) -> int:
        """Samples this slot already emitted, from the loader's batch count.

        A DataLoader over an IterableDataset takes batches from its workers in turn (worker 0, 1, ...,
        0, 1, ...), each batch ``batch_size`` samples from one worker, so after ``k`` batches worker
        ``w`` has given ``ceil((k - w) / num_workers)`` of them.
        """
        k, n = self.batches_done, layout.num_workers
        return max(0, -(-(k - layout.worker) // n)) * self.batch_size

    def maker(self) -> BlockMaker:
        """This process's block maker (renderer and EGL context created lazily, in the worker).

        Shared by the streams of one process with the same config, so compiled programs are reused.
        """
        key = (self.config, self.tiles, os.getpid())
        if key not in _MAKERS:
            info = get_worker_info()
            if info is not None:
                # llvmpipe starts one thread per core in every context: with W workers on C cores,
                # C // W threads each avoids oversubscription (ignored by hardware drivers).
                os.environ.setdefault("LP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // info.num_workers)))
            _MAKERS[key] = BlockMaker(self.config, tiles=self.tiles)
        return _MAKERS[key]

    # ------------------------------------------------------------------ iteration
    def indexed_samples(self, layout: Layout, epoch: int, start: int = 0) -> Iterator[tuple[int, torch.Tensor]]:
        """(global sample index, uint8 [3, H, W]) of ``layout``'s slot in ``epoch``, from position ``start``."""
        cfg = self.config
        blocks = list(slot_blocks(epoch, blocks_per_epoch(self.samples_per_epoch, cfg.block_size, layout.slots), layout))
        window_samples = self.shuffle_blocks * cfg.block_size
        maker = self.maker()
        for w, first in enumerate(range(0, len(blocks), self.shuffle_blocks)):
            window = blocks[first : first + self.shuffle_blocks]
            size = len(window) * cfg.block_size
            offset = start - w * window_samples
            if offset >= size:
                continue  # already consumed before the resume: not even rendered
            images = torch.cat([maker(b) for b in window])
            index = torch.cat([torch.arange(b * cfg.block_size, (b + 1) * cfg.block_size) for b in window])
            order = np.random.default_rng([cfg.seed, epoch, layout.slot, w, 0x5F]).permutation(size)
            for j in order[max(offset, 0) :]:
                yield int(index[j]), images[j]
        stats = maker.stats
        log.info(
            "slot %d epoch %d: %d blocks, %d programs (%d distinct), %d renders (%d degenerate rejected, "
            "%d compile failures), ingredient reuse factor %.1f", layout.slot, epoch, stats.blocks, stats.programs,
            stats.distinct_programs, stats.rendered, stats.degenerate, stats.compile_failures, stats.reuse_factor,
        )

    def __iter__(self) -> Iterator:
        # Not a generator itself: the mode and position are read when the iterator is made (a loader's
        # workers copy the dataset then), not at its first item.
        layout = self.layout()
        if self.continuous and not self.indexed:
            return self._epochs(layout, self.epoch, self.slot_start(layout))
        return self._epoch(layout, self.epoch, self.slot_start(layout))

    def _epoch(self, layout: Layout, epoch: int, start: int) -> Iterator:
        """The items of ``layout``'s slot in ``epoch`` from position ``start`` (see the class docstring)."""
        samples = self.indexed_samples(layout, epoch, start)
        if self.batched and self.transform is None and not self.indexed:
            yield from self._batches(samples)
            return
        for index, image in samples:
            yield (index, image) if self.indexed else self._item(index, image)

    def _item(self, index: int, image: torch.Tensor):
        """One training item: uint8 [3, H, W] as float in [0, 1], through ``transform`` when there is one."""
        x = image.float().div_(255.0)
        return x if self.transform is None else self.transform_sample(x, index)

    def _epochs(self, layout: Layout, first: int, start: int) -> Iterator:
        """Every epoch from ``first`` (at position ``start``) on, as batches: float [b, 3, H, W] without a
        transform, else the collated transforms (the DINO crop list: one [b, 3, S, S] tensor per crop)."""
        for epoch in itertools.count(first):
            samples = self.indexed_samples(layout, epoch, start if epoch == first else 0)
            if self.transform is None:
                yield from self._batches(samples)
                continue
            while group := list(itertools.islice(samples, self.batch_size)):
                yield default_collate([self._item(index, image) for index, image in group])

    def batches_per_slot(self, slots: int) -> int:
        """Batches one slot yields in an epoch of ``slots`` slots (its last one may be short)."""
        per_slot = blocks_per_epoch(self.samples_per_epoch, self.config.block_size, slots) // slots
        return -(-per_slot * self.config.block_size // self.batch_size)

    def _batches(self, samples: Iterator[tuple[int, torch.Tensor]]) -> Iterator[torch.Tensor]:
        """Consecutive groups of ``batch_size`` samples as float [b, 3, H, W] in [0, 1] (the last may be short)."""
        batch, filled = None, 0
        for _, image in samples:
            if batch is None:
                batch = _shared_empty((self.batch_size, *image.shape))
            torch.div(image, 255.0, out=batch[filled])  # == image.float().div_(255.0), in one pass
            filled += 1
            if filled == self.batch_size:
                yield batch
                batch, filled = None, 0
        if filled:
            yield batch[:filled]

    def transform_sample(self, image: torch.Tensor, index: int):
        """``transform(image)`` with its random draws seeded by (seed, global sample index).

        The augmentation of a sample is then a pure function of its position, like the image itself:
        the same whatever the worker, the rank, the data-loader prefetch or a resume from a checkpoint.
        It does not touch the global generators, whose draws stay the model's (drop-path, dropout).
        """
        seed = int(np.random.SeedSequence([self.config.seed, index, 0xA06]).generate_state(1, np.uint64)[0])
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)  # the CPU generator only (transforms run on the CPU)
            return self.transform(image)
