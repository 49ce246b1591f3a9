"""The one reader for raw checkpoint files (Lightning ``.ckpt``: a torch pickle of a dict).

Resume checks, the random-initialisation twin of a checkpoint, the experiment's "is this run done"
check and exports all read checkpoints through :func:`read_checkpoint`, so a damaged file gives the
same clear error everywhere (:class:`CheckpointError`, naming the file) instead of an unpickling
traceback. Loading the model itself goes through Lightning (``DINO.load_from_checkpoint``).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch


class CheckpointError(OSError):
    """A checkpoint file that cannot be read (missing, truncated, corrupted or not a checkpoint)."""


def read_checkpoint(path: str | os.PathLike, mmap: bool = True) -> dict[str, Any]:
    """The checkpoint's dict (``state_dict``, ``hyper_parameters``, ``global_step``, ...) on the CPU.

    ``mmap=True`` maps tensors from the file instead of reading them all (cheap when only metadata is
    needed). Raises :class:`CheckpointError` when the file is missing or damaged.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist.")
    try:
        state = torch.load(path, map_location="cpu", mmap=mmap, weights_only=False)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(f"Checkpoint {path} cannot be read ({type(err).__name__}: {str(err)[:200]}); "
                              "it is truncated or corrupted.") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a training checkpoint (it holds a {type(state).__name__}, not a dict).")
    return state
