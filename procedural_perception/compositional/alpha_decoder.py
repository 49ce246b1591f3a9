"""Per-slot decoder with alpha masks normalised over slots (Wiedemer et al., ICLR 2024).

Each slot is decoded on its own, by one network shared by all slots: every pixel's Fourier-feature
embedding is added to the projected slot and passed through a per-pixel MLP that outputs a colour
and an alpha logit. The image is the alpha-weighted sum of the slots' colours,

    m[b, p, k] = softmax_k(alpha_logit[b, k, p])          (masks sum to one over slots)
    image[b, p] = sum_k m[b, p, k] * rgb[b, k, p]

so a slot only ever draws through its own mask: no slot can render another slot's object, and
slots interact only where their masks overlap. The masks play the role of the cross-attention
weights of ``slot_decoder.py`` (same ``[layers=1, B, heads=1, P, K]`` layout), so the interaction
regulariser and the slot-share monitor read them unchanged; here the regulariser makes masks hard.
Cost: ``K`` times the per-pixel MLP of one slot.
"""

from __future__ import annotations

import torch
from torch import nn

from procedural_perception.compositional.slot_decoder import fourier_features


class AlphaMaskDecoder(nn.Module):
    """``slots [B, K, slot_dim]`` -> (images ``[B, 3, S, S]``, masks ``[1, B, 1, S*S, K]``).

    ``d_model``: width of the per-pixel MLP; ``layers``: its hidden layers after the input sum;
    ``frequencies``: Fourier octaves of the pixel coordinates (2^frequencies >= S draws one-pixel edges).
    Colours pass a sigmoid (the scenes lie in [0, 1]).
    """

    def __init__(self, slot_dim: int, image_size: int = 32, d_model: int = 128, layers: int = 3,
                 frequencies: int = 6):
        super().__init__()
        self.image_size = image_size
        self.register_buffer("pixels", fourier_features(image_size, frequencies), persistent=False)
        self.query = nn.Linear(self.pixels.shape[1], d_model)
        self.project = nn.Sequential(nn.Linear(slot_dim, d_model), nn.GELU(), nn.Linear(d_model, d_model))
        hidden: list[nn.Module] = []
        for _ in range(layers):
            hidden += [nn.GELU(), nn.Linear(d_model, d_model)]
        self.mlp = nn.Sequential(*hidden, nn.GELU(), nn.Linear(d_model, 4))

    def forward(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        colours, masks = self.render_pixels(slots)
        s = self.image_size
        return colours.transpose(1, 2).reshape(slots.shape[0], 3, s, s), masks

    def slot_outputs(self, slots: torch.Tensor, pixels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(colours ``[B, K, P', 3]`` in [0, 1], alpha logits ``[B, K, P']``) of every slot on its own."""
        features = self.pixels if pixels is None else self.pixels[pixels]
        hidden = self.query(features)[None, None] + self.project(slots)[:, :, None]  # [B, K, P', d]
        out = self.mlp(hidden)
        return torch.sigmoid(out[..., :3]), out[..., 3]

    def render_pixels(self, slots: torch.Tensor, pixels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Only the pixels ``pixels [P']`` (flat row-major indices; all if None) -> (colours ``[B, P', 3]``,
        masks ``[1, B, 1, P', K]``). Pixels are independent, so a subset renders exactly as in the full image."""
        rgb, logits = self.slot_outputs(slots, pixels)
        masks = logits.softmax(dim=1)  # [B, K, P']: normalised over slots
        colours = (masks.unsqueeze(-1) * rgb).sum(dim=1)  # [B, P', 3]
        return colours, masks.transpose(1, 2)[None, :, None]
