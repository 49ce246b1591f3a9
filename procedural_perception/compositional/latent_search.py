"""Gradient-based search: invert a decoder by optimising the slot latents of each image.

The encoder's output is only a starting point; on out-of-distribution images it can be wrong even
when the decoder renders the right answer perfectly. Search runs Adam on the latents (decoder
frozen) to minimise each image's reconstruction error and keeps, per image, the latents with the
lowest error seen, so the result is never worse than the start (the "System 2" inference of
arXiv 2512.08854).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class SearchResult:
    slots: torch.Tensor  # [B, K, D] best latents found
    initial_error: torch.Tensor  # [B] per-image MSE at the start
    final_error: torch.Tensor  # [B] per-image MSE of the returned latents


def latent_search(
    render: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    init: torch.Tensor,
    steps: int = 100,
    lr: float = 0.05,
    bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> SearchResult:
    """Minimise ``mean((render(z) - images)^2)`` per image over ``z``, from ``init [B, K, D]``.

    ``render`` maps latents to images ``[B, 3, S, S]`` (the decoder; its parameters are not updated);
    ``steps``: Adam iterations; ``lr``: Adam step size in latent units; ``bounds``: optional (low, high),
    each broadcastable to ``init``, that the latents are clamped to after every step; pass the range of
    the ID latents so that the search stays where the decoder was trained (Adam's normalised steps
    otherwise let directions the decoder ignores drift without limit). Each image's error depends
    only on its own latents and Adam is element-wise, so images are searched independently, in one batch.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}.")
    z = init.detach().clone().requires_grad_(True)
    optimiser = torch.optim.Adam([z], lr=lr)
    with torch.enable_grad():
        best = init.detach().clone()
        best_err = initial = _errors(render(z), images).detach()
        for _ in range(steps):
            errors = _errors(render(z), images)
            improved = errors.detach() < best_err
            best[improved], best_err = z.detach()[improved], torch.where(improved, errors.detach(), best_err)
            optimiser.zero_grad(set_to_none=True)
            # Only z is in the optimiser; gradients reaching decoder parameters are never applied.
            errors.sum().backward(inputs=[z])
            optimiser.step()
            if bounds is not None:
                with torch.no_grad():
                    z.copy_(torch.maximum(torch.minimum(z, bounds[1]), bounds[0]))
        final = _errors(render(z.detach()), images).detach()
        improved = final < best_err
        best[improved], best_err = z.detach()[improved], torch.where(improved, final, best_err)
    return SearchResult(best, initial, best_err)


def _errors(recon: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return ((recon - images) ** 2).flatten(1).mean(1)
