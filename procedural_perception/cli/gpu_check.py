"""GPU readiness in one command: ``make gpu-check`` (at most 5 minutes; writes one report).

Exercises every GPU path that the CPU test suite cannot run, each in its own child process (an EGL
context and CUDA state per process, as in training), and writes ``runs/gpu_check/report.{json,md}``:

1. ``egl``: for every local rank r (one per visible GPU), which EGL device the renderer opens and
   whether it is the GPU of CUDA ordinal r (``EGL_NV_device_cuda``, through ``CUDA_VISIBLE_DEVICES``).
2. ``render``: kml_mixup images/s at 224 px on that device (one process per GPU).
3. ``dino_step``: bf16-mixed DINO training steps of the paper profile (ViT-S/16, 2 x 224 + 8 x 96
   crops, out_dim 65536) on GPU 0: images/s and peak memory.
4. ``faiss``: exact search on the GPU equals the CPU master copy, also after removing rows.
5. ``ddp``: two processes on two GPUs train a few steps with identical weights (with >= 2 GPUs).

The checks share one time budget (``--budget-s``, 300 s): each child process gets at most what is
left, and a check that no longer fits is reported as skipped, so the command ends within the budget
(plus a few seconds) even when a driver hangs.

Without a GPU it says so, checks the fallbacks instead (EGL on Mesa llvmpipe, fp32 precision, faiss on
the CPU) and exits 0. A failing check is reported with its error and makes the exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from rich.console import Console

from procedural_perception.core.atomic import atomic_write_json, atomic_write_text

console = Console(stderr=True)
ROOT = Path(__file__).resolve().parents[2]
# The promise: the first command on a GPU machine answers within 5 minutes.
BUDGET_S = 300.0


# --- the checks (each runs in a child process: `python -m procedural_perception.cli.gpu_check --child NAME`) ---
def check_egl(rank: int) -> dict[str, Any]:
    """The EGL device this local rank renders on, and whether it is CUDA ordinal ``rank``."""
    os.environ["LOCAL_RANK"] = str(rank)
    from datamodules.procedural import egl

    context = egl.current_context()
    device = context.device
    expected = f"hardware EGL device {_physical(rank)}"
    return {"rank": rank, "device": device, "matches_cuda_ordinal": device == expected, "expected": expected}


def check_render(rank: int, blocks: int = 3) -> dict[str, Any]:
    """kml_mixup images/s at 224 px on the EGL device of local rank ``rank`` (first block excluded: compiles)."""
    os.environ["LOCAL_RANK"] = str(rank)
    from datamodules.procedural.blocks import BlockConfig, BlockMaker

    maker = BlockMaker(BlockConfig(process="kml_mixup", seed=0, image_size=224, block_size=512))
    maker(0)
    start = time.perf_counter()
    for block in range(1, blocks + 1):
        maker(block)
    seconds = time.perf_counter() - start
    from datamodules.procedural import egl

    return {"rank": rank, "device": egl.current_context().device, "images_per_s": round(512 * blocks / seconds, 1)}


def check_dino_step(steps: int = 12, batch: int = 64) -> dict[str, Any]:
    """bf16-mixed steps of the paper-profile DINO on GPU 0 with random multi-crop batches."""
    from torch.utils.data import DataLoader, Dataset

    from lightning_modules.dino import DINO
    from procedural_perception.core.config import compose, instantiate
    from procedural_perception.training.precision import resolve_precision

    cfg = compose(["profile=paper", "callbacks=none"])
    model = instantiate(cfg.model)
    assert isinstance(model, DINO)
    transform = model.train_transform()

    class Random(Dataset):
        def __len__(self):
            return batch * (steps + 2)

        def __getitem__(self, i):
            return transform(torch.rand(3, 224, 224, generator=torch.Generator().manual_seed(i)))

    timer = _StepTimer(skip=2)
    precision = resolve_precision("auto")
    trainer = L.Trainer(accelerator="gpu", devices=1, precision=precision, max_steps=steps + 2, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[timer])
    torch.cuda.reset_peak_memory_stats()
    trainer.fit(model, DataLoader(Random(), batch_size=batch, num_workers=4, drop_last=True))
    return {"precision": precision, "batch": batch, "images_per_s": round(batch * steps / timer.seconds, 1),
            "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


def check_faiss(n: int = 200_000, dim: int = 384, queries: int = 256, k: int = 20) -> dict[str, Any]:
    """GPU search equals the CPU master copy before and after removing 1,000 rows."""
    import numpy as np

    from procedural_perception.visual_memory.index import FlatIndex, gpu_count

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    q = vectors[rng.choice(n, queries, replace=False)] + 0.01 * rng.standard_normal((queries, dim), dtype=np.float32)
    ids = np.arange(n, dtype=np.int64)
    gpu, cpu = FlatIndex(dim, "gpu" if gpu_count() else "cpu"), FlatIndex(dim, "cpu")
    for index in (gpu, cpu):
        index.add(vectors, ids)
    same = [bool(np.array_equal(gpu.search(q, k)[1], cpu.search(q, k)[1]))]
    removed = rng.choice(n, 1000, replace=False)
    for index in (gpu, cpu):
        index.remove(removed)
    g_ids = gpu.search(q, k)[1]
    same.append(bool(np.array_equal(g_ids, cpu.search(q, k)[1])))
    start = time.perf_counter()
    gpu.search(q, k)
    return {"gpus_seen_by_faiss": gpu_count(), "on_gpu": gpu.use_gpu, "equal_before_removal": same[0],
            "equal_after_removal": same[1], "removed_absent": not np.isin(g_ids, removed).any(),
            "queries_per_s": round(queries / (time.perf_counter() - start), 1)}


def check_ddp(runs_dir: Path, timeout: float = 600) -> dict[str, Any]:
    """Two GPU processes (DDP, NCCL) train 6 steps of a small run; both finish and agree on the step count."""
    command = [sys.executable, "-m", "procedural_perception.cli.train", "profile=cpu", "callbacks=none", "trainer=ddp",
               "trainer.accelerator=gpu", "trainer.devices=2", "trainer.max_steps=6", "trainer.max_epochs=-1",
               f"runs_dir={runs_dir}", "run_name=gpu_check_ddp", "data.num_workers=1",
               "data.warm_programs=false"]  # 6 steps meet 2 blocks' programs: no whole-pool warm-up
    out = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    from procedural_perception.core.checkpoints import read_checkpoint

    last = runs_dir / "gpu_check_ddp" / "checkpoints" / "last.ckpt"
    step = int(read_checkpoint(last)["global_step"]) if last.exists() else None
    if out.returncode != 0 or step != 6:
        raise RuntimeError(f"exit {out.returncode}, step {step}: {out.stderr[-1500:]}")
    return {"processes": 2, "steps": step}


class _StepTimer(L.Callback):
    """Seconds spent in training steps after ``skip`` warm-up steps (CUDA-synchronised)."""

    def __init__(self, skip: int) -> None:
        self.skip, self.seconds, self._t = skip, 0.0, None

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step >= self.skip:
            torch.cuda.synchronize()
            self._t = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self._t is not None:
            torch.cuda.synchronize()
            self.seconds += time.perf_counter() - self._t
            self._t = None


def _physical(rank: int) -> int:
    visible = [v for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip().isdigit()]
    return int(visible[rank]) if rank < len(visible) else rank


# --- fallbacks without a GPU -----------------------------------------------------------------------
def check_fallbacks() -> dict[str, Any]:
    """What a CPU-only machine uses instead: llvmpipe rendering, fp32, faiss on the CPU."""
    from datamodules.procedural import egl
    from procedural_perception.training.precision import resolve_precision
    from procedural_perception.visual_memory.index import FlatIndex, gpu_count

    return {"egl_device": egl.current_context().device, "precision": resolve_precision("auto"),
            "faiss_gpus": gpu_count(), "faiss_index_on_gpu": FlatIndex(8, "auto").use_gpu}


CHECKS = {"egl": check_egl, "render": check_render, "dino_step": check_dino_step, "faiss": check_faiss,
          "fallbacks": check_fallbacks}


def _child(name: str, rank: int | None) -> None:
    result = CHECKS[name](rank) if rank is not None else CHECKS[name]()
    print("GPU_CHECK_RESULT " + json.dumps(result))


def run_child(name: str, rank: int | None = None, timeout: float = 300) -> dict[str, Any]:
    """Run one check in a fresh process; its result, or ``{"error": ...}``."""
    command = [sys.executable, "-m", "procedural_perception.cli.gpu_check", "--child", name]
    if rank is not None:
        command += ["--rank", str(rank)]
    env = {**os.environ, "PYOPENGL_PLATFORM": "egl"}
    start = time.perf_counter()
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in out.stdout.splitlines() if line.startswith("GPU_CHECK_RESULT ")]
    if out.returncode != 0 or not lines:
        return {"error": (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1][:500]}
    return {**json.loads(lines[-1].split(" ", 1)[1]), "seconds": round(time.perf_counter() - start, 1)}


class Budget:
    """The seconds left of ``make gpu-check``'s budget; each check runs with ``min(its limit, left)``."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.deadline = seconds, time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, name: str, rank: int | None = None, limit: float = 300) -> dict[str, Any]:
        """``run_child`` within what is left, or a "skipped" entry when less than 5 s are left."""
        if self.left() < 5:
            return {"skipped": f"the {self.seconds:.0f} s budget was spent (--budget-s sets it)"}
        return run_child(name, rank, timeout=min(limit, self.left()))


