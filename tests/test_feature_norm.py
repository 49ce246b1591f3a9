"""Feature centring / whitening with procedural statistics: the formulas, the process a checkpoint was
trained on, the cache, and the kNN task's option (with the memory's anisotropy metrics)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

import procedural_perception.evaluations.feature_norm as feature_norm
from lightning_modules.encoders import build_encoder
from procedural_perception.evaluations.feature_norm import (
    DEFAULT_PROCESS,
    FeatureNormEncoder,
    FeatureStatistics,
    feature_statistics,
    training_process,
    with_feature_norm,
)
from procedural_perception.evaluations.knn import KNNClassification


def _anisotropic(n=400, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) * torch.linspace(0.1, 3.0, d) + 5.0  # far off-centre, unequal spread


def test_statistics_follow_the_ledoit_wolf_formula_and_whiten_to_the_identity():
    stats = FeatureStatistics.estimate(_anisotropic(), "kml")
    x = F.normalize(_anisotropic().double(), dim=1)
    mean = x.mean(0)
    empirical = (x - mean).T @ (x - mean) / len(x)  # biased (1/N), as Ledoit & Wolf
    a = stats.shrinkage
    shrunk = (1 - a) * empirical + a * torch.trace(empirical) / len(mean) * torch.eye(len(mean), dtype=torch.float64)
    assert 0 < a < 1
    assert torch.allclose(stats.mean, mean, atol=1e-12)
    assert torch.allclose(stats.covariance, shrunk, atol=1e-12)
    w = stats.whitening()
    assert torch.allclose(w, w.T, atol=1e-10)
    assert torch.allclose(w @ stats.covariance @ w, torch.eye(len(mean), dtype=torch.float64), atol=1e-8)


class _Linear(torch.nn.Module):
    """A stand-in encoder: global embedding = a fixed linear map of the mean pixel colour and position."""

    name, embed_dim, patch_size, image_size = "linear", 12, 8, 16

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3 * 4, 12)

    def forward(self, images):
        return self.proj(F.adaptive_avg_pool2d(images, 2).flatten(1)) + 5.0


def test_the_wrapper_centres_and_whitens_normalised_features():
    encoder = _Linear()
    images = torch.rand(64, 3, 16, 16)
    stats = FeatureStatistics.estimate(encoder(torch.rand(300, 3, 16, 16)).detach(), "kml")
    x = F.normalize(encoder(images).detach(), dim=1)
    centred = FeatureNormEncoder(encoder, "centre", stats)(images)
    assert torch.allclose(centred, x - stats.mean.float(), atol=1e-6)
    whitened = FeatureNormEncoder(encoder, "whiten", stats)(images)
    assert torch.allclose(whitened.double(), (x.double() - stats.mean) @ stats.whitening(), atol=1e-4)
    assert FeatureNormEncoder(encoder, "whiten", stats).name == "linear+whiten"
    assert with_feature_norm(encoder, None, 16) is encoder
    with pytest.raises(ValueError, match="centre, whiten"):
        with_feature_norm(encoder, "sphere", 16)


def test_training_process_is_read_from_the_checkpoints_run(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"data": {"process": "kml"}}), run / "config.yaml")
    encoder = _Linear()
    assert training_process(encoder) == DEFAULT_PROCESS  # reference rows: no run
    encoder.checkpoint = str(run / "checkpoints" / "last.ckpt")
    assert training_process(encoder) == "kml"
    OmegaConf.save(OmegaConf.create({"data": {"root": "/photos"}}), run / "config.yaml")  # a real-image run
    assert training_process(encoder) == DEFAULT_PROCESS


def test_statistics_come_from_procedural_renders_and_are_cached(tmp_path, monkeypatch):
    encoder = build_encoder("rgb")
    first = feature_statistics(encoder, 32, samples=48, process="shaders", cache_dir=tmp_path)
    assert first.samples == 48 and first.process == "shaders" and first.mean.shape == (encoder.embed_dim,)
    assert len(list(tmp_path.glob("*_shaders_48_32px.pt"))) == 1

    def no_render(*args, **kwargs):
        raise AssertionError("rendered again instead of reading the cache")

    monkeypatch.setattr(feature_norm, "procedural_features", no_render)
    again = feature_statistics(encoder, 32, samples=48, process="shaders", cache_dir=tmp_path)
    assert torch.equal(again.mean, first.mean) and torch.equal(again.covariance, first.covariance)


def test_the_knn_task_reports_anisotropy_and_centring_spreads_the_memory(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(feature_norm, "DEFAULT_PROCESS", "shaders")
    encoder = build_encoder("rgb")
    settings = dict(memory="digits", query="digits", memory_size=200, query_size=50, image_size=32, ks=(10,),
                    audit_k=10, grid_queries=0)
    raw = KNNClassification(**settings).evaluate(encoder)
    centred = KNNClassification(**settings, feature_norm="centre", feature_norm_samples=64).evaluate(encoder)
    for metrics in (raw, centred):
        assert 0 <= metrics["knn/dino/k10/top1"] <= 100
        assert 1 <= metrics["knn/anisotropy/effective_rank"] <= min(200, encoder.embed_dim)
    # Pixel vectors of digits share a large mean; removing a (procedural) mean lowers their mutual cosine.
    assert raw["knn/anisotropy/mean_cosine"] > 0.5
    assert centred["knn/anisotropy/mean_cosine"] < raw["knn/anisotropy/mean_cosine"]
    assert np.isfinite(centred["privacy/dino/k10/non_private_fraction"])
    with pytest.raises(ValueError, match="feature_norm"):
        KNNClassification(feature_norm="whitening")


def test_each_architecture_gets_one_random_twin_named_after_its_first_run(tmp_path):
    """``python -m benchmarks.feature_norm --checkpoint a b c``: runs a and c share a network, b is deeper; the
    table must say whose network each twin is, not "twin 1" and "twin 2"."""
    from types import SimpleNamespace

    from test_eval_cli import tiny_checkpoint

    from benchmarks.feature_norm import encoders

    def checkpoint(run: str, depth: int) -> str:
        (tmp_path / run / "checkpoints").mkdir(parents=True)
        return tiny_checkpoint(tmp_path / run / "checkpoints" / "last.ckpt", depth=depth)

    runs = [checkpoint("a", 1), checkpoint("b", 2), checkpoint("c", 1)]
    labels = list(encoders(SimpleNamespace(checkpoint=runs, encoders="")))
    assert labels == ["a", "b", "c", "random init twin of a", "random init twin of b"]
    assert list(encoders(SimpleNamespace(checkpoint=runs[:1], encoders=""))) == ["checkpoint", "random init twin"]
