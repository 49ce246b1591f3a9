"""Train: ``python -m procedural_perception.cli.train data=kml_mixup model=dino key=value ...`` (``make train``).

Composes the configuration (configs/train.yaml + groups + profile + overrides), builds the model,
the data module (given the model's multi-crop transform) and the enabled callbacks, and fits with a
TensorBoard logger under ``runs/<run_name>``. Starting the same run again resumes from its
``checkpoints/last.ckpt``.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (`fabric run procedural_perception/cli/train.py`): find the project's packages
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import lightning as L  # noqa: E402
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerStatus
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from lightning_modules.dino import NonFiniteLossError
from procedural_perception.core.config import CONFIG_DIR, ConfigError, compose, instantiate
from procedural_perception.core.run_config import write_run_config
from procedural_perception.training.data_wait import DataWait
from procedural_perception.training.launch import global_rank, trainer_arguments
from procedural_perception.training.precision import resolve_precision
from procedural_perception.training.progress import progress_bar
from procedural_perception.training.resources import fit_to_machine
from procedural_perception.training.resume import changed_settings, resumable_checkpoint, resume_mismatch

console = Console(stderr=True, soft_wrap=True)  # a long path or message stays on one line in a log file


def run_dir(cfg: DictConfig) -> Path:
    return Path(cfg.runs_dir) / cfg.run_name


def build_callbacks(cfg: DictConfig) -> list[Callback]:
    """The enabled callback nodes, plus a last-checkpoint, a progress bar and the data-wait monitor when the
    chosen callbacks have none (a ``data_wait`` entry switched off stays off)."""
    callbacks = []
    for name, node in cfg.callbacks.items():
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise ConfigError(f"callbacks.{name} must be a mapping with _target_ (and enabled: true|false).")
        if node.get("enabled", True):
            callbacks.append(instantiate(_without_enabled(node)))
    if not any(isinstance(c, ModelCheckpoint) for c in callbacks):
        callbacks.append(ModelCheckpoint(dirpath=run_dir(cfg) / "checkpoints", save_last=True))
    if not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(progress_bar())
    if "data_wait" not in cfg.callbacks and not any(isinstance(c, DataWait) for c in callbacks):
        callbacks.append(DataWait())
    return callbacks


def _without_enabled(node: DictConfig) -> dict[str, Any]:
    params = OmegaConf.to_container(node, resolve=True)
    params.pop("enabled", None)
    return params


def build_trainer(cfg: DictConfig, callbacks: list[Callback]) -> L.Trainer:
    args = OmegaConf.to_container(cfg.trainer, resolve=True)
    check_trainer_arguments(args)
    args["precision"] = resolve_precision(args.get("precision", "auto"))
    logger = TensorBoardLogger(save_dir=cfg.runs_dir, name=cfg.run_name, version="", default_hp_metric=False)
    logger.log_hyperparams(_flat(OmegaConf.to_container(cfg, resolve=True)))
    # The launcher's shape (fabric run / torchrun / SLURM), DDP timeout, atomic checkpoints, resume callbacks.
    return L.Trainer(default_root_dir=str(run_dir(cfg)), logger=logger, **trainer_arguments(args, callbacks))


# Keys of the trainer group that are not lightning.Trainer arguments (read by training/launch.py).
TRAINER_EXTRAS = ("ddp_timeout_s",)


def check_trainer_arguments(args: dict[str, Any]) -> None:
    """Every key of the trainer group must be a ``lightning.Trainer`` argument (``+trainer.x=...`` too)."""
    import inspect

    valid = [*inspect.signature(L.Trainer.__init__).parameters][1:] + list(TRAINER_EXTRAS)
    for key in args:
        if key not in valid:
            hint = difflib.get_close_matches(key, valid, n=1)
            raise ConfigError(f"trainer.{key} is not an argument of lightning.Trainer."
                              + (f" Did you mean '{hint[0]}'?" if hint else "")
                              + f" Valid keys under 'trainer': {', '.join(sorted(valid))}.")


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value) if isinstance(value, (list, dict)) or value is None else value
    return out


def main(argv: Sequence[str] | None = None, config_dir: Path = CONFIG_DIR) -> int:
    """Train with the overrides ``argv`` (``key=value``); returns the exit status (2: bad configuration)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        cfg = compose(argv, config_dir=config_dir)
        for note in fit_to_machine(cfg, torch.cuda.is_available()):
            console.print(f"[bold yellow]Note:[/bold yellow] {note}")
        L.seed_everything(cfg.seed, workers=True)
        model = instantiate(cfg.model)
        transform = model.train_transform() if hasattr(model, "train_transform") else None
        datamodule = instantiate(cfg.data, transform=transform) if transform is not None else instantiate(cfg.data)
        callbacks = build_callbacks(cfg)
        trainer = build_trainer(cfg, callbacks)
    except (ConfigError, ValueError, FileNotFoundError) as err:
        # Bad configuration or input found before training: a message, not a traceback.
        console.print(f"[bold red]Configuration error:[/bold red] {err}")
        return 2
    last = run_dir(cfg) / "checkpoints" / "last.ckpt"
    ckpt_path = None
    resume, skipped = resumable_checkpoint(last.parent, set_aside=global_rank() == 0) if last.parent.is_dir() else (None, [])
    for note in skipped:
        console.print(f"[bold yellow]Skipping a damaged checkpoint:[/bold yellow] {note}")
    if resume is None and skipped:
        console.print("[bold yellow]No checkpoint of this run loads: training starts again from step 0.[/bold yellow]")
    if resume is not None:
        mismatch = resume_mismatch(resume, model)
        if mismatch:
            console.print(f"[bold red]Cannot resume:[/bold red] {mismatch}\nStart a new run (run_name=<another name>), "
                          f"remove {run_dir(cfg)}, or give the checkpoint's values on the command line.")
            return 2
        changes = changed_settings(run_dir(cfg), cfg)
        if changes:
            console.print(f"[yellow]Settings changed since this run started[/yellow] ({len(changes)}): "
                          + "; ".join(changes[:12]) + (" ..." if len(changes) > 12 else "")
                          + "\nResuming with the new settings; use run_name=<another name> for a separate run.")
        ckpt_path = str(resume)
        console.print(f"[bold green]Resuming[/bold green] run '{cfg.run_name}' from {resume}")
    else:
        console.print(f"Starting run '{cfg.run_name}' in {run_dir(cfg)} (TensorBoard: make tensorboard)")
    if global_rank() == 0:
        write_run_config(run_dir(cfg), cfg)  # the resolved configuration, beside the checkpoints
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    except NonFiniteLossError as err:
        console.print(f"[bold red]Training stopped:[/bold red] {err}")
        return 1
    if trainer.state.status == TrainerStatus.FINISHED and not trainer.interrupted:
        # ModelCheckpoint writes last.ckpt only at its save steps; keep the final state too, so a
        # finished run started again resumes at its end instead of repeating the last steps.
        trainer.save_checkpoint(last)
    console.print(f"Done: checkpoints in {run_dir(cfg) / 'checkpoints'}, logs in {run_dir(cfg)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
