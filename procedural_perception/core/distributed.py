"""Small torch.distributed helpers shared by callbacks and the procedural stream.

All of them work without an initialised process group (one process): rank 0 of world 1.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    if is_distributed():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def local_rank() -> int:
    """The process's index on its node (LOCAL_RANK from torchrun / Lightning / SLURM), 0 otherwise."""
    for var in ("LOCAL_RANK", "SLURM_LOCALID"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def shard_indices(n: int, rank: int, world: int) -> range:
    """Strided shard of ``range(n)`` for ``rank``: rank r takes r, r+world, ... (no padding)."""
    return range(rank, n, world)


def gather_shards(local: torch.Tensor, n_total: int) -> torch.Tensor:
    """Inverse of :func:`shard_indices`: all-gather each rank's rows and put them back in global order.

    ``local`` holds rows ``shard_indices(n_total, rank, world)``. Ranks may hold one row fewer than
    others; rows are padded for the collective and the padding is dropped, so the result equals
    what one process would have computed, on every rank.
    """
    rank, world = rank_and_world()
    if world == 1:
        return local
    per_rank = -(-n_total // world)
    padded = local.new_zeros((per_rank, *local.shape[1:]))
    padded[: local.shape[0]] = local
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded.contiguous())
    out = local.new_empty((n_total, *local.shape[1:]))
    for r, rows in enumerate(gathered):
        count = len(shard_indices(n_total, r, world))
        out[r::world] = rows[:count]
    return out
