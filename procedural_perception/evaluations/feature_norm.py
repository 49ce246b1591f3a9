"""Feature centring and whitening whose statistics come from procedural images only.

Why: a small DINO encoder maps every real image into a narrow cone (mean pairwise cosine ~0.9 on
Fashion-MNIST), so cosine neighbours differ by 1e-3 and the DINO vote's weights are all alike.
Subtracting the mean direction (centring) and, further, equalising the variance of every direction
(whitening) spreads the memory out. The statistics are estimated on N samples of the encoder's own
procedural training process, rendered here, never on real images: the transform is a fixed function
of the encoder and the procedural stream, so no real image enters the encoder side, the memory
remains the only place real data lives, and the exact privacy audit (which reads the final
features) stays exact.

Transform of an encoder output f [B, D], with x = f / |f| (the features the memory stores):

- ``centre``: x - mu                                  (mu: mean of x over procedural samples)
- ``whiten``: (x - mu) @ W,  W = S^(-1/2),  S = (1 - a) C + a (tr C / D) I   (Ledoit-Wolf shrinkage a)

and the memory then L2-normalises the result as usual. Shrinkage keeps S invertible when there are
fewer samples than dimensions (EfficientNet-Lite0: D = 1280) and damps the noisy small eigenvalues;
Ledoit & Wolf (2004) pick ``a`` from the data (scikit-learn's estimator), so there is no knob to tune.

Statistics are cached on disk per (encoder weights, process, samples, input size) under
``$XDG_CACHE_HOME/procedural_perception/feature_norm`` (default ``~/.cache/...``).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.covariance import ledoit_wolf

from datamodules.procedural.blocks import BlockConfig, BlockMaker
from lightning_modules.encoders import Encoder
from procedural_perception.core.atomic import atomic_path
from procedural_perception.core.run_config import read_run_config, run_dir_of

log = logging.getLogger(__name__)

MODES = ("centre", "whiten")
# The paper's best process; the statistics' process for encoders without a procedural training run
# (reference rows, or a checkpoint trained on a folder of real images).
DEFAULT_PROCESS = "kml_mixup"
# Samples the statistics are estimated from: 2048 keeps the mean's standard error ~2% of a feature's
# spread and gives Ledoit-Wolf enough samples for a 384-d covariance, at ~10 s of rendering at 64 px.
DEFAULT_SAMPLES = 2048
# Stream seed of the statistics' samples: not a training seed, so they are images the encoder never saw.
STATISTICS_SEED = 7919
# Samples per rendered block (the stream's default block size).
BLOCK_SIZE = 512


@dataclass
class FeatureStatistics:
    """Mean ``[D]`` and shrunk covariance ``[D, D]`` of L2-normalised features, from ``samples`` images
    of ``process``; ``shrinkage``: the Ledoit-Wolf weight of the scaled identity."""

    mean: torch.Tensor
    covariance: torch.Tensor
    shrinkage: float
    samples: int
    process: str

    @classmethod
    def estimate(cls, features: torch.Tensor, process: str) -> FeatureStatistics:
        """Statistics of ``features [N, D]`` (L2-normalised here)."""
        x = F.normalize(features.double(), dim=1).numpy()
        covariance, shrinkage = ledoit_wolf(x, assume_centered=False)
        return cls(torch.from_numpy(x.mean(0)), torch.from_numpy(covariance), float(shrinkage), len(x), process)

    def whitening(self) -> torch.Tensor:
        """W = S^(-1/2) ``[D, D]`` (symmetric; eigenvalues floored at 1e-12 of the largest)."""
        eigenvalues, eigenvectors = torch.linalg.eigh(self.covariance)
        eigenvalues = eigenvalues.clamp(min=float(eigenvalues.max()) * 1e-12)
        return (eigenvectors * eigenvalues.rsqrt()) @ eigenvectors.T


class FeatureNormEncoder(Encoder):
    """``encoder`` followed by centring or whitening (``mode``) with fixed procedural ``statistics``.

    Global embeddings only: ``patch_features`` are the wrapped encoder's, unchanged (the statistics
    describe global embeddings).
    """

    def __init__(self, encoder: Encoder, mode: str, statistics: FeatureStatistics) -> None:
        if mode not in MODES:
            raise ValueError(f"feature_norm must be one of {', '.join(MODES)} (or None for none), got {mode!r}")
        super().__init__(f"{encoder.name}+{mode}", encoder.embed_dim, encoder.patch_size, (0.0,) * 3, (1.0,) * 3,
                         encoder.image_size)
        self.encoder, self.mode, self.statistics = encoder, mode, statistics
        self.register_buffer("centre", statistics.mean.float(), persistent=False)
        projection = statistics.whitening() if mode == "whiten" else torch.eye(len(statistics.mean), dtype=torch.float64)
        self.register_buffer("projection", projection.float(), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.transform(self.encoder(images))

    def transform(self, features: torch.Tensor) -> torch.Tensor:
        """The wrapped encoder's raw embeddings ``[B, D]`` -> centred / whitened ``[B, D]`` (not normalised)."""
        x = F.normalize(features.float(), dim=-1) - self.centre
        return x if self.mode == "centre" else x @ self.projection

    def patch_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder.patch_features(images)


