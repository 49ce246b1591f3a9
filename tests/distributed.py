"""Run a function in N real processes with the gloo backend (CPU), for DDP equality tests."""

from __future__ import annotations

import os
import pickle
import socket
from collections.abc import Callable
from typing import Any

import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world: int, port: int, fn: Callable, args: tuple, queue: Any) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        # Pickled by value: a queue would pass tensors as shared-memory handles that die with this process.
        queue.put((rank, pickle.dumps(fn(*args))))
    finally:
        dist.destroy_process_group()


def run_distributed(fn: Callable, world: int = 2, args: tuple = (), timeout: float = 300) -> list[Any]:
    """Call ``fn(*args)`` on ``world`` gloo ranks; return each rank's result, in rank order.

    ``fn`` must be importable (module level) and its result picklable.
    """
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, world, port, fn, args, queue)) for r in range(world)]
    for p in procs:
        p.start()
    try:
        # Read before joining: a large result would otherwise block its process on the pipe.
        results = dict(queue.get(timeout=timeout) for _ in range(world))
    except Exception as err:
        codes = [p.exitcode for p in procs]
        raise RuntimeError(f"a rank failed or hung (exit codes {codes})") from err
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    return [pickle.loads(results[r]) for r in range(world)]
