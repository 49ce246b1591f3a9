"""Before a run resumes: can its checkpoint be loaded into the model, and what changed since it started?

A run started again after its configuration changed would otherwise fail deep inside
``load_state_dict`` (another model shape) or silently continue with other settings (another
``trainer.max_steps``, another data set). :func:`resume_mismatch` names the changed hyper-parameters
when the shapes differ; :func:`changed_settings` lists every setting that differs from the run's
saved ``config.yaml``, which the training command prints before it continues.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from omegaconf import DictConfig, OmegaConf

from procedural_perception.core.checkpoints import read_checkpoint
from procedural_perception.core.run_config import config_changes, read_run_config

# Settings that name the run rather than configure it (a different value cannot reach the same folder).
_IGNORED = ("choices", "run_name", "runs_dir")


def resume_mismatch(checkpoint: Path, model: L.LightningModule) -> str | None:
    """Why ``model`` cannot resume from ``checkpoint`` (parameter shapes differ), or None when it can."""
    state = read_checkpoint(checkpoint)
    saved = {k: tuple(v.shape) for k, v in state.get("state_dict", {}).items()}
    current = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    differing = sorted(k for k in saved.keys() | current.keys() if saved.get(k) != current.get(k))
    if not differing:
        return None
    old, new = dict(state.get("hyper_parameters", {})), dict(model.hparams)
    changed = [f"model.{k}: {old.get(k)!r} in the checkpoint, {new.get(k)!r} now"
               for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]
    return (f"{checkpoint} holds a model of another shape ({len(differing)} tensors differ, e.g. {differing[0]}). "
            + ("Changed: " + "; ".join(changed) + "." if changed else ""))


def changed_settings(run_dir: Path, cfg: DictConfig) -> list[str]:
    """``key: old -> new`` for every setting that differs from the run's saved ``config.yaml`` (none saved: [])."""
    saved = read_run_config(run_dir)
    if saved is None:
        return []
    old = {k: v for k, v in OmegaConf.to_container(saved, resolve=True).items() if k not in _IGNORED}
    new = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in _IGNORED}
    return config_changes(old, new)
