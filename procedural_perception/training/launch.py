"""Trainer arguments for however the training processes were launched: one process, `fabric run`,
`torchrun` or SLURM's `srun`; plus the pieces that let a long run survive pre-emption and failed ranks.

Lightning detects the launcher itself (``TorchElasticEnvironment`` under torchrun and `fabric run`,
``SLURMEnvironment`` under srun, ``LightningEnvironment`` otherwise) and reads ranks, the main address
and port from it. What it does not read is the *shape* of the job: ``Trainer(devices=..., num_nodes=...)``
must equal the launch (processes per node x nodes = world size) or Lightning stops with a mismatch error.
`fabric run` states the shape in ``LT_*`` variables (``LT_DEVICES``, ``LT_NUM_NODES``, ``LT_ACCELERATOR``,
``LT_STRATEGY``, ``LT_PRECISION``; see ``lightning/fabric/cli.py``) and then starts torchrun, which sets
``WORLD_SIZE`` / ``LOCAL_WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK`` / ``GROUP_RANK``; srun sets
``SLURM_NNODES`` / ``SLURM_NTASKS_PER_NODE``. :func:`launcher_overrides` maps these onto Trainer
arguments, so the same ``python -m procedural_perception.cli.train ...`` works under every launcher unchanged.

:func:`trainer_arguments` is what ``procedural_perception/cli/train.py`` passes to ``L.Trainer``: the configured arguments,
the launcher's shape, a DDP strategy whose collectives time out (a dead or hung rank makes the others
exit instead of waiting forever), atomic checkpoint files, and the callbacks that make a resumed run
continue exactly (per-step seeds, pre-emption checkpoint, a clear message when another rank fails).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DDPStrategy
from rich.console import Console

from procedural_perception.training.checkpoint_io import AtomicCheckpointIO

console = Console(stderr=True)

# How long a rank waits in a collective (gradient all-reduce, barrier, broadcast) for the others.
# A rank that died or hangs makes the others fail after at most this long, instead of hanging until
# the scheduler's time limit. Long enough for the slowest legitimate wait: rank 0 writing a large
# checkpoint or a first-time shader compile while the other ranks sit at a barrier. (Lightning's and
# torch's default is 30 minutes.) Configurable per run with trainer.ddp_timeout_s.
DDP_TIMEOUT_S = 600.0

# Strategy names that mean plain DDP, with the DDPStrategy arguments they stand for.
_DDP_NAMES = {
    "ddp": {},
    "ddp_find_unused_parameters_true": {"find_unused_parameters": True},
    "ddp_spawn": {"start_method": "spawn"},
    "ddp_fork": {"start_method": "fork"},
    "ddp_notebook": {"start_method": "fork"},
}


def launcher_overrides(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Trainer arguments the launcher fixed: ``devices`` and ``num_nodes`` (plus accelerator, strategy
    and precision when `fabric run` was given them). Empty for a plain one-process start."""
    env = os.environ if env is None else env
    out: dict[str, Any] = {}
    if env.get("LT_CLI_USED") == "1":  # fabric run
        for var, key in (("LT_ACCELERATOR", "accelerator"), ("LT_STRATEGY", "strategy"), ("LT_DEVICES", "devices"),
                         ("LT_NUM_NODES", "num_nodes"), ("LT_PRECISION", "precision")):
            if env.get(var) not in (None, "", "None"):
                out[key] = _number_or_text(env[var])
    elif "TORCHELASTIC_RUN_ID" in env and "LOCAL_WORLD_SIZE" in env:  # torchrun
        per_node = int(env["LOCAL_WORLD_SIZE"])
        out = {"devices": per_node, "num_nodes": max(1, int(env["WORLD_SIZE"]) // per_node)}
    elif "SLURM_NTASKS" in env and env.get("SLURM_JOB_NAME") not in ("bash", "interactive"):  # srun
        if env.get("SLURM_NTASKS_PER_NODE", "").isdigit():
            out["devices"] = int(env["SLURM_NTASKS_PER_NODE"])
        if env.get("SLURM_NNODES", "").isdigit():
            out["num_nodes"] = int(env["SLURM_NNODES"])
    return out


def launcher_name(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    if env.get("LT_CLI_USED") == "1":
        return "fabric run"
    if "TORCHELASTIC_RUN_ID" in env:
        return "torchrun"
    if "SLURM_NTASKS" in env:
        return "SLURM"
    return "single process"


def trainer_arguments(
    args: dict[str, Any], callbacks: list[Callback] | None = None, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """``L.Trainer(**trainer_arguments(args, callbacks))``: see the module docstring.

    ``args`` are the configured Trainer arguments; an optional ``ddp_timeout_s`` key (seconds) replaces
    :data:`DDP_TIMEOUT_S`. The launcher's shape wins over the configuration (a note says so when they
    differ). ``callbacks`` get the resilience callbacks they lack appended.
    """
    args = dict(args)
    timeout_s = float(args.pop("ddp_timeout_s", DDP_TIMEOUT_S))
    overrides = launcher_overrides(env)
    changed = {k: (args[k], v) for k, v in overrides.items() if k in args and args[k] != v}
    if changed and global_rank(env) == 0:
        notes = ", ".join(f"{k}={new} (configured {old})" for k, (old, new) in changed.items())
        console.print(f"[cyan]Launched by {launcher_name(env)}:[/cyan] {notes}")
    args.update(overrides)
    world = _as_count(args.get("devices", 1)) * int(args.get("num_nodes", 1))
    if args.get("strategy", "auto") == "auto" and world > 1:
        args["strategy"] = "ddp"
    if isinstance(args.get("strategy"), str) and args["strategy"] in _DDP_NAMES:
        args["strategy"] = DDPStrategy(timeout=timedelta(seconds=timeout_s), **_DDP_NAMES[args["strategy"]])
    args["plugins"] = [*_as_list(args.get("plugins")), AtomicCheckpointIO()]
    args["callbacks"] = resilience_callbacks(list(callbacks or []))
    return args


def resilience_callbacks(callbacks: list[Callback]) -> list[Callback]:
    """``callbacks`` plus those it lacks of: per-step seeding, pre-emption checkpoint, rank-failure handling,
    a warning for a straggling rank."""
    from procedural_perception.training.preemption import PreemptionCheckpoint
    from procedural_perception.training.rank_failure import RankFailureHandler
    from procedural_perception.training.step_seed import StepSeed
    from procedural_perception.training.straggler import StragglerWarning

    out = list(callbacks)
    for kind in (StepSeed, PreemptionCheckpoint, RankFailureHandler, StragglerWarning):
        if not any(isinstance(c, kind) for c in out):
            out.append(kind())
    return out


def _number_or_text(value: str) -> Any:
    return int(value) if value.lstrip("-").isdigit() else value


def _as_count(devices: Any) -> int:
    """Processes per node that ``devices`` asks for (``auto`` / -1 count as 1 here: Lightning resolves them)."""
    if isinstance(devices, int):
        return max(devices, 1)
    if isinstance(devices, (list, tuple)):
        return len(devices)
    text = str(devices).strip()
    if "," in text:
        return len([d for d in text.split(",") if d.strip()])
    return int(text) if text.isdigit() and int(text) > 0 else 1


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def global_rank(env: Mapping[str, str] | None = None) -> int:
    """This process's rank from the launcher's environment (0 without a launcher), before any process group exists."""
    env = os.environ if env is None else env
    for var in ("RANK", "SLURM_PROCID"):
        if var in env:
            return int(env[var])
    return 0
