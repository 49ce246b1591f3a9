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
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM(15), the shell's convention for "terminated by SIGTERM"


def last_checkpoint_path(trainer: L.Trainer) -> Path:
    """``<checkpoint dir>/last.ckpt`` of the run's ModelCheckpoint (``<default_root_dir>/checkpoints`` without one)."""
    checkpoint = trainer.checkpoint_callback
    if isinstance(checkpoint, ModelCheckpoint) and checkpoint.dirpath:
        return Path(checkpoint.dirpath) / f"{checkpoint.CHECKPOINT_NAME_LAST}{checkpoint.FILE_EXTENSION}"
    return Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"


class PreemptionCheckpoint(Callback):
    """Write ``last.ckpt`` when SIGTERM stops training, then exit with :data:`PREEMPTED_EXIT_CODE`."""

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):
            return
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
