"""One DDP rank dies or hangs: the other ranks stop within a bounded time and say why.

A collective (gradient all-reduce, barrier, broadcast) needs every rank. When one rank is killed
(out of memory, a crashed node, a bug that only one shard hits), the others either get an error from
the transport at once (gloo: "Connection closed by peer") or, if the peer vanished silently, wait
until the process group's timeout (``procedural_perception.training.launch.DDP_TIMEOUT_S``, set on the DDP strategy) and then
get a timeout error. Either way the raw error names sockets and ranks, not the problem, and a rank
can still get stuck afterwards while tearing down. This callback, on such an error:

- prints one clear message on the surviving rank: another rank stopped, where to look, how to resume;
- starts a watchdog that ends the process (exit status 1) if tearing down takes longer than
  ``exit_grace_s``, so no survivor lingers holding GPUs.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from pathlib import Path

import lightning as L
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from rich.console import Console
from rich.markup import escape

from procedural_perception.training.preemption import last_checkpoint_path

# Error texts of gloo, NCCL and torch.distributed when a peer is gone or silent.
_PEER_FAILURE = re.compile(
    r"connection (closed|reset)|broken pipe|timed out|timeout|watchdog|socket|peer|nccl|gloo|"
    r"process group|store",
    re.IGNORECASE,
)

# Seconds a failing rank may spend tearing down (closing loggers, process group) before it is ended.
EXIT_GRACE_S = 60.0


def is_peer_failure(exception: BaseException) -> bool:
    """True for errors that mean another rank died or stopped answering (not a bug in this rank)."""
    if isinstance(exception, dist.DistError):  # DistBackendError, DistNetworkError, DistStoreError
        return True
    return isinstance(exception, RuntimeError) and bool(_PEER_FAILURE.search(str(exception)))


def peer_failure_message(rank: int, world: int, checkpoint: Path, error: BaseException) -> str:
    first_line = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
    resume = f"from {checkpoint}" if checkpoint.exists() else "from the start (no checkpoint was written yet)"
    return (
        f"Rank {rank} of {world}: another training process stopped or stopped answering, so this one is "
        f"exiting instead of waiting ({type(error).__name__}: {first_line}). Look for the first error in the "
        "other ranks' logs (often out-of-memory or a killed node). Fix it and run the same command again: "
        f"training resumes {resume}."
    )


class RankFailureHandler(Callback):
    """Args:
        exit_grace_s: after a peer failure, end this process (status 1) if it has not exited within this many seconds.
    """

    def __init__(self, exit_grace_s: float = EXIT_GRACE_S) -> None:
        self.exit_grace_s = exit_grace_s

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if trainer.world_size < 2 or not is_peer_failure(exception):
            return
        message = peer_failure_message(trainer.global_rank, trainer.world_size, last_checkpoint_path(trainer), exception)
        Console(stderr=True, soft_wrap=True).print(f"[bold red]Distributed training stopped:[/bold red] {escape(message)}")
        sys.stderr.flush()
        timer = threading.Timer(self.exit_grace_s, os._exit, args=(1,))
        timer.daemon = True
        timer.start()
