"""Each evaluation task gives the same numbers with 1 and 2 processes (gloo), and runs inside a
Lightning fit through the periodic callback (TensorBoard, results.jsonl, every_n_epochs, figures)."""

import json
import math

import lightning
import pytest
import timm
import torch
from distributed import run_distributed
from torch.utils.data import DataLoader

from callbacks.evaluation import PeriodicEvaluation
from lightning_modules.encoders import encoder_from_backbone
from procedural_perception.evaluations.feature_maps import FeatureMaps
from procedural_perception.evaluations.in_context import InContextSegmentation
from procedural_perception.evaluations.knn_segmentation import KnnSegmentation
from procedural_perception.evaluations.linear_probe import LinearProbe
from procedural_perception.evaluations.pca_r2 import PCAR2
from procedural_perception.evaluations.twoafc import TwoAFC


def tiny_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=64, embed_dim=32,
                             depth=1, num_heads=2, dynamic_img_size=True).eval()


def small_tasks() -> list:
    """Odd sizes, so the two ranks' shards differ in length."""
    return [
        PCAR2(data="nuclei_instances", limit=5, image_size=64, mask_size=32, batch_size=2),
        InContextSegmentation(data="nuclei", limit=5, image_size=64, mask_size=32, batch_size=2),
        InContextSegmentation(data="nuclei", limit=3, image_size=64, mask_size=32, method="knn"),
        KnnSegmentation(data="nuclei", limit=3, image_size=64, mask_size=32, batch_size=2, k=3),
        TwoAFC(limit=7, image_size=32, batch_size=3),
        LinearProbe(train="digits", test="digits", train_limit=61, test_limit=31, image_size=32, batch_size=16),
    ]


def evaluate_all() -> list[dict]:
    torch.set_num_threads(1)
    encoder = encoder_from_backbone(tiny_vit())
    return [task.evaluate(encoder) for task in small_tasks()]


@pytest.mark.ddp
@pytest.mark.slow
def test_callbacks_equal_with_one_and_two_processes():
    single = evaluate_all()
    ranks = run_distributed(evaluate_all, world=2)
    for one, rank0, rank1 in zip(single, *ranks, strict=True):
        assert rank0 == rank1
        assert one.keys() == rank0.keys()
        for key in one:
            assert rank0[key] == pytest.approx(one[key], rel=1e-6, abs=1e-9), key
    assert all(not math.isnan(v) for result in single for v in result.values())


class ToyDINO(lightning.LightningModule):
    """Stands in for DINO: a teacher backbone and one trainable scalar."""

    def __init__(self) -> None:
        super().__init__()
        self.teacher_backbone = tiny_vit()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def training_step(self, batch, batch_idx):
        return (self.w - batch.mean()) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD([self.w], lr=0.1)


def test_callbacks_in_a_lightning_fit(tmp_path):
    module = ToyDINO()
    callbacks = [PeriodicEvaluation(PCAR2(limit=2, image_size=64, mask_size=32), every_n_epochs=2),
                 PeriodicEvaluation(FeatureMaps(n_images=2, image_size=64, clusters=3), every_n_epochs=1)]
    logger = lightning.pytorch.loggers.TensorBoardLogger(tmp_path, name="run")
    trainer = lightning.Trainer(max_epochs=2, callbacks=callbacks, logger=logger, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(module, DataLoader(torch.rand(4, 3), batch_size=2))
    rows = [json.loads(line) for line in (tmp_path / "run" / "version_0" / "results.jsonl").read_text().splitlines()]
    assert [(r["evaluation"], r["epoch"]) for r in rows] == [("feature_maps", 0), ("pca_r2", 1), ("feature_maps", 1)]
    assert 0 < rows[1]["pca_r2"] <= 1
    assert "pca_r2" in trainer.callback_metrics
    assert (tmp_path / "run" / "version_0" / "feature_maps" / "image_pca_kmeans_epoch0001.png").exists()
    assert rows[2]["feature_maps/image_pca_kmeans"].endswith("image_pca_kmeans_epoch0001.png")
    assert list((tmp_path / "run" / "version_0").glob("events.out.tfevents.*"))
    assert not module.teacher_backbone.training  # its mode is restored (eval, as built)