def training_process(encoder: Encoder) -> str:
    """The procedural process the encoder was trained on (its checkpoint's ``<run>/config.yaml``,
    ``data.process``), else :data:`DEFAULT_PROCESS`."""
    checkpoint = getattr(encoder, "checkpoint", None)
    cfg = read_run_config(run_dir_of(checkpoint)) if checkpoint else None
    process = cfg.get("data", {}).get("process") if cfg is not None else None
    return str(process) if process else DEFAULT_PROCESS


def procedural_images(process: str, samples: int, image_size: int, seed: int = STATISTICS_SEED):
    """``samples`` images of ``process`` as float ``[b, 3, S, S]`` batches in [0, 1], block by block."""
    maker = BlockMaker(BlockConfig(process=process, seed=seed, image_size=image_size,
                                   block_size=min(BLOCK_SIZE, samples)))
    done = 0
    for block in range(-(-samples // maker.config.block_size)):
        images = maker(block)[: samples - done]
        done += len(images)
        yield images.float().div_(255.0)


@torch.no_grad()
def procedural_features(encoder: Encoder, process: str, samples: int, image_size: int,
                        batch_size: int = 256) -> torch.Tensor:
    """Raw embeddings ``[samples, D]`` of ``samples`` procedural images of ``process`` at ``image_size``."""
    device = next(encoder.parameters(), torch.empty(0)).device
    rows = []
    for block in procedural_images(process, samples, image_size):
        for start in range(0, len(block), batch_size):
            rows.append(encoder(block[start : start + batch_size].to(device)).float().cpu())
    return torch.cat(rows)


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "procedural_perception" / "feature_norm"


def _weights_digest(encoder: Encoder) -> str:
    digest = hashlib.sha1(encoder.name.encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def feature_statistics(encoder: Encoder, image_size: int, samples: int = DEFAULT_SAMPLES,
                       process: str | None = None, cache_dir: Path | None = None) -> FeatureStatistics:
    """Procedural statistics of ``encoder`` at ``image_size`` (cached; ``process`` default: the
    encoder's own training process)."""
    process = process or training_process(encoder)
    path = Path(cache_dir or _cache_dir()) / f"{_weights_digest(encoder)}_{process}_{samples}_{image_size}px.pt"
    if path.is_file():
        try:
            return FeatureStatistics(**torch.load(path, map_location="cpu"))
        except (OSError, RuntimeError, TypeError, EOFError) as err:  # a damaged cache file: recompute
            log.warning("feature-norm cache %s unreadable (%s); recomputing", path, err)
    statistics = FeatureStatistics.estimate(procedural_features(encoder, process, samples, image_size), process)
    buffer = io.BytesIO()
    torch.save(vars(statistics), buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return statistics


def with_feature_norm(encoder: Encoder, mode: str | None, image_size: int, samples: int = DEFAULT_SAMPLES,
                      process: str | None = None) -> Encoder:
    """``encoder`` itself when ``mode`` is None, else wrapped in centring / whitening with procedural statistics."""
    if mode is None or str(mode).lower() in ("none", ""):
        return encoder
    if mode not in MODES:
        raise ValueError(f"feature_norm must be one of {', '.join(MODES)} or none, got {mode!r}")
    return FeatureNormEncoder(encoder, mode, feature_statistics(encoder, image_size, samples, process))


__all__ = ["DEFAULT_PROCESS", "MODES", "FeatureNormEncoder", "FeatureStatistics", "feature_statistics",
           "procedural_features", "training_process", "with_feature_norm"]
