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

from lightning_modules.encoders import Encoder
from procedural_perception.evaluations.embedding import embed_dataset, labelled_subset
from procedural_perception.evaluations.task import EvaluationTask

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


class LinearProbe(EvaluationTask):
    """Linear-probe accuracy (``linear_probe/top1``, paper Table 5).

    ``train`` / ``test``: labelled sources (``load_labelled`` specs); ``train_limit`` / ``test_limit``:
    seeded random N items of each (None = all; L-BFGS on 60k samples takes minutes); ``image_size``:
    encoder input (None: the encoder's own); ``c``: inverse L2 strength; ``batch_size``: embedding batch.
    """

    name = "linear_probe"
    HEADLINES = (("linear probe %", "linear_probe/top1"),)
    SHARED_FLAGS = {"memory": "train", "query": "test", "limit_memory": "train_limit", "limit_query": "test_limit",
                    "image_size": "image_size", "batch_size": "batch_size"}

    def __init__(self, train: str = "fashion_mnist:train", test: str = "fashion_mnist:test",
                 train_limit: int | None = 400, test_limit: int | None = 200, image_size: int | None = None,
                 c: float = DEFAULT_C, batch_size: int = 128) -> None:
        self.train, self.test, self.train_limit, self.test_limit = train, test, train_limit, test_limit
        self.image_size, self.c, self.batch_size = image_size, c, batch_size
        self._data: dict[int, tuple[Dataset, Dataset]] = {}

    def datasets(self, size: int) -> tuple[Dataset, Dataset]:
        if size not in self._data:
            self._data[size] = (labelled_subset(self.train, size, self.train_limit, 0),
                                labelled_subset(self.test, size, self.test_limit, 1))
        return self._data[size]

    def evaluate(self, encoder: Encoder) -> dict[str, float]:
        train, test = self.datasets(self.size_for(encoder, self.image_size))
        return evaluate_linear_probe(encoder, train, test, self.c, batch_size=self.batch_size, progress=self.progress)
