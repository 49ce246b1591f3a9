"""The DINO projection head: MLP -> L2-normalise -> weight-normalised linear layer of ``out_dim`` logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


class DINOHead(nn.Module):
    """``forward(x [N, in_dim]) -> logits [N, out_dim]``.

    ``nlayers`` linear layers (GELU between them) map the backbone embedding to a ``bottleneck_dim``
    vector, which is L2-normalised and scored against ``out_dim`` prototypes by a weight-normalised
    linear layer. With ``norm_last_layer`` the weight-norm magnitude ``g`` is fixed to 1, so every
    prototype is a unit vector and the logits are cosine similarities; DINO reports this stabilises
    training of large ``out_dim`` heads.

    Args:
        in_dim: backbone embedding width (384 for ViT-S).
        out_dim: number of prototypes (65536 in the paper).
        hidden_dim: width of the hidden layers (2048 in DINO).
        bottleneck_dim: width of the normalised vector before the last layer (256 in DINO).
        nlayers: number of layers before the last layer (3 in DINO).
        norm_last_layer: fix the weight-norm magnitude of the last layer to 1 (True in the paper).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        nlayers: int = 3,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        if nlayers < 1:
            raise ValueError(f"nlayers must be >= 1, got {nlayers}")
        dims = [in_dim] + [hidden_dim] * (nlayers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            layers.append(nn.Linear(d_in, d_out))
            if i < nlayers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        self.mlp.apply(_init_linear)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        magnitude = self.last_layer.parametrizations.weight.original0  # g, shape [out_dim, 1]
        with torch.no_grad():
            magnitude.fill_(1.0)
        magnitude.requires_grad_(not norm_last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1, p=2)
        return self.last_layer(x)


def _init_linear(module: nn.Module) -> None:
    # Truncated normal (std 0.02) with zero bias, as timm initialises ViT linear layers.
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
