"""Pre-emption: on SIGTERM, finish the current step, write ``last.ckpt`` and stop cleanly.

Schedulers (SLURM pre-emption or time limit, Kubernetes, spot instances, torchrun tearing a job down)
send SIGTERM and, a grace period later, SIGKILL. Lightning's signal connector already turns SIGTERM
into ``trainer.received_sigterm``; the training loop finishes the optimisation step in flight and raises
``SIGTERMException``; in DDP rank 0 broadcasts its flag before each step, so all ranks stop at the
same step (launchers and schedulers signal every rank). This callback writes the checkpoint at that point - the full training state after the last
completed step, including the procedural stream position - to the checkpoint callback's ``last.ckpt``,
which is what starting the same command again resumes from. The process then exits with status 143
(128 + SIGTERM), so a job script can tell "pre-empted, requeue me" from "finished" (0) and
"failed" (1).

Without this callback a SIGTERM would lose every step since the last periodic checkpoint.

The wait for the step in flight is bounded: a step that does not finish within ``grace_s`` seconds of
the SIGTERM (a CPU run of the paper profile, workers still rendering the first block), or a second
SIGTERM, ends the process at once with status 143 and a message; the checkpoints already written are
intact (every write is atomic), only the steps since the last one are lost.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM(15), the shell's convention for "terminated by SIGTERM"
# Seconds a SIGTERM waits for the step in flight before the process ends without a new checkpoint.
# Below the 60 s schedulers commonly leave before SIGKILL (Kubernetes' default grace is 30 s: set
# callbacks.preemption.grace_s lower there); SLURM's --signal=TERM@120 leaves two minutes.
GRACE_S = 50.0


def last_checkpoint_path(trainer: L.Trainer) -> Path:
    """``<checkpoint dir>/last.ckpt`` of the run's ModelCheckpoint (``<default_root_dir>/checkpoints`` without one)."""
    checkpoint = trainer.checkpoint_callback
    if isinstance(checkpoint, ModelCheckpoint) and checkpoint.dirpath:
        return Path(checkpoint.dirpath) / f"{checkpoint.CHECKPOINT_NAME_LAST}{checkpoint.FILE_EXTENSION}"
    return Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"


class PreemptionCheckpoint(Callback):
    """Write ``last.ckpt`` when SIGTERM stops training, then exit with :data:`PREEMPTED_EXIT_CODE`.

    Args:
        grace_s: seconds to wait for the step in flight after a SIGTERM before exiting without a new
            checkpoint (a second SIGTERM exits at once).
    """

    def __init__(self, grace_s: float = GRACE_S) -> None:
        self.grace_s = grace_s
        self._signals = 0
        self._timer: threading.Timer | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Wrap Lightning's SIGTERM handler (registered by now) with the bounded wait."""
        if threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGTERM)

        def handler(signum, frame):
            self._signals += 1
            if self._signals >= 2:
                self._exit_now(trainer, "a second SIGTERM")
            self._timer = threading.Timer(self.grace_s, self._exit_now, args=(
                trainer, f"no training step finished within {self.grace_s:.0f} s of SIGTERM"))
            self._timer.daemon = True
            self._timer.start()
            if callable(previous):
                previous(signum, frame)

        signal.signal(signal.SIGTERM, handler)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._timer is not None:
            self._timer.cancel()

    @staticmethod
    def _exit_now(trainer: L.Trainer, reason: str) -> None:
        last = last_checkpoint_path(trainer)
        kept = f"{last} (written before the signal) is intact" if last.exists() else "no checkpoint was written yet"
        print(f"Stopping now: {reason}. {kept}; the steps since it are lost. Run the same command again to resume.",
              file=sys.stderr, flush=True)
        os._exit(PREEMPTED_EXIT_CODE)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        if self._timer is not None:  # the step in flight finished in time: save instead of ending the process
            self._timer.cancel()
        path = last_checkpoint_path(trainer)
        try:
            # Every rank takes part (rank 0 writes, the others join the barrier).
            trainer.save_checkpoint(path)
        except Exception as err:  # e.g. the disk is full or another rank is already gone
            rank_zero_warn(f"SIGTERM received, but writing {path} failed ({err}); the previous checkpoints are kept.")
        else:
            rank_zero_info(
                f"SIGTERM received: stopped after step {trainer.global_step} and saved {path}. "
                "Run the same command again to resume from it."
            )
        exception.code = PREEMPTED_EXIT_CODE  # SIGTERMException is a SystemExit: this becomes the exit status
