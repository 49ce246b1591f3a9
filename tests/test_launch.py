"""Launch paths and per-rank devices: the Trainer arguments each launcher's environment implies, the DDP
timeout and atomic checkpoints that come with them, and each rank's EGL device and faiss GPU (with the
CPU fallbacks used on this machine)."""

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from lightning.pytorch.strategies import DDPStrategy

from procedural_perception.training.checkpoint_io import AtomicCheckpointIO
from procedural_perception.training.launch import DDP_TIMEOUT_S, launcher_overrides, trainer_arguments
from procedural_perception.training.preemption import PreemptionCheckpoint
from procedural_perception.training.rank_failure import RankFailureHandler, is_peer_failure
from procedural_perception.training.step_seed import StepSeed, step_seed
from procedural_perception.training.straggler import StragglerWarning

ROOT = Path(__file__).resolve().parents[1]

# What `fabric run --accelerator cpu --devices 2 --num-nodes 3 --node-rank 1 ...` and the torchrun it
# starts put in each worker's environment (lightning/fabric/cli.py, torch.distributed.run).
FABRIC_ENV = {"LT_CLI_USED": "1", "LT_ACCELERATOR": "cpu", "LT_DEVICES": "2", "LT_NUM_NODES": "3",
              "TORCHELASTIC_RUN_ID": "x", "WORLD_SIZE": "6", "LOCAL_WORLD_SIZE": "2", "RANK": "3", "LOCAL_RANK": "1",
              "GROUP_RANK": "1", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}
TORCHRUN_ENV = {k: v for k, v in FABRIC_ENV.items() if not k.startswith("LT_")}
SLURM_ENV = {"SLURM_NTASKS": "8", "SLURM_NTASKS_PER_NODE": "4", "SLURM_NNODES": "2", "SLURM_JOB_NAME": "train",
             "SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NODELIST": "gpu[01-02]"}


def test_launcher_environments_map_onto_trainer_shape():
    assert launcher_overrides(FABRIC_ENV) == {"accelerator": "cpu", "devices": 2, "num_nodes": 3}
    assert launcher_overrides(TORCHRUN_ENV) == {"devices": 2, "num_nodes": 3}
    assert launcher_overrides(SLURM_ENV) == {"devices": 4, "num_nodes": 2}
    assert launcher_overrides({**SLURM_ENV, "SLURM_JOB_NAME": "interactive"}) == {}  # salloc shell: not a launch
    assert launcher_overrides({}) == {}


def test_trainer_arguments_add_ddp_timeout_atomic_checkpoints_and_resume_callbacks(capsys):
    args = trainer_arguments({"devices": 1, "max_steps": 5, "ddp_timeout_s": 42}, [StepSeed(seed=1)],
                             env={**FABRIC_ENV, "RANK": "0"})  # rank 0 reports the change
    assert (args["devices"], args["num_nodes"], args["accelerator"], args["max_steps"]) == (2, 3, "cpu", 5)
    assert isinstance(args["strategy"], DDPStrategy) and args["strategy"]._timeout == timedelta(seconds=42)
    assert [type(p) for p in args["plugins"]] == [AtomicCheckpointIO]
    assert [type(c) for c in args["callbacks"]] == [StepSeed, PreemptionCheckpoint, RankFailureHandler,
                                                     StragglerWarning]
    assert "devices=2 (configured 1)" in " ".join(capsys.readouterr().err.split())
    single = trainer_arguments({"devices": 1}, env={})
    assert "strategy" not in single and "num_nodes" not in single  # one process: no DDP
    ddp = trainer_arguments({"devices": 2, "strategy": "ddp_find_unused_parameters_true"}, env={})
    assert ddp["strategy"]._timeout == timedelta(seconds=DDP_TIMEOUT_S)
    assert ddp["strategy"]._ddp_kwargs == {"find_unused_parameters": True}


def test_peer_failure_detection_and_step_seeds():
    assert is_peer_failure(RuntimeError("[gloo/transport/tcp/pair.cc:545] Connection reset by peer"))
    assert is_peer_failure(RuntimeError("Timed out waiting 10000ms for recv operation to complete"))
    assert not is_peer_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_peer_failure(ValueError("Connection reset"))
    seeds = {step_seed(0, e, b, r) for e in range(3) for b in range(50) for r in range(4)}
    assert len(seeds) == 600 and step_seed(0, 1, 2, 3) == step_seed(0, 1, 2, 3)


@pytest.mark.parametrize("local_rank, visible, expected", [
    (0, "", 0), (1, "", 1), (3, "", 1),          # rank r takes device r (wrapping when fewer devices)
    (1, "2,3", 1), (0, "3,2", 1),                # CUDA_VISIBLE_DEVICES maps the rank to the physical GPU
])
def test_egl_device_of_each_local_rank(monkeypatch, local_rank, visible, expected):
    from datamodules.procedural.egl import _hardware_index

    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert _hardware_index([2, 3]) == expected  # two hardware EGL devices with CUDA ordinals 2 and 3


@pytest.mark.egl
def test_cpu_fallback_of_a_non_zero_local_rank_renders_on_llvmpipe():
    """Local rank 3 on a machine without GPUs: Mesa's software device, for EGL and faiss alike."""
    code = (
        "from datamodules.procedural import egl\n"
        "from procedural_perception.visual_memory.index import FlatIndex\n"
        "ctx = egl.current_context()\n"
        "print(ctx.device, '|', FlatIndex(8, 'auto').use_gpu)\n"
    )
    env = {**os.environ, "LOCAL_RANK": "3", "PYOPENGL_PLATFORM": "egl", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    device, use_gpu = out.stdout.strip().splitlines()[-1].split(" | ")
    assert "llvmpipe" in device or "surfaceless" in device
    assert use_gpu == "False"
