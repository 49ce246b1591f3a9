"""Training throughput with 2 DDP processes against 1 process, on this machine's CPU (gloo).

`make bench-ddp` (``python -m benchmarks.ddp``) trains the DINO model of the ``cpu`` profile (a 4-block
ViT-Tiny at 64 px global crops) with its real multi-crop transform, the same number of images per
process and step, launched the way ``torchrun`` / ``fabric run`` launch ``procedural_perception.cli.train`` (each process
gets the launcher's environment and builds its Trainer with ``procedural_perception.training.launch.trainer_arguments``):

* baseline: 1 process with half the cores (``torch`` threads = cores / 2);
* value: 2 processes on one node, each with half the cores, gradients all-reduced over gloo: the
  ratio is the speed-up the second process brings (2x would be perfect scaling);
* without ``QUICK``, also 1 process with every core against the same baseline (all cores in one
  process versus the same cores split over two DDP ranks). On a machine shared with other jobs,
  multi-threaded steps slow down far more than single-threaded ones: compare rows of one run only.

Images are held in memory (no rendering), so the rows measure what DDP itself costs or gains: the
split of the cores, the gradient all-reduce and the loss-centre all-reduce. Throughput counts the
images of all ranks per second of the timed steps (after warm-up). On a GPU node each process would
own a GPU instead; the CPU numbers are informational. ``QUICK=1`` takes fewer steps (< 60 s).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from procedural_perception.core.benchmark_rows import quick, row, write_rows

ROOT = Path(__file__).resolve().parents[1]


def worker(args: argparse.Namespace) -> None:
    """One training process: time ``args.steps`` steps after ``args.warmup`` and (rank 0) write images/s."""
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, Dataset

    from procedural_perception.core.config import compose, instantiate
    from procedural_perception.training.launch import trainer_arguments

    torch.set_num_threads(args.threads)
    cfg = compose(["profile=cpu"])
    L.seed_everything(0, verbose=False)
    model = instantiate(cfg.model)
    transform = model.train_transform()
    size = int(cfg.data.image_size)

    class InMemory(Dataset):
        def __init__(self, n: int) -> None:
            self.images = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))

        def __len__(self) -> int:
            return len(self.images)

        def __getitem__(self, i: int):
            return transform(self.images[i])

    class Timer(L.Callback):
        def on_train_batch_start(self, trainer, *_):
            if trainer.global_step == args.warmup:
                self.start = time.perf_counter()

        def on_train_end(self, trainer, *_):
            seconds = time.perf_counter() - self.start
            images = args.steps * args.batch_size * trainer.world_size
            if trainer.is_global_zero:
                Path(args.out).write_text(json.dumps({"images_per_s": images / seconds, "seconds": seconds,
                                                      "world_size": trainer.world_size}))

    n_steps = args.warmup + args.steps
    trainer = L.Trainer(**trainer_arguments(
        {"accelerator": "cpu", "devices": 1, "max_steps": n_steps, "logger": False, "enable_checkpointing": False,
         "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0},
        [Timer()]))
    world = trainer.world_size
    loader = DataLoader(InMemory(n_steps * args.batch_size * world), batch_size=args.batch_size, num_workers=0,
                        drop_last=True)
    trainer.fit(model, loader)


def measure(world: int, threads: int, batch_size: int, warmup: int, steps: int) -> dict:
    """Launch ``world`` processes on this node with the environment torchrun gives them; return rank 0's row."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        port = _free_port()
        procs = []
        for rank in range(world):
            env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
            if world > 1:
                env.update(TORCHELASTIC_RUN_ID="bench-ddp", WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                           RANK=str(rank), LOCAL_RANK=str(rank), GROUP_RANK="0", MASTER_ADDR="127.0.0.1",
                           MASTER_PORT=str(port))
            command = [sys.executable, "-m", "benchmarks.ddp", "--worker", "--out", str(out), "--threads",
                       str(threads), "--batch-size", str(batch_size), "--warmup", str(warmup), "--steps", str(steps)]
            procs.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                          text=True))
        errors = [p.communicate(timeout=600)[1] for p in procs]
        if any(p.returncode for p in procs):
            raise RuntimeError(f"{world}-process run failed:\n" + "\n".join(e[-2000:] for e in errors))
        return json.loads(out.read_text())


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=16 if quick() else 32, help="images per process and step")
    parser.add_argument("--warmup", type=int, default=1 if quick() else 3, help="untimed steps")
    parser.add_argument("--steps", type=int, default=2 if quick() else 20, help="timed steps")
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    cores = os.cpu_count() or 1
    half = max(1, cores // 2)
    settings = dict(batch_size=args.batch_size, warmup=args.warmup, steps=args.steps)
    one = measure(1, half, **settings)["images_per_s"]
    two = measure(2, half, **settings)["images_per_s"]
    extra = dict(cores=cores, threads_per_process=half, batch_per_process=args.batch_size, steps=args.steps,
                 quick=quick())
    baseline = f"1 process, {half} thread(s)"
    rows = [row("train_images_per_s/ddp_2_processes", two, "images/s", baseline=baseline, baseline_value=one, **extra)]
    if not quick():
        full = measure(1, cores, **settings)["images_per_s"]
        rows.append(row(f"train_images_per_s/1_process_{cores}_threads", full, "images/s", baseline=baseline,
                        baseline_value=one, **extra))
    write_rows("ddp", rows)


if __name__ == "__main__":
    main()
