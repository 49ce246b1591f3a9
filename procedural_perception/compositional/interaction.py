"""The interaction regulariser of the slot decoder (Brady et al., ICLR 2025; arXiv 2512.08854 Eq. 3.2).

A decoder in which every pixel depends on a single slot composes: slots seen only separately in
training render correctly together. The penalty measures how much each pixel mixes slots through
the cross-attention weights ``A[l, b, h, p, k]`` (layer, batch, head, pixel, slot):

    a[b, p, k] = mean_l sum_h A[l, b, h, p, k]
    interaction = mean_{b, p} sum_{i < j} a[b, p, i] * a[b, p, j]

It is 0 when every pixel attends to one slot only and positive when a pixel mixes slots.
"""

from __future__ import annotations

import torch


def interaction_penalty(attention: torch.Tensor) -> torch.Tensor:
    """``attention [L, B, H, P, K]`` -> scalar penalty (see the module docstring)."""
    if attention.dim() != 5:
        raise ValueError(f"attention must be [layers, batch, heads, pixels, slots], got shape {tuple(attention.shape)}.")
    a = attention.sum(dim=2).mean(dim=0)  # [B, P, K]
    # sum_{i<j} a_i a_j = ((sum_k a_k)^2 - sum_k a_k^2) / 2, all pairs in one pass.
    pairs = (a.sum(-1) ** 2 - (a**2).sum(-1)) / 2
    return pairs.mean()
