"""The kNN task (accuracy + privacy audit) inside a Lightning run, and the kNN evaluation under 2-process DDP."""

import json

import lightning as L
import pytest
import torch
from distributed import run_distributed
from lightning.pytorch.loggers import TensorBoardLogger
from timm.models.vision_transformer import VisionTransformer
from torch.utils.data import DataLoader, TensorDataset

import procedural_perception.evaluations.knn as knn_module
from callbacks.evaluation import PeriodicEvaluation
from lightning_modules.encoders import build_encoder
from procedural_perception.datasets.labelled import load_labelled
from procedural_perception.evaluations.embedding import eval_transform
from procedural_perception.evaluations.knn import KNNClassification, evaluate_knn


class TinyDINOLike(L.LightningModule):
    """Just enough of a DINO module: a ViT ``teacher_backbone`` and something to train."""

    def __init__(self):
        super().__init__()
        self.teacher_backbone = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2,
                                                  num_classes=0)
        self.head = torch.nn.Linear(4, 1)
        self.backbone_modes = []

    def training_step(self, batch, _):
        self.backbone_modes.append(self.teacher_backbone.training)
        return self.head(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.head.parameters(), lr=0.1)


def test_callbacks_log_accuracy_and_privacy_embedding_once_per_epoch(tmp_path, monkeypatch):
    calls = []
    embed = knn_module.embed_dataset

    def counting(*args, **kwargs):
        calls.append(len(args[1]))
        return embed(*args, **kwargs)

    monkeypatch.setattr(knn_module, "embed_dataset", counting)
    task = KNNClassification(memory="digits", query="digits", memory_size=300, query_size=60, image_size=32,
                             ks=(1, 5, 10), audit_k=5, audit_rule="rank", batch_size=128, grid_queries=3,
                             grid_neighbours=4)
    module = TinyDINOLike()
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=TensorBoardLogger(tmp_path, name="run"),
                        callbacks=[PeriodicEvaluation(task)], enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(module, DataLoader(TensorDataset(torch.randn(8, 4)), batch_size=4))
    assert calls == [300, 60, 300, 60]  # memory + queries once per epoch, shared by accuracy and audit
    assert all(module.backbone_modes) and module.teacher_backbone.training  # train mode restored
    rows = [json.loads(line) for line in (tmp_path / "run" / "version_0" / "results.jsonl").read_text().splitlines()]
    assert [r["evaluation"] for r in rows] == ["knn", "knn"]
    knn_row = rows[1]
    assert 0 <= knn_row["knn/rank/k5/top1"] <= knn_row["knn/rank/k5/top5"] <= 100
    assert {f"knn/{r}/k{k}/top1" for r in task.rules for k in (1, 5, 10)} <= set(knn_row)
    assert 0 <= knn_row["privacy/rank/k5/non_private_fraction"] <= 1
    per_class = [v for k, v in knn_row.items() if k.startswith("knn/per_class/")]
    assert len(per_class) == 10 and all(0 <= v <= 100 for v in per_class)
    assert "knn/dino/k10/top1" in trainer.callback_metrics
    assert (tmp_path / "run" / "version_0" / "knn" / "queries_and_neighbours_epoch0001.png").exists()


def test_a_small_memory_evaluates_with_the_default_ks_and_one_warning():
    """Few-shot memories: a 2-class, 12-image memory with the default k list reports k = 12."""
    task = KNNClassification(memory="lfw_subset", query="lfw_subset", memory_size=12, query_size=20, image_size=16)
    with pytest.warns(UserWarning) as caught:
        metrics = task.evaluate(build_encoder("rgb"))
    messages = [str(w.message) for w in caught if "kNN:" in str(w.message)]
    assert messages == ["kNN: the memory holds 12 samples: k = 20, 100, 200 exceed it and are evaluated at k = 12; "
                        "kept k = 10, 12; privacy audit at k = 12 instead of 20"]
    assert {k for k in metrics if k.startswith("knn/dino/") and k.endswith("/top1")} == {"knn/dino/k10/top1",
                                                                                       "knn/dino/k12/top1"}
    assert "privacy/dino/k12/non_private_count" in metrics
    assert task.headlines()[0][1] == "knn/dino/k12/top1"


def test_a_memory_smaller_than_every_k_uses_k_equal_to_its_size():
    task = KNNClassification(memory="lfw_subset", query="lfw_subset", memory_size=8, query_size=20, image_size=16)
    with pytest.warns(UserWarning, match="kept k = 8;"):
        metrics = task.evaluate(build_encoder("rgb"))
    assert {k for k in metrics if k.endswith("/top1") and k.startswith("knn/dino/")} == {"knn/dino/k8/top1"}
    assert task.headlines()[0][1] == "knn/dino/k8/top1"


def _knn_metrics():
    transform = eval_transform(16)
    memory = load_labelled("digits", transform).subset(301, seed=0)
    query = load_labelled("digits", transform).subset(77, seed=1)
    return evaluate_knn(build_encoder("rgb"), memory, query, ks=(1, 10, 50), audit_k=10, batch_size=32, progress=False)


@pytest.mark.ddp
@pytest.mark.slow
def test_knn_evaluation_two_processes_equal_one():
    single = _knn_metrics()
    ranks = run_distributed(_knn_metrics, world=2)
    assert ranks[0] == single and ranks[1] == single
    assert single["privacy/dino/k10/non_private_count"] > 0 and single["knn/dino/k10/top1"] > 50
