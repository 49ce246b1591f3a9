"""Exact resume of ``python -m procedural_perception.cli.train``: a run killed with SIGKILL mid-epoch and started again, then
pre-empted with SIGTERM and started again, takes exactly the steps of an uninterrupted run (same stream
position, random draws, schedules and optimizer state: every loss bit-identical on the CPU in
deterministic mode), and SIGTERM writes ``last.ckpt`` before the process exits with status 143."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fault_injection import read_losses
from tiny_training import launch_two_ranks

from procedural_perception.training.preemption import PREEMPTED_EXIT_CODE

ROOT = Path(__file__).resolve().parents[1]
STEPS = 9  # 1.5 epochs: the chain below crosses an epoch boundary after its first resume

# A ViT and a procedural stream small enough for ~1 s per step on a CPU; an epoch is 6 steps of 4 images.
TINY = [
    "data=kml_mixup", "model=dino", "profile=cpu", "seed=3",
    "trainer.accelerator=cpu", "trainer.devices=1", f"trainer.max_steps={STEPS}", "trainer.max_epochs=-1",
    "trainer.deterministic=true", "trainer.benchmark=false", "trainer.log_every_n_steps=1",
    "model.embed_dim=32", "model.depth=1", "model.num_heads=2", "model.patch_size=8", "model.out_dim=64",
    "model.head_hidden_dim=32", "model.head_bottleneck_dim=16", "model.global_crop_size=32",
    "model.local_crop_size=16", "model.n_local_crops=2", "model.grid_images=1",
    "data.image_size=32", "data.batch_size=4", "data.num_workers=0", "data.samples_per_epoch=24",
    "data.block_size=8", "data.programs_per_block=2", "data.shuffle_blocks=2", "data.warm_programs=false",
    "callbacks.checkpoint.every_n_train_steps=2", "callbacks.progress_bar.enabled=false",
]


def start(runs_dir: Path, losses: Path, *extra: str) -> subprocess.Popen:
    args = [*TINY, f"runs_dir={runs_dir}",
            f"+callbacks.recorder={{_target_: fault_injection.LossRecorder, path: '{losses}'}}", *extra]
    env = {"PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}", "PYOPENGL_PLATFORM": "egl", "PATH": "/usr/bin:/bin"}
    return subprocess.Popen([sys.executable, "-m", "procedural_perception.cli.train", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    _, stderr = process.communicate(timeout=400)
    return subprocess.CompletedProcess(process.args, process.returncode, "", stderr)


def train(runs_dir: Path, losses: Path, *extra: str) -> subprocess.CompletedProcess:
    return finish(start(runs_dir, losses, *extra))


def signal_at(step: int, name: str) -> str:
    return f"+callbacks.fault={{_target_: fault_injection.SignalAtStep, step: {step}, signal: {name}}}"


@pytest.mark.slow
@pytest.mark.egl
def test_sigkill_and_sigterm_then_resume_give_the_uninterrupted_losses(tmp_path):
    uninterrupted = start(tmp_path / "full", tmp_path / "full.txt")  # runs beside the interrupted chain
    runs, log = tmp_path / "interrupted", tmp_path / "interrupted.txt"
    killed = train(runs, log, signal_at(5, "SIGKILL"))  # mid-epoch; last checkpoint after step 4
    assert killed.returncode == -9, killed.stderr[-3000:]
    ckpt = next(runs.glob("*/checkpoints/last.ckpt"))
    assert torch.load(ckpt, weights_only=False)["global_step"] == 4

    preempted = train(runs, log, signal_at(7, "SIGTERM"))  # resumes at 4; SIGTERM after step 7 (no periodic ckpt)
    assert preempted.returncode == PREEMPTED_EXIT_CODE, preempted.stderr[-3000:]
    assert "Resuming" in preempted.stderr
    state = torch.load(ckpt, weights_only=False)
    assert state["global_step"] == 7  # written by the pre-emption callback, not by the periodic checkpoint
    assert {"optimizer_states", "loops", "ShaderDataModule"} <= set(state)  # a full training state

    finished = train(runs, log)
    assert finished.returncode == 0, finished.stderr[-3000:]
    full = finish(uninterrupted)
    assert full.returncode == 0, full.stderr[-3000:]
    reference = dict(read_losses(tmp_path / "full.txt"))
    assert sorted(reference) == list(range(STEPS))
    steps = read_losses(log)
    # Steps 0-4 from the first run, 4-6 replayed/continued after the SIGKILL, 7-8 after the SIGTERM.
    assert [s for s, _ in steps] == [0, 1, 2, 3, 4, 4, 5, 6, 7, 8]
    for step, loss in steps:
        assert loss == reference[step], f"step {step}: {loss!r} after resume, {reference[step]!r} uninterrupted"


@pytest.mark.slow
@pytest.mark.ddp
def test_sigterm_to_every_rank_writes_last_ckpt_and_exits_143(tmp_path):
    """Pre-emption of a 2-process run: all ranks stop after the same step, rank 0 writes last.ckpt."""
    ranks = launch_two_ranks(tmp_path / "run", "--max-steps", "50", "--fail", "sigterm", "--fail-step", "3")
    try:
        outputs = [p.communicate(timeout=240)[0] for p in ranks]
    finally:
        for p in ranks:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in ranks] == [PREEMPTED_EXIT_CODE] * 2, outputs[0][-3000:]
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["global_step"] == 4  # the step in flight when SIGTERM came was finished, then saved
    assert "SIGTERM received" in " ".join(outputs[0].split())


@pytest.mark.slow
@pytest.mark.parametrize("signals, reason", [(1, "no training step finished within 3 s of SIGTERM"),
                                             (2, "a second SIGTERM")])
def test_sigterm_waits_for_the_step_in_flight_only_so_long(tmp_path, signals, reason):
    """A step that never finishes after SIGTERM: the process ends after grace_s (or at a second SIGTERM)
    with status 143 and says which checkpoint is intact, instead of waiting for the scheduler's SIGKILL."""
    import time

    runs = tmp_path / "runs"
    args = [*TINY, f"runs_dir={runs}", "+callbacks.preemption={_target_: procedural_perception.training.preemption."
            "PreemptionCheckpoint, grace_s: 3}",
            f"+callbacks.stall={{_target_: fault_injection.SignalThenStall, step: 3, signals: {signals}}}"]
    env = {"PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}", "PYOPENGL_PLATFORM": "egl", "PATH": "/usr/bin:/bin"}
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "procedural_perception.cli.train", *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    waited = time.perf_counter() - start
    assert out.returncode == PREEMPTED_EXIT_CODE, out.stderr[-3000:]
    message = " ".join(out.stderr.split())
    assert f"Stopping now: {reason}" in message and "last.ckpt (written before the signal) is intact" in message
    assert waited < 250  # not the 600 s the step would have taken
    assert torch.load(runs / "dino_kml_mixup_seed3" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_last_ckpt_resumes_from_the_newest_kept_checkpoint_that_loads(tmp_path, damage):
    runs = tmp_path / "runs"
    base = [a for a in TINY if not a.startswith("trainer.max_steps")] + [f"runs_dir={runs}"]
    env = {"PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}", "PYOPENGL_PLATFORM": "egl", "PATH": "/usr/bin:/bin"}

    def train(steps: int) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "procedural_perception.cli.train", *base,
                               f"trainer.max_steps={steps}"], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300)

    assert train(5).returncode == 0
    checkpoints = runs / "dino_kml_mixup_seed3" / "checkpoints"
    last = checkpoints / "last.ckpt"
    assert (checkpoints / "last.ckpt.sha256").exists() and (checkpoints / "step00000004.ckpt.sha256").exists()
    data = bytearray(last.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0x01  # one flipped bit in the middle of a tensor: torch.load would not notice
    last.write_bytes(bytes(data))

    out = train(7)
    assert out.returncode == 0, out.stderr[-3000:]
    message = " ".join(out.stderr.split())
    assert "Skipping a damaged checkpoint" in message and "last.ckpt.corrupt" in message
    assert "Resuming run 'dino_kml_mixup_seed3' from" in message and "step00000004.ckpt" in message
    assert torch.load(last, weights_only=False)["global_step"] == 7
    assert (checkpoints / "last.ckpt.corrupt").exists()  # kept for inspection, never loaded again
