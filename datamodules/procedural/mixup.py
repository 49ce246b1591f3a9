"""Shaders Mixup (Baradad et al., 2022): a pixel-wise convex combination of program images.

Weights ~ Dirichlet(1, ..., 1), drawn as normalised Exponential(1) variables (a Gamma(1) draw is
-log U), from an explicit generator so a block's samples are reproducible.
"""

from __future__ import annotations

import torch

# Images per mixed sample in the paper (ConvexSamplesMixer default of the anchor).
MIXUP_IMAGES = 6


def dirichlet_weights(n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """float32 [n, k]: n draws from Dirichlet(1, ..., 1) over k images (rows sum to 1)."""
    u = torch.rand(n, k, generator=generator, dtype=torch.float64)
    gamma = -torch.log1p(-u)  # Exponential(1) == Gamma(1, 1); log1p(-u) avoids log(0)
    return (gamma / gamma.sum(dim=1, keepdim=True)).float()


def convex_mix(pool: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor, workspace: dict | None = None) -> torch.Tensor:
    """sum_j weights[:, j] * pool[indices[:, j]] -> float [n, 3, H, W] (in the pool's value scale).

    pool [P, 3, H, W] (uint8 or float), indices long [n, k], weights [n, k]. Accumulated image by image
    (an elementwise multiply-add, not a reduction), so the result does not depend on the thread
    count: samples are byte-identical in the main process and in single-threaded workers.
    ``workspace`` (a dict kept between calls) holds reusable buffers: fresh multi-MB tensors cost page
    faults that were measured to dominate this operation.
    """
    workspace = {} if workspace is None else workspace
    shape = (len(indices), *pool.shape[1:])
    if workspace.get("mix_out") is None or workspace["mix_out"].shape != shape:
        workspace["mix_out"] = torch.empty(shape, dtype=torch.float32)
        workspace["mix_in"] = torch.empty(shape, dtype=pool.dtype)
    out, gathered = workspace["mix_out"], workspace["mix_in"]
    torch.index_select(pool, 0, indices[:, 0], out=gathered)
    torch.mul(gathered, weights[:, 0, None, None, None], out=out)
    for j in range(1, indices.shape[1]):
        torch.index_select(pool, 0, indices[:, j], out=gathered)
        out.addcmul_(gathered, weights[:, j, None, None, None])
    return out
