"""Fit a run to the machine it starts on: data-loader workers capped by the cores, and a warning when
a GPU recipe is asked for on a CPU.

Each DataLoader worker renders with its own EGL context and holds its own shuffle window (at 224 px
about 150 MB per window of 2 blocks), so 8 workers on 2 cores only add memory and contention: the
``paper`` profile's 8 workers on a 2-core laptop grew to about 12 GB without rendering any faster.
"""

from __future__ import annotations

import os

from omegaconf import DictConfig

from procedural_perception.training.launch import launcher_overrides


def available_cores() -> int:
    """Cores this process may run on (the scheduler's affinity mask, e.g. SLURM's --cpus-per-task)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def ranks_per_node(cfg: DictConfig) -> int:
    """Training processes on this machine: the launcher's, else ``trainer.devices`` when it is a number."""
    devices = launcher_overrides().get("devices", cfg.trainer.get("devices", 1))
    if isinstance(devices, int) and devices > 0:
        return devices
    if isinstance(devices, (list, tuple)):
        return len(devices)
    return 1


def fit_to_machine(cfg: DictConfig, cuda: bool) -> list[str]:
    """Cap ``data.num_workers`` in place at the cores per rank; return warning lines (empty when nothing changed)."""
    notes = []
    workers = cfg.get("data", {}).get("num_workers")
    per_rank = max(1, available_cores() // ranks_per_node(cfg))
    if isinstance(workers, int) and workers > per_rank:
        cfg.data.num_workers = per_rank
        notes.append(f"data.num_workers={workers} is more than the {per_rank} core(s) each training process has here: "
                     f"using {per_rank} (each worker renders with its own context and buffers).")
    if cfg.get("choices", {}).get("profile") == "paper" and not cuda:
        notes.append("profile=paper on a machine without a GPU: ViT-S/16 with 2 x 224 + 8 x 96 px crops and 1.3M "
                     "samples per epoch runs at a few images per second on a CPU, so one epoch takes days. Use "
                     "profile=cpu (the default without a GPU) to see the pipeline learn in minutes.")
    return notes
