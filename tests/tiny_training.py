"""A tiny Lightning training run for the fault tests (rank failure, launchers): a linear model on a
seeded stream, trained with ``procedural_perception.training.launch.trainer_arguments`` exactly as ``procedural_perception/cli/train.py`` does.

``python tests/tiny_training.py ROOT [--max-steps N] [--fail-rank R --fail-step S --fail die|hang|sigterm|slow|die-in-eval]``
(sigterm: every rank receives SIGTERM at step S; slow: rank R takes 10x longer per step from step S on;
die-in-eval: at step S every rank runs an evaluation gather, during which rank R is killed);
ranks, nodes and addresses come from the launcher's environment. Each rank appends
``step loss`` lines to ``ROOT/loss_rank<r>.txt``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning as L  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, IterableDataset  # noqa: E402

from procedural_perception.training.launch import trainer_arguments  # noqa: E402
from procedural_perception.training.straggler import StragglerWarning  # noqa: E402


class SeededStream(IterableDataset):
    """Endless samples x_i ~ N(0, 1)^8, a pure function of the index i (sharded over ranks)."""

    def __iter__(self):
        rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) \
            if torch.distributed.is_initialized() else (0, 1)
        i = rank
        while True:
            yield torch.randn(8, generator=torch.Generator().manual_seed(i))
            i += world


class Tiny(L.LightningModule):
    def __init__(self, fail_rank: int, fail_step: int, fail: str, log_dir: str):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.2), nn.Linear(16, 1))
        self.fail_rank, self.fail_step, self.fail, self.log_dir = fail_rank, fail_step, fail, log_dir

    def training_step(self, batch, batch_idx):
        if self.fail == "sigterm" and self.global_step == self.fail_step:
            os.kill(os.getpid(), signal.SIGTERM)  # every rank, as a scheduler signals them all
        elif self.fail == "slow":
            time.sleep(0.5 if self.global_rank == self.fail_rank and self.global_step >= self.fail_step else 0.05)
        elif self.fail == "die-in-eval":
            pass  # see EvaluationGather
        elif self.global_rank == self.fail_rank and self.global_step == self.fail_step:
            if self.fail == "die":
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(3600)  # hang: alive but never reaching the next collective
        loss = self.net(batch).pow(2).mean()
        with open(Path(self.log_dir) / f"loss_rank{self.global_rank}.txt", "a") as f:
            f.write(f"{self.global_step} {loss.item():.8f}\n")
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


class EvaluationGather(L.Callback):
    """At step ``step`` every rank embeds a small data set with the evaluations' shard-and-gather step;
    rank ``fail_rank`` is killed half-way through its shard (a node lost during an evaluation)."""

    def __init__(self, step: int, fail_rank: int) -> None:
        self.step, self.fail_rank = step, fail_rank

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step != self.step:
            return
        from procedural_perception.evaluations.embedding import map_shards

        def compute(rows):
            if trainer.global_rank == self.fail_rank:
                os.kill(os.getpid(), signal.SIGKILL)
            return {"x": rows * 2}

        map_shards(torch.arange(16.0)[:, None], compute, batch_size=4, progress=False)


def launch_two_ranks(root: Path, *args: str) -> list:
    """Start two ranks of this script with the environment torchrun gives each process (2 nodes x 1)."""
    import subprocess

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from distributed import free_port

    root.mkdir(parents=True)
    port = free_port()
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "TORCHELASTIC_RUN_ID": "tiny", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "1",
               "RANK": str(rank), "LOCAL_RANK": "0", "GROUP_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, __file__, str(root), *args], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return procs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("--max-steps", type=int, default=6)
    parser.add_argument("--fail-rank", type=int, default=-1)
    parser.add_argument("--fail-step", type=int, default=-1)
    parser.add_argument("--fail", choices=("die", "hang", "sigterm", "slow", "die-in-eval"), default="die")
    parser.add_argument("--ddp-timeout-s", type=float, default=60.0)
    args = parser.parse_args()
    L.seed_everything(0)
    callbacks = []
    if args.fail == "slow":
        callbacks.append(StragglerWarning(every_n_steps=5))
    if args.fail == "die-in-eval":
        callbacks.append(EvaluationGather(args.fail_step, args.fail_rank))
    trainer = L.Trainer(
        default_root_dir=args.root,
        **trainer_arguments({"accelerator": "cpu", "devices": 1, "max_steps": args.max_steps, "logger": False,
                             "enable_progress_bar": False, "enable_model_summary": False,
                             "ddp_timeout_s": args.ddp_timeout_s}, callbacks),
    )
    model = Tiny(args.fail_rank, args.fail_step, args.fail, args.root)
    trainer.fit(model, DataLoader(SeededStream(), batch_size=4))


if __name__ == "__main__":
    main()
