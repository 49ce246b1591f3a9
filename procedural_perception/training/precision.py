"""The numeric precision a run trains in when the configuration says ``auto``."""

from __future__ import annotations

from typing import Any

import torch


def resolve_precision(precision: Any) -> Any:
    """``auto``: bf16 mixed precision on a GPU that supports it (16-bit mixed on older GPUs), fp32 on CPU."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"
