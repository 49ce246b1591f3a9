"""Per-slot upsampling decoder with alpha masks normalised over slots (Wiedemer et al., ICLR 2024).

Each slot is decoded on its own into a whole image of colour and an alpha logit by one network
shared by all slots: an MLP maps the slot to a ``channels x 4 x 4`` map that stride-2 transposed
convolutions upsample to ``S x S`` (the Burgess et al. 2018 decoder that Wiedemer et al. use per
slot). The slots are composed as in ``alpha_decoder.py``:

    m[b, p, k] = softmax_k(alpha_logit[b, k, p])          (masks sum to one over slots)
    image[b, p] = sum_k m[b, p, k] * rgb[b, k, p]

Why this decoder fits where the pixel-coordinate MLPs did not (``decoder_trial.py`` measures it):
the colours are **linear** (no sigmoid). On scenes that are mostly black, a sigmoid colour head is
driven to saturation by the background within a few hundred steps and then passes almost no
gradient to the objects, so the model stays at the all-black image (ratio 1.0 even when decoding
the ground-truth latents). The convolutions also share weights across positions, so an object
learnt at one place is drawn at every place, and a whole image per slot costs one small MLP plus
three or four cheap convolutions instead of a per-pixel MLP evaluated ``S*S`` times.
"""

from __future__ import annotations

import torch
from torch import nn


class ConvAlphaDecoder(nn.Module):
    """``slots [B, K, slot_dim]`` -> (images ``[B, 3, S, S]``, masks ``[1, B, 1, S*S, K]``).

    ``hidden``: width of the slot MLP (256, as Burgess et al.); ``channels``: feature channels of the
    ``4 x 4`` seed map and of every transposed convolution (32, as theirs). ``image_size`` must be
    ``4 * 2^n`` (n stride-2 upsamplings). The masks use the layout of the attention weights of
    ``slot_decoder.py`` (layers = heads = 1), so the interaction regulariser and the slot-share monitor
    read them unchanged.
    """

    def __init__(self, slot_dim: int, image_size: int = 32, hidden: int = 256, channels: int = 32):
        super().__init__()
        upsamplings = (image_size // 4).bit_length() - 1
        if image_size < 8 or 4 * 2**upsamplings != image_size:
            raise ValueError(f"image_size must be 4 * 2^n with n >= 1 (8, 16, 32, 64, ...), got {image_size}.")
        self.image_size, self.channels = image_size, channels
        self.seed = nn.Sequential(nn.Linear(slot_dim, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU(),
                                  nn.Linear(hidden, channels * 16), nn.ELU())
        layers: list[nn.Module] = []
        for _ in range(upsamplings - 1):
            layers += [nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1), nn.ELU()]
        self.upsample = nn.Sequential(*layers, nn.ConvTranspose2d(channels, 4, 4, stride=2, padding=1))

    def slot_outputs(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(colours ``[B, K, 3, S, S]`` (linear, unclamped), alpha logits ``[B, K, S, S]``) of every slot alone."""
        batch, k, dim = slots.shape
        seed = self.seed(slots.reshape(batch * k, dim)).view(batch * k, self.channels, 4, 4)
        out = self.upsample(seed).view(batch, k, 4, self.image_size, self.image_size)
        return out[:, :, :3], out[:, :, 3]

    def forward(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rgb, logits = self.slot_outputs(slots)
        masks = logits.softmax(dim=1)  # [B, K, S, S]: normalised over slots
        images = (masks.unsqueeze(2) * rgb).sum(dim=1)  # [B, 3, S, S]
        return images, masks.flatten(2).transpose(1, 2)[None, :, None]

    def render_pixels(self, slots: torch.Tensor, pixels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The pixels ``pixels [P']`` (flat row-major indices; all if None) of the full render -> (colours
        ``[B, P', 3]``, masks ``[1, B, 1, P', K]``). The convolutions draw the whole image anyway, so a
        subset saves no compute: train this decoder on full images (``train_pixels=None``)."""
        images, masks = self(slots)
        colours = images.flatten(2).transpose(1, 2)  # [B, S*S, 3]
        if pixels is None:
            return colours, masks
        return colours[:, pixels], masks[:, :, :, pixels]
