"""Linear probe on frozen features (paper Table 5): a multinomial logistic regression fitted on the
embeddings of a labelled training set, scored by top-1 accuracy on a held-out set.

Features are the shared ``embed_dataset`` embeddings (L2-normalised), standardised with the
training set's statistics; scikit-learn's L-BFGS logistic regression is deterministic, so every
DDP rank (which holds the same gathered features) fits the same probe as one process would.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch.utils.data import Dataset

from procedural_perception.evaluations.embedding import embed_dataset

DEFAULT_C = 1.0  # inverse L2 strength; standardised features make 1.0 a reasonable untuned default
MAX_ITER = 1000  # L-BFGS iterations; enough to converge on a few thousand samples


def fit_probe(train_x: np.ndarray, train_y: np.ndarray, c: float = DEFAULT_C, max_iter: int = MAX_ITER):
    """Standardise + logistic regression, fitted on ``train_x [N, D]``, ``train_y [N]``."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter)).fit(train_x, train_y)


def evaluate_linear_probe(encoder: torch.nn.Module, train: Dataset, test: Dataset, c: float = DEFAULT_C,
                          max_iter: int = MAX_ITER, batch_size: int = 256, device: torch.device | str | None = None,
                          progress: bool = True) -> dict[str, float]:
    """Top-1 accuracy (%) of a linear probe; ``train``/``test`` yield ``(image [3, S, S], label)``.

    Returns ``{"linear_probe/top1", "linear_probe/train_top1", "linear_probe/train", "linear_probe/test"}``.
    """
    train_x, train_y = embed_dataset(encoder, train, batch_size=batch_size, device=device, progress=progress)
    test_x, test_y = embed_dataset(encoder, test, batch_size=batch_size, device=device, progress=progress)
    if len(torch.unique(train_y)) < 2:
        raise ValueError("Linear probe: the training set has fewer than two classes.")
    probe = fit_probe(train_x.double().numpy(), train_y.numpy(), c, max_iter)
    return {
        "linear_probe/top1": 100.0 * float(probe.score(test_x.double().numpy(), test_y.numpy())),
        "linear_probe/train_top1": 100.0 * float(probe.score(train_x.double().numpy(), train_y.numpy())),
        "linear_probe/train": int(len(train_y)),
        "linear_probe/test": int(len(test_y)),
    }
