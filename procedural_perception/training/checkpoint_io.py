"""Atomic checkpoint files: Lightning's torch checkpoint I/O, written through :func:`procedural_perception.core.atomic.atomic_path`.

The checkpoint is serialised into a temporary file in the target's folder, fsynced, then renamed
over the target (``os.replace``), so ``last.ckpt`` is always either the previous complete
checkpoint or the new complete one - never a truncated file - even when the process is killed
mid-write or the disk fills up. A full disk raises :class:`procedural_perception.core.atomic.DiskFullError`, whose message
says that the previous checkpoint is intact and what to do.

Use: ``Trainer(plugins=[AtomicCheckpointIO()])`` (``procedural_perception.training.launch.trainer_arguments`` adds it).
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO
from typing_extensions import override

from procedural_perception.core.atomic import atomic_path
from procedural_perception.core.checkpoints import checksum_path, file_digest, write_checksum


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are all-or-nothing (temporary file, then rename).

    Remote URLs (``s3://`` ...) keep Lightning's own fsspec transaction, which is already atomic
    per object on object stores.
    """

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if not _is_local_file_protocol(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options (got {storage_options!r}).")
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)
            digest = file_digest(tmp)
        write_checksum(path, digest)  # torch's format has no checksum: a sidecar catches flipped bits

    @override
    def remove_checkpoint(self, path: _PATH) -> None:
        super().remove_checkpoint(path)
        if _is_local_file_protocol(path):
            checksum_path(path).unlink(missing_ok=True)
