"""Agreement with human (or known) similarity judgments on 2AFC triplets (paper Table 3, NIGHTS).

For a triplet ``(ref, img0, img1)`` with preference ``p`` for img1, the encoder's distances are
``d = 1 - cosine(embedding(ref), embedding(img))``; the triplet scores
``(d0 < d1)(1 - p) + (d1 < d0) p + 0.5 [d0 = d1]`` (it agrees with the judges who chose the image
the encoder finds closer; a tie earns half), and the 2AFC score is the mean over triplets.
"""

from __future__ import annotations

import torch

from lightning_modules.encoders import Encoder
from procedural_perception.datasets.twoafc import TwoAFCTriplets, load_twoafc
from procedural_perception.evaluations.embedding import embed_dataset
from procedural_perception.evaluations.task import EvaluationTask, optional_int


def twoafc_scores(d0: torch.Tensor, d1: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Per-triplet score ``[N]`` from distances ``d0, d1 [N]`` and the preference for img1 ``p [N]``."""
    p = p.to(d0.dtype)
    return (d0 < d1).to(d0.dtype) * (1 - p) + (d1 < d0).to(d0.dtype) * p + 0.5 * (d0 == d1).to(d0.dtype)


def evaluate_twoafc(encoder: torch.nn.Module, triplets, batch_size: int = 64,
                    device: torch.device | str | None = None, progress: bool = True,
                    prefix: str = "twoafc") -> dict[str, float]:
    """2AFC score of ``encoder`` on ``triplets`` (a ``procedural_perception.datasets.twoafc.TwoAFCTriplets``).

    The three images of every triplet are embedded with the shared ``embed_dataset`` (sharded over
    DDP ranks and gathered), so the score equals one process's. Returns ``{f"{prefix}/score",
    f"{prefix}/triplets"}``.
    """
    ref, img0, img1 = (embed_dataset(encoder, triplets.component(w), batch_size=batch_size, device=device,
                                     progress=progress)[0] for w in range(3))
    d0 = 1 - (ref * img0).sum(dim=1)
    d1 = 1 - (ref * img1).sum(dim=1)
    scores = twoafc_scores(d0, d1, triplets.p)
    return {f"{prefix}/score": float(scores.mean()), f"{prefix}/triplets": int(len(scores))}


class TwoAFC(EvaluationTask):
    """2AFC agreement (``twoafc/score``). ``data``: ``distortion_2afc`` (built-in distortion-ordering
    triplets from real photos, NOT human judgments) or ``nights:<root>[:split]`` (the paper's NIGHTS
    val set); ``limit``: triplets used; ``image_size``: None = the encoder's own (the paper: 224)."""

    name = "twoafc"
    HEADLINES = (("2AFC", "twoafc/score"),)
    SHARED_FLAGS = {"image_size": "image_size", "batch_size": "batch_size"}

    def __init__(self, data: str = "distortion_2afc", limit: int | None = 100, image_size: int | None = None,
                 batch_size: int = 64) -> None:
        self.data, self.limit, self.image_size, self.batch_size = data, limit, image_size, batch_size
        self._triplets: dict[int, TwoAFCTriplets] = {}

    def triplets(self, size: int) -> TwoAFCTriplets:
        if size not in self._triplets:
            self._triplets[size] = load_twoafc(self.data, size, self.limit)
        return self._triplets[size]

    def evaluate(self, encoder: Encoder) -> dict[str, float]:
        return evaluate_twoafc(encoder, self.triplets(self.size_for(encoder, self.image_size)), self.batch_size,
                               progress=self.progress)

    @classmethod
    def add_arguments(cls, parser) -> None:
        parser.add_argument("--twoafc-data", default=None,
                            help="2AFC triplets: distortion_2afc (default; NOT human judgments) or nights:<root>[:split]")
        parser.add_argument("--twoafc-limit", type=optional_int, default=None, help="2AFC triplets (default 100; 'none' = all)")

    @classmethod
    def own_flags(cls) -> dict[str, str]:
        return {"twoafc_data": "data", "twoafc_limit": "limit"}
