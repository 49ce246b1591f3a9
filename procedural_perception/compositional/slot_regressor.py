"""Encoder-only baseline: the slot VAE's encoder trained to regress the ground-truth object latents.

Same ``SlotEncoder`` as ``slot_vae.py``, no decoder: each of the ``K`` slots predicts one object's
normalised latents ``(x, y, shape, scale, hue)`` in [0, 1] and the loss is the mean squared error
after Hungarian matching of slots to objects (slots are unordered). It is trained on ID scenes only,
with full supervision, which is the strongest form of the non-generative approach.

``encoder`` may also be a module (``slot_encoder.PretrainedSlotEncoder``: a pretrained image encoder
fine-tuned with ``backbone_lr``, its new MLP with ``lr``), the paper's "encoder-only with pre-training".
"""

from __future__ import annotations

import lightning
import torch
from torch import nn

from procedural_perception.compositional.slot_encoder import build_slot_encoder
from procedural_perception.compositional.slot_matching import matched_mse


class SlotRegressor(lightning.LightningModule):
    """Batches are ``(images [B, 3, S, S], latents [B, K, n_factors] in [0, 1])``."""

    def __init__(self, n_slots: int = 2, n_factors: int = 5, image_size: int = 32, channels: int = 32,
                 hidden: int = 256, lr: float = 1e-3, encoder: str | nn.Module = "mlp",
                 backbone_lr: float | None = None) -> None:
        super().__init__()
        if isinstance(encoder, nn.Module):
            self.save_hyperparameters(ignore=["encoder"])
            self.encoder = encoder
        else:
            self.save_hyperparameters()
            self.encoder = build_slot_encoder(encoder, n_slots, n_factors, image_size, channels, hidden)

    @torch.no_grad()
    def infer(self, images: torch.Tensor, search: bool = False, **_) -> torch.Tensor:
        """Predicted latents ``[B, K, n_factors]``; there is no decoder to search with."""
        if search:
            raise ValueError("SlotRegressor has no decoder, so it cannot search; use search=False.")
        return self.encoder(images)

    def training_step(self, batch, batch_idx):
        loss = matched_mse(self.encoder(batch[0]), batch[1])
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/slot_mse", matched_mse(self.encoder(batch[0]), batch[1]), prog_bar=True)

    def test_step(self, batch, batch_idx):
        self.log("test/slot_mse", matched_mse(self.encoder(batch[0]), batch[1]))

    def configure_optimizers(self):
        backbone = getattr(self.encoder, "backbone", None)
        if backbone is None or self.hparams.backbone_lr is None:
            return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        ids = {id(p) for p in backbone.parameters()}
        rest = [p for p in self.parameters() if id(p) not in ids]
        return torch.optim.Adam([{"params": list(backbone.parameters()), "lr": self.hparams.backbone_lr},
                                 {"params": rest, "lr": self.hparams.lr}])
