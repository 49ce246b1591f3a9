"""Which encoder made a memory's embeddings, exactly: resolved checkpoint path, a content hash of the
weights, and the evaluation image size.

Embeddings of different weights are not comparable, and nothing in the vectors says so: a memory
built with one ``last.ckpt`` and queried after a resumed run rewrote it would silently answer
nonsense. A memory therefore records :func:`encoder_identity` when it is built, and every later
``build``/``classify``/``audit`` recomputes it from the encoder it loads and refuses a mismatch
(:func:`check_encoder`) with a message naming both. The path is resolved so the memory works from
any working directory.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch


class EncoderMismatchError(ValueError):
    """The encoder at hand is not the one whose embeddings a memory holds."""


def weights_sha256(module: torch.nn.Module) -> str:
    """SHA-256 (hex) over every parameter and buffer: names, dtypes, shapes and bytes, in name order.

    Equal for the same weights wherever they were loaded from; changes when any value changes.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        value = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def resolved_spec(spec: str) -> str:
    """A checkpoint path made absolute (and symlinks resolved); a reference name unchanged."""
    path = Path(spec)
    return str(path.resolve()) if path.suffix == ".ckpt" or path.exists() else spec


def encoder_identity(spec: str, module: torch.nn.Module, image_size: int, resize: int | None) -> dict[str, Any]:
    """The facts a memory stores about its encoder (kept in its ``info``)."""
    return {"encoder": resolved_spec(spec), "encoder_sha256": weights_sha256(module), "image_size": image_size,
            "resize": resize}


def check_encoder(stored: dict[str, Any], current: dict[str, Any], memory: str | Path) -> None:
    """Raise :class:`EncoderMismatchError` when ``current`` is not the encoder ``stored`` records.

    Memories built before hashes were recorded (no ``encoder_sha256``) are compared by name only.
    """
    same_weights = stored.get("encoder_sha256") in (None, current["encoder_sha256"])
    same_name = stored.get("encoder_sha256") is not None or stored.get("encoder") in (None, current["encoder"])
    same_size = (stored.get("image_size", current["image_size"]), stored.get("resize", current["resize"])) == (
        current["image_size"], current["resize"])
    if same_weights and same_name and same_size:
        return
    raise EncoderMismatchError(
        f"{memory} holds embeddings of encoder {stored.get('encoder')} (weights sha256 "
        f"{str(stored.get('encoder_sha256'))[:16]}, image size {stored.get('image_size')}, resize {stored.get('resize')}), "
        f"but the encoder given is {current['encoder']} (weights sha256 {current['encoder_sha256'][:16]}, image size "
        f"{current['image_size']}, resize {current['resize']}). Embeddings of different weights cannot be mixed: "
        "use the memory's own encoder (a checkpoint rewritten since, e.g. by a resumed run, no longer is), or build "
        "a new memory with `make memory ARGS=\"build --encoder <checkpoint> --data ... --out <new folder>\"`.")
