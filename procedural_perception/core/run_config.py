"""A run folder explains itself: the resolved configuration it ran with, as ``<run>/config.yaml``.

Training writes it (atomically) at start; a resumed run compares it with the new configuration and
says what changed; ``make eval`` reads it beside a checkpoint (``<run>/checkpoints/*.ckpt``) so that
its defaults are the run's own evaluation settings and a number logged in training is the number it
prints.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from procedural_perception.core.atomic import atomic_write_text

RUN_CONFIG = "config.yaml"


def write_run_config(run_dir: str | os.PathLike, cfg: DictConfig) -> Path:
    """Write the resolved ``cfg`` to ``<run_dir>/config.yaml``; returns the path."""
    path = Path(run_dir) / RUN_CONFIG
    atomic_write_text(path, OmegaConf.to_yaml(cfg, resolve=True))
    return path


def read_run_config(run_dir: str | os.PathLike) -> DictConfig | None:
    """The run's saved configuration, or None when the folder has none."""
    path = Path(run_dir) / RUN_CONFIG
    return OmegaConf.load(path) if path.is_file() else None


def run_dir_of(checkpoint: str | os.PathLike) -> Path:
    """The run folder of a checkpoint in the standard layout ``<run>/checkpoints/<name>.ckpt``."""
    return Path(checkpoint).resolve().parent.parent


def config_changes(old: Any, new: Any, prefix: str = "") -> list[str]:
    """``key: old -> new`` lines for every leaf that differs between two plain config trees."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            out += config_changes(old.get(key, "<absent>"), new.get(key, "<absent>"), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]
