"""How the decoder's pixels share the slots: the monitor that catches a collapsed slot model.

A slot decoder can draw every object from one slot (softmax over slots makes that a zero-penalty
solution for the interaction regulariser); the model then still reconstructs but its slots no
longer describe one object each. The measure: each object pixel belongs to the slot with the
largest weight (attention or alpha mask); a slot's *share* is the fraction of the image's object
pixels it owns. With ``n_objects`` objects (and possibly spare slots such as a background slot),
the **min slot share** is the ``n_objects``-th largest share: about ``1/n_objects`` when each object
has its own slot, 0 when fewer than ``n_objects`` slots draw all the objects.
"""

from __future__ import annotations

import torch


def object_pixels(images: torch.Tensor, threshold: float = 0.3) -> torch.Tensor:
    """``images [B, 3, S, S]`` (objects on a black background) -> ``[B, S*S]`` bool: the channel sum exceeds
    ``threshold`` (an anti-aliased edge pixel a third covered by a saturated colour counts)."""
    return images.sum(1).flatten(1) > threshold


def slot_shares(weights: torch.Tensor, objects: torch.Tensor) -> torch.Tensor:
    """``weights [B, P, K]`` (per-pixel slot weights), ``objects [B, P]`` bool -> ``[B, K]`` shares of the
    object pixels each slot owns (rows sum to 1 where an image has object pixels, else 0)."""
    owner = torch.nn.functional.one_hot(weights.argmax(-1), weights.shape[-1]).float()  # [B, P, K]
    counts = (owner * objects.unsqueeze(-1).float()).sum(1)  # [B, K]
    return counts / objects.sum(1, keepdim=True).clamp_min(1)


def min_slot_share(weights: torch.Tensor, objects: torch.Tensor, n_objects: int) -> torch.Tensor:
    """``[B]``: the ``n_objects``-th largest slot share of each image (see the module docstring)."""
    shares = slot_shares(weights, objects)
    if not 1 <= n_objects <= shares.shape[1]:
        raise ValueError(f"n_objects must be in [1, {shares.shape[1]}] (the number of slots), got {n_objects}.")
    return shares.topk(n_objects, dim=1).values[:, -1]
