"""Before a run resumes: can its checkpoint be loaded into the model, and what changed since it started?

A run started again after its configuration changed would otherwise fail deep inside
``load_state_dict`` (another model shape) or silently continue with other settings (another
``trainer.max_steps``, another data set). :func:`resume_mismatch` names the changed hyper-parameters
when the shapes differ; :func:`changed_settings` lists every setting that differs from the run's
saved ``config.yaml``, which the training command prints before it continues.

:func:`resumable_checkpoint` picks what to resume from: ``last.ckpt`` when it loads, else the newest
kept checkpoint that does (a truncated or bit-flipped file is set aside as ``<name>.corrupt`` and named).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from omegaconf import DictConfig, OmegaConf

from procedural_perception.core.checkpoints import CheckpointError, checksum_path, read_checkpoint
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


def resumable_checkpoint(checkpoint_dir: Path, set_aside: bool = True) -> tuple[Path | None, list[str]]:
    """The checkpoint to resume from and one line per checkpoint that had to be skipped.

    Tries ``last.ckpt``, then the kept checkpoints newest first (by the step they hold). A file that
    cannot be read, or does not match its checksum, is renamed to ``<name>.corrupt`` (kept for
    inspection, never loaded again; only where ``set_aside``, i.e. on one rank) and the next one is
    tried. ``None`` when nothing loads.
    """
    checkpoint_dir = Path(checkpoint_dir)
    last = checkpoint_dir / "last.ckpt"
    kept = sorted((p for p in checkpoint_dir.glob("*.ckpt") if p != last), key=lambda p: p.stat().st_mtime,
                  reverse=True)
    skipped: list[str] = []
    for path in ([last] if last.exists() else []) + kept:
        try:
            state = read_checkpoint(path)
            if "state_dict" not in state:
                raise CheckpointError(f"{path} holds no state_dict")
        except CheckpointError as err:
            if set_aside and path.exists():
                aside = path.with_name(path.name + ".corrupt")
                path.replace(aside)
                checksum_path(path).unlink(missing_ok=True)
                err = f"{err} It was moved to {aside.name}."
            skipped.append(str(err))
            continue
        return path, skipped
    return None, skipped
