"""The one reader for raw checkpoint files (Lightning ``.ckpt``: a torch pickle of a dict).

Resume checks, the random-initialisation twin of a checkpoint, the experiment's "is this run done"
check and exports all read checkpoints through :func:`read_checkpoint`, so a damaged file gives the
same clear error everywhere (:class:`CheckpointError`, naming the file) instead of an unpickling
traceback. Loading the model itself goes through Lightning (``DINO.load_from_checkpoint``).

torch's checkpoint format carries no checksum (a flipped bit loads silently as a wrong weight), so
every checkpoint the trainer writes gets a sidecar ``<name>.ckpt.sha256`` (:func:`write_checksum`),
and :func:`read_checkpoint` refuses a file whose bytes no longer match it.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from procedural_perception.core.atomic import atomic_write_text

CHECKSUM_SUFFIX = ".sha256"


class CheckpointError(OSError):
    """A checkpoint file that cannot be read (missing, truncated, corrupted or not a checkpoint)."""


def checksum_path(path: str | os.PathLike) -> Path:
    return Path(f"{path}{CHECKSUM_SUFFIX}")


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex), read in 8 MB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(8 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_checksum(path: str | os.PathLike, digest: str | None = None) -> None:
    """Write ``<path>.sha256`` (atomically) for the file at ``path`` (or for ``digest``)."""
    atomic_write_text(checksum_path(path), f"{digest or file_digest(path)}  {Path(path).name}\n")


def verify_checksum(path: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` when ``path`` has a sidecar checksum its bytes do not match."""
    sidecar = checksum_path(path)
    if not sidecar.is_file():
        return
    expected = sidecar.read_text().split()[0] if sidecar.read_text().strip() else ""
    if file_digest(path) != expected:
        raise CheckpointError(f"Checkpoint {path} does not match its checksum ({sidecar.name}): it is corrupted "
                              "(a flipped bit or a partial copy).")


def read_checkpoint(path: str | os.PathLike, mmap: bool = True, verify: bool = True) -> dict[str, Any]:
    """The checkpoint's dict (``state_dict``, ``hyper_parameters``, ``global_step``, ...) on the CPU.

    ``mmap=True`` maps tensors from the file instead of reading them all (cheap when only metadata is
    needed); ``verify`` checks the sidecar checksum when there is one. Raises :class:`CheckpointError`
    when the file is missing or damaged.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist.")
    if verify:
        verify_checksum(path)
    try:
        state = torch.load(path, map_location="cpu", mmap=mmap, weights_only=False)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(f"Checkpoint {path} cannot be read ({type(err).__name__}: {str(err)[:200]}); "
                              "it is truncated or corrupted.") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a training checkpoint (it holds a {type(state).__name__}, not a dict).")
    return state
