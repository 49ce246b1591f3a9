"""Two nodes x one process on localhost, launched exactly as the README says (`lightning run` on each
node, gloo on the CPU): training and callbacks run, ranks stay in sync, and the kNN callback's numbers
equal those one process computes for the same checkpoint."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_resume import TINY

from lightning_modules.encoders import build_encoder
from procedural_perception.evaluations.knn import KNNClassification

ROOT = Path(__file__).resolve().parents[1]
# The design card's launcher (make setup installs it; it forwards to Lightning's `fabric run`).
LIGHTNING = Path(sys.executable).with_name("lightning")

# kNN callback on the built-in digits at the training crop size: small enough for seconds per epoch.
KNN = {"memory": "digits", "query": "digits", "memory_size": 300, "query_size": 120, "seed": 0, "image_size": 32,
       "ks": [10, 20], "rules": ["plurality", "dino"], "batch_size": 64, "grid_queries": 0}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_args(runs_dir: Path) -> list[str]:
    knn = ", ".join(f"{k}: {json.dumps(v)}" for k, v in KNN.items())
    return [
        *[a for a in TINY if not a.startswith(("trainer.max_steps", "trainer.devices", "data.samples_per_epoch"))],
        "trainer.max_steps=4", "data.samples_per_epoch=16",  # 2 steps per epoch with 2 x 4 images per step
        f"runs_dir={runs_dir}",
        "+callbacks.knn={_target_: callbacks.evaluation.PeriodicEvaluation, every_n_epochs: 1, "
        f"task: {{_target_: procedural_perception.evaluations.knn.KNNClassification, {knn}}}}}",
        "+callbacks.checksum={_target_: fault_injection.ParameterChecksum}",
    ]


@pytest.mark.slow
@pytest.mark.ddp
@pytest.mark.egl
def test_two_nodes_on_localhost_train_and_agree_with_one_process(tmp_path):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}", "PYOPENGL_PLATFORM": "egl", "OMP_NUM_THREADS": "1"}
    nodes = [
        subprocess.Popen(
            [str(LIGHTNING), "run", "--accelerator", "cpu", "--devices", "1", "--num-nodes", "2", "--node-rank", str(rank),
             "--main-address", "127.0.0.1", "--main-port", str(port), "procedural_perception/cli/train.py", *train_args(tmp_path)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        for rank in (0, 1)
    ]
    try:
        outputs = [node.communicate(timeout=500)[0] for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:  # a hang: never leave the launcher and its worker behind
                os.killpg(node.pid, signal.SIGKILL)
    for rank, (node, out) in enumerate(zip(nodes, outputs, strict=True)):
        assert node.returncode == 0, f"node {rank} failed:\n{out[-4000:]}"
    assert "MEMBER: 1/2" in outputs[0] and "MEMBER: 2/2" in outputs[1]  # one world of two ranks

    run = next(tmp_path.glob("dino_*"))
    sums = {p.name: p.read_text() for p in run.glob("checksum_rank*.txt")}
    assert len(sums) == 2 and len(set(sums.values())) == 1  # DDP kept both nodes' weights identical

    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["global_step"] == 4
    assert state["ShaderDataModule"]["world_size"] == 2

    rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    knn_rows = [r for r in rows if r.get("evaluation") == "knn"]
    assert [r["epoch"] for r in knn_rows] == [0, 1]

    # One process, same checkpoint, same callback code: the numbers the 2-node run logged.
    single = KNNClassification(**KNN).evaluate(build_encoder(str(run / "checkpoints" / "last.ckpt")))
    for key, value in single.items():
        if isinstance(value, float):
            assert knn_rows[-1][key] == pytest.approx(value, abs=1e-9), key
