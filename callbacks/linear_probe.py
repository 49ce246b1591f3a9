"""Linear-probe accuracy during training (``linear_probe/top1``, paper Table 5).

``train`` / ``test``: labelled sources for ``procedural_perception.datasets.labelled.load_labelled`` (built-in
``fashion_mnist:train`` / ``fashion_mnist:test``, an ImageFolder, a MedMNIST ``.npz``);
``train_limit`` / ``test_limit``: a seeded random N items of each (None = all; L-BFGS on 60k samples takes
minutes); ``image_size``: encoder input (``eval_transform``); ``c``: inverse L2 strength.
"""

from __future__ import annotations

from torch.utils.data import Dataset

from lightning_modules.encoders import Encoder
from procedural_perception.datasets.labelled import load_labelled
from procedural_perception.evaluations.embedding import eval_transform
from procedural_perception.evaluations.linear_probe import DEFAULT_C, evaluate_linear_probe

from .periodic import PeriodicEvaluation


def labelled_subset(spec: str, image_size: int, limit: int | None) -> Dataset:
    """A seeded random ``limit`` items (in dataset order; all when None) of a labelled source,
    transformed for the encoders."""
    return load_labelled(spec, transform=eval_transform(image_size)).subset(limit)


class LinearProbe(PeriodicEvaluation):
    name = "linear_probe"

    def __init__(self, every_n_epochs: int = 1, train: str = "fashion_mnist:train", test: str = "fashion_mnist:test",
                 train_limit: int | None = 400, test_limit: int | None = 200, image_size: int = 224,
                 c: float = DEFAULT_C, batch_size: int = 128) -> None:
        super().__init__(every_n_epochs)
        self.train, self.test, self.train_limit, self.test_limit = train, test, train_limit, test_limit
        self.image_size, self.c, self.batch_size = image_size, c, batch_size
        self._data: tuple[Dataset, Dataset] | None = None

    def datasets(self) -> tuple[Dataset, Dataset]:
        if self._data is None:
            self._data = (labelled_subset(self.train, self.image_size, self.train_limit),
                          labelled_subset(self.test, self.image_size, self.test_limit))
        return self._data

    def evaluate(self, encoder: Encoder) -> dict[str, float]:
        train, test = self.datasets()
        return evaluate_linear_probe(encoder, train, test, self.c, batch_size=self.batch_size, progress=self.progress)