def report(results: dict[str, Any]) -> str:
    lines = ["# GPU readiness", "", f"GPUs: {results['gpus']} ({', '.join(results['gpu_names']) or 'none'})", "",
             "| check | result |", "|---|---|"]
    for name, value in results["checks"].items():
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"| {name} | " + ", ".join(f"{k}={v}" for k, v in item.items()) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m procedural_perception.cli.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/gpu_check"), help="report folder")
    p.add_argument("--budget-s", type=float, default=BUDGET_S, help=f"time for every check together (default {BUDGET_S:.0f})")
    p.add_argument("--child", choices=sorted(CHECKS), help=argparse.SUPPRESS)
    p.add_argument("--rank", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child(args.child, args.rank)
        return 0

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    names = [torch.cuda.get_device_name(i) for i in range(gpus)]
    checks: dict[str, Any] = {}
    budget = Budget(args.budget_s)
    if gpus == 0:
        console.print("[yellow]No GPU visible (torch.cuda.is_available() is False): checking the CPU fallbacks "
                      "only; run this again on a GPU machine.[/yellow]")
        checks["fallbacks"] = budget.run("fallbacks")
    else:
        console.print(f"{gpus} GPU(s): {', '.join(names)}")
        checks["egl"] = [budget.run("egl", r, limit=60) for r in range(gpus)]
        checks["render"] = [budget.run("render", r, limit=90) for r in range(gpus)]
        checks["dino_step"] = budget.run("dino_step", limit=150)
        checks["faiss"] = budget.run("faiss", limit=90)
        if gpus >= 2 and budget.left() < 5:
            checks["ddp"] = {"skipped": f"the {budget.seconds:.0f} s budget was spent (--budget-s sets it)"}
        elif gpus >= 2:
            try:
                checks["ddp"] = check_ddp(args.out / "runs", timeout=budget.left())
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as err:
                checks["ddp"] = {"error": str(err)[-800:]}
        else:
            checks["ddp"] = {"skipped": "one GPU: two-process DDP needs two"}
    results = {"gpus": gpus, "gpu_names": names, "checks": checks}
    atomic_write_json(args.out / "report.json", results)
    atomic_write_text(args.out / "report.md", report(results))
    console.print(report(results))
    console.print(f"report: {args.out / 'report.md'}")
    failed = [n for n, v in checks.items() for item in (v if isinstance(v, list) else [v]) if "error" in item]
    if failed:
        console.print(f"[red]failed: {', '.join(failed)}[/red]")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
