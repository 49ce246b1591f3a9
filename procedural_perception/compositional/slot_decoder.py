"""Cross-attention slot decoder: pixels query the slots, pixels never attend to each other.

Every pixel starts from a Fourier-feature embedding of its own coordinates and cross-attends
(multi-head) to the ``K`` projected slots, ``layers`` times, each followed by a per-pixel MLP. With
no self-attention between pixels, a pixel can only combine slots through its attention weights,
which the interaction regulariser (``procedural_perception/compositional/interaction.py``) reads and pushes towards
one slot per pixel. The decoder returns every layer's attention weights for that purpose.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def fourier_features(image_size: int, frequencies: int) -> torch.Tensor:
    """``[S*S, 2 + 4*frequencies]``: pixel-centre coordinates in [0, 1] and sin/cos at 2^f * pi, f < frequencies."""
    ramp = (torch.arange(image_size, dtype=torch.float32) + 0.5) / image_size
    yy, xx = torch.meshgrid(ramp, ramp, indexing="ij")
    coords = torch.stack([xx, yy], dim=-1).view(-1, 2)  # [P, 2], row-major like the image
    scales = (2.0 ** torch.arange(frequencies)) * math.pi  # [F]
    angles = coords[:, :, None] * scales  # [P, 2, F]
    return torch.cat([coords, angles.sin().flatten(1), angles.cos().flatten(1)], dim=1)


class CrossAttentionBlock(nn.Module):
    """Pre-norm cross-attention from pixel queries to slots, then a per-pixel MLP (both residual)."""

    def __init__(self, d_model: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm_q, self.norm_kv, self.norm_mlp = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attention = nn.MultiheadAttention(d_model, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d_model, mlp_ratio * d_model), nn.GELU(), nn.Linear(mlp_ratio * d_model, d_model))

    def forward(self, queries: torch.Tensor, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``queries [B, P, d]``, ``slots [B, K, d]`` -> (``[B, P, d]``, attention ``[B, heads, P, K]``)."""
        kv = self.norm_kv(slots)
        update, weights = self.attention(self.norm_q(queries), kv, kv, need_weights=True, average_attn_weights=False)
        queries = queries + update
        return queries + self.mlp(self.norm_mlp(queries)), weights


class SlotDecoder(nn.Module):
    """``slots [B, K, slot_dim]`` -> (images ``[B, 3, S, S]``, attention ``[layers, B, heads, S*S, K]``).

    ``d_model``: width of pixel queries and projected slots; ``heads``: attention heads per layer;
    ``layers``: cross-attention blocks; ``frequencies``: Fourier octaves of the pixel coordinates
    (enough to draw edges one pixel wide at 2^frequencies >= S); ``mlp_ratio``: MLP width / d_model;
    ``out_hidden``: width of the per-pixel MLP output head (two hidden layers, as the 3-layer head of
    Brady et al.'s decoder; 0: a single linear layer).
    """

    def __init__(self, slot_dim: int, image_size: int = 32, d_model: int = 64, heads: int = 4, layers: int = 2,
                 frequencies: int = 6, mlp_ratio: int = 2, out_hidden: int = 0):
        super().__init__()
        self.image_size = image_size
        self.register_buffer("pixels", fourier_features(image_size, frequencies), persistent=False)
        self.query = nn.Sequential(nn.Linear(self.pixels.shape[1], d_model), nn.GELU(), nn.Linear(d_model, d_model))
        self.project = nn.Sequential(nn.Linear(slot_dim, d_model), nn.GELU(), nn.Linear(d_model, d_model))
        self.blocks = nn.ModuleList(CrossAttentionBlock(d_model, heads, mlp_ratio) for _ in range(layers))
        head: list[nn.Module] = [nn.LayerNorm(d_model)]
        if out_hidden:
            head += [nn.Linear(d_model, out_hidden), nn.GELU(), nn.Linear(out_hidden, out_hidden), nn.GELU()]
        self.out = nn.Sequential(*head, nn.Linear(out_hidden or d_model, 3))

    def forward(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        colours, weights = self.render_pixels(slots)
        s = self.image_size
        return colours.transpose(1, 2).reshape(slots.shape[0], 3, s, s), weights

    def render_pixels(self, slots: torch.Tensor, pixels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Only the pixels ``pixels [P']`` (flat row-major indices; all if None) -> (colours ``[B, P', 3]``,
        attention ``[layers, B, heads, P', K]``). Pixels never interact, so a subset is rendered
        exactly as in the full image (training on a random subset is an unbiased, cheaper loss)."""
        features = self.pixels if pixels is None else self.pixels[pixels]
        queries = self.query(features).expand(slots.shape[0], -1, -1)
        kv = self.project(slots)
        weights = []
        for block in self.blocks:
            queries, w = block(queries, kv)
            weights.append(w)
        return self.out(queries), torch.stack(weights)
