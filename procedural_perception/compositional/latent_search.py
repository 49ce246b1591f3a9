"""Gradient-based search as MAP inference: invert a decoder by optimising each image's slot latents.

The encoder's output is only a starting point; on out-of-distribution images it can be wrong even
when the decoder renders the right answer perfectly. Search minimises, per image, the objective the
model was trained with, in the same units (the "System 2" inference of arXiv 2512.08854):

    E(z) = mean_pixels (render(z) - x)^2  +  prior(z)

``prior`` is the negative log prior of the latents weighted like the training loss's KL term
(:func:`gaussian_prior`): without it, directions of ``z`` the decoder ignores drift freely (Adam
normalises every coordinate's step) and a readout meets latents it never saw. Steps are taken in
units of ``scale`` (the ID spread of each slot coordinate: ``z = init + scale * w``, Adam on ``w``)
and every slot is clamped to its own box ``bounds`` (ID range per slot and dimension). Per image the
lowest objective seen is kept, so the result is never worse than the start. Each image's objective
depends only on its own latents and Adam is element-wise, so images are searched independently, in
one batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class SearchResult:
    slots: torch.Tensor  # [B, K, D] best latents found
    initial_error: torch.Tensor  # [B] objective E at the start
    final_error: torch.Tensor  # [B] objective E of the returned latents
    final_recon: torch.Tensor  # [B] per-pixel mean squared error of the returned latents


def gaussian_prior(weight: float, mean: torch.Tensor | None = None,
                   logvar: torch.Tensor | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """``z [B, K, D]`` -> ``[B]``: ``weight * 0.5 * sum ((z - mean)^2 / var)``.

    ``mean = logvar = None``: the VAE's prior N(0, I) (``weight`` = the KL weight beta, so that
    E is the training objective of a point estimate); ``mean``, ``logvar`` ``[B, K, D]``: the encoder's
    posterior, a pull towards its estimate that is strong where the encoder is certain."""
    def prior(z: torch.Tensor) -> torch.Tensor:
        centred = z if mean is None else z - mean
        precision = 1.0 if logvar is None else (-logvar).exp()
        return weight * 0.5 * (centred**2 * precision).flatten(1).sum(1)

    return prior


def latent_search(
    render: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    init: torch.Tensor,
    steps: int = 100,
    lr: float = 0.05,
    bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
    scale: torch.Tensor | None = None,
    prior: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> SearchResult:
    """Minimise ``E(z)`` (module docstring) per image over ``z``, from ``init [B, K, D]``.

    ``render``: latents -> images ``[B, 3, S, S]`` (its parameters are not updated); ``steps``: Adam
    iterations; ``lr``: Adam step size in units of ``scale`` (``[K, D]`` or broadcastable; 1 if None);
    ``bounds``: (low, high), each broadcastable to ``init`` (``[K, D]`` for one box per slot), applied
    to the start and after every step; ``prior``: ``z -> [B]`` (None: reconstruction only).
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}.")
    scale = torch.ones_like(init[0]) if scale is None else scale.to(init).clamp_min(1e-6)
    origin = init.detach().clone()
    if bounds is not None:  # start inside the box too, so every returned slot lies within its bounds
        origin = torch.maximum(torch.minimum(origin, bounds[1].to(init)), bounds[0].to(init))
    w = torch.zeros_like(origin, requires_grad=True)
    optimiser = torch.optim.Adam([w], lr=lr)

    def objective(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        recon = ((render(z) - images) ** 2).flatten(1).mean(1)
        return recon + (prior(z) if prior is not None else 0.0), recon

    with torch.enable_grad():
        best = origin.clone()
        best_err, best_recon = (v.detach() for v in objective(origin))
        initial = best_err.clone()
        for step in range(steps + 1):
            z = origin + scale * w
            errors, recon = objective(z)
            improved = errors.detach() < best_err
            best[improved] = z.detach()[improved]
            best_err = torch.where(improved, errors.detach(), best_err)
            best_recon = torch.where(improved, recon.detach(), best_recon)
            if step == steps:
                break
            optimiser.zero_grad(set_to_none=True)
            # Only w is in the optimiser; gradients reaching decoder parameters are never applied.
            errors.sum().backward(inputs=[w])
            optimiser.step()
            if bounds is not None:
                with torch.no_grad():
                    low, high = ((b.to(init) - origin) / scale for b in bounds)
                    w.copy_(torch.maximum(torch.minimum(w, high), low))
    return SearchResult(best, initial, best_err, best_recon)
