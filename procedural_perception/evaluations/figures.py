"""Evaluation pictures as files: a ``[3, H, W]`` float image in [0, 1] written as PNG, atomically."""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from procedural_perception.core.atomic import atomic_path


def save_figure(image: torch.Tensor, path: str | os.PathLike) -> None:
    """Write ``image`` (float ``[3, H, W]`` in [0, 1]) to ``path`` as PNG; a crash leaves no half file."""
    array = (image.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
