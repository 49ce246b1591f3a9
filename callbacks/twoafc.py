"""2AFC agreement during training (``twoafc/score``).

``data``: ``distortion_2afc`` (built-in distortion-ordering triplets from real photos, NOT human
judgments) or ``nights:<root>[:split]`` (the paper's NIGHTS val set); ``limit``: triplets used;
``image_size``: 224 as in the paper; ``batch_size``: images per forward pass.
"""

from __future__ import annotations

from lightning_modules.encoders import Encoder
from procedural_perception.datasets.twoafc import TwoAFCTriplets, load_twoafc
from procedural_perception.evaluations.twoafc import evaluate_twoafc

from .periodic import PeriodicEvaluation


class TwoAFC(PeriodicEvaluation):
    name = "twoafc"

    def __init__(self, every_n_epochs: int = 1, data: str = "distortion_2afc", limit: int | None = 100,
                 image_size: int = 224, batch_size: int = 64) -> None:
        super().__init__(every_n_epochs)
        self.data, self.limit, self.image_size, self.batch_size = data, limit, image_size, batch_size
        self._triplets: TwoAFCTriplets | None = None

    def triplets(self) -> TwoAFCTriplets:
        if self._triplets is None:
            self._triplets = load_twoafc(self.data, self.image_size, self.limit)
        return self._triplets

    def evaluate(self, encoder: Encoder) -> dict[str, float]:
        return evaluate_twoafc(encoder, self.triplets(), self.batch_size, progress=self.progress)
