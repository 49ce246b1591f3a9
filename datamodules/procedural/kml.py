"""Shaders KML, "K-Means Leaves" (Rodriguez-Munoz et al., 2025): one program image cuts two others.

For program images s1, s2, s3: resize s1 to 256 x 256, run 2-means on its RGB pixels (initial centres:
the first and last unique colours, 3 Lloyd iterations), take the binary mask m = (label == 0), blur it
(3x3 box), resize it bilinearly to the output size, blur again, and composite s2 * m + s3 * (1 - m).

Everything is batched over images; no per-pixel Python. The resize runs on 8-bit images (torch's
uint8 bilinear kernel, ~10x faster than float here), so pixels are integer levels and the centre sums
are sums of integers below 2^24, exact in float32: the mask does not depend on the reduction order,
hence not on thread counts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Side of the image the 2-means runs on (the anchor's working resolution).
KMEANS_SIZE = 256
# Lloyd iterations of the anchor (K=2 converges in a few steps on these images).
KMEANS_ITERATIONS = 3
# The centres are fitted on every FIT_STRIDE-th pixel of each row and column (a 64 x 64 grid of the
# 256 x 256 image: 4,096 colours pin two centres to well under one 8-bit level), then every one of
# the 256 x 256 pixels is labelled with them. Cuts the cost of a mask ~3x; the anchor fitted on all.
FIT_STRIDE = 4


def kmeans2_mask(
    images: torch.Tensor, size: int = KMEANS_SIZE, iterations: int = KMEANS_ITERATIONS, fit_stride: int = FIT_STRIDE
) -> torch.Tensor:
    """Binary 2-means mask: images uint8 [B, 3, H, W] (or float in [0, 1]) -> float [B, 1, size, size] in {0, 1}.

    1 where a pixel belongs to cluster 0, the cluster started at the lexicographically first colour
    (the first row of ``np.unique(pixels, axis=0)``); cluster 1 starts at the last one. The Lloyd
    iterations run on the ``fit_stride`` subgrid (1: all pixels), the final labels cover every pixel.
    """
    if images.dtype != torch.uint8:
        images = (images * 255.0).round_().clamp_(0.0, 255.0).to(torch.uint8)
    levels = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False).float()
    pixels = levels.flatten(2)  # [B, 3, N]
    key = pixels[:, 0] * 65536.0 + pixels[:, 1] * 256.0 + pixels[:, 2]  # lexicographic order, exact < 2^24
    c0 = pixels.gather(2, key.argmin(dim=1)[:, None, None].expand(-1, 3, 1))  # [B, 3, 1]
    c1 = pixels.gather(2, key.argmax(dim=1)[:, None, None].expand(-1, 3, 1))
    fit = levels[:, :, ::fit_stride, ::fit_stride].flatten(2)
    for _ in range(iterations):
        c0, c1 = _lloyd_step(fit, c0, c1)
    return _nearer_first(pixels, c0, c1).float().view(-1, 1, size, size)


def _lloyd_step(pixels: torch.Tensor, c0: torch.Tensor, c1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Assign integer-level pixels [B, 3, N] to the nearer centre, return the new centres [B, 3, 1]."""
    weight = _nearer_first(pixels, c0, c1).to(pixels.dtype)[:, None]  # [B, 1, N]
    n0 = weight.sum(dim=2, keepdim=True)
    s0 = (pixels * weight).sum(dim=2, keepdim=True)
    s_all = pixels.sum(dim=2, keepdim=True)
    n_all = float(pixels.shape[2])
    # An empty cluster keeps its previous centre.
    c0 = torch.where(n0 > 0, s0 / n0.clamp_min(1.0), c0)
    c1 = torch.where(n0 < n_all, (s_all - s0) / (n_all - n0).clamp_min(1.0), c1)
    return c0, c1


def _nearer_first(pixels: torch.Tensor, c0: torch.Tensor, c1: torch.Tensor) -> torch.Tensor:
    """bool [B, N]: pixel closer (squared RGB distance) to c0 than to c1; ties go to c0.

    |p - c0|^2 <= |p - c1|^2  <=>  p . (c0 - c1) >= (|c0|^2 - |c1|^2) / 2: one projection per pixel.
    """
    a = c0 - c1  # [B, 3, 1]
    threshold = 0.5 * ((c0 * c0).sum(dim=1) - (c1 * c1).sum(dim=1))  # [B, 1]
    projection = pixels[:, 0] * a[:, 0]
    projection.addcmul_(pixels[:, 1], a[:, 1]).addcmul_(pixels[:, 2], a[:, 2])
    return projection >= threshold


def box_blur3(x: torch.Tensor) -> torch.Tensor:
    """3x3 mean over the pixels inside the image: float [B, C, H, W] -> [B, C, H, W].

    Equals ``F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)`` (border pixels average
    their 4 or 6 in-image neighbours), computed as two separable 3-tap sums and one division by the
    in-image count: ~7x faster than avg_pool2d on one CPU thread. On the binary 2-means mask the sums
    are small integers, so the result is bit-identical; on soft masks it differs by float rounding.
    """
    h, w = x.shape[-2:]
    rows = x.clone()
    rows[..., :, 1:] += x[..., :, :-1]
    rows[..., :, :-1] += x[..., :, 1:]
    out = rows.clone()
    out[..., 1:, :] += rows[..., :-1, :]
    out[..., :-1, :] += rows[..., 1:, :]
    count_h = torch.full((h,), 3.0, dtype=x.dtype)
    count_w = torch.full((w,), 3.0, dtype=x.dtype)
    count_h[[0, -1]] = 2.0 if h > 1 else 1.0
    count_w[[0, -1]] = 2.0 if w > 1 else 1.0
    return out.div_(count_h[:, None] * count_w)


def soften_mask(mask: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
    """3x3 box blur, bilinear resize to ``out_size``, 3x3 box blur: [B, 1, S, S] -> [B, 1, H, W] in [0, 1]."""
    m = F.interpolate(box_blur3(mask), size=out_size, mode="bilinear", align_corners=False)
    return box_blur3(m)


def kml_mask(s1: torch.Tensor) -> torch.Tensor:
    """The soft KML mask of images s1, uint8 [B, 3, H, W] (or float in [0, 1]) -> float [B, 1, H, W] in [0, 1]."""
    return soften_mask(kmeans2_mask(s1), tuple(s1.shape[-2:]))


def kml(s1: torch.Tensor, s2: torch.Tensor, s3: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's formula on float [B, 3, H, W] images -> (s2 * m + s3 * (1 - m), soft mask m [B, 1, H, W])."""
    m = kml_mask(s1)
    return s2 * m + s3 * (1.0 - m), m


# The stream composites 8-bit images in 16-bit integers (half the memory traffic of float32, ~2x
# faster here): the soft mask is quantised to MASK_LEVELS steps, so that mask * (s2 - s3) fits int16.
MASK_SHIFT = 7
MASK_LEVELS = 1 << MASK_SHIFT


def quantize_mask(m: torch.Tensor) -> torch.Tensor:
    """Soft mask float [B, 1, H, W] in [0, 1] -> int16 in [0, MASK_LEVELS]."""
    return (m * MASK_LEVELS).round_().to(torch.int16)


def composite_levels_(s2: torch.Tensor, s3: torch.Tensor, mask_q: torch.Tensor) -> torch.Tensor:
    """In place on ``s2``: s2 * m + s3 * (1 - m) with m = mask_q / MASK_LEVELS, all int16 8-bit levels.

    s2, s3 int16 [B, 3, H, W] in [0, 255], mask_q int16 [B, 1, H, W] in [0, MASK_LEVELS]. Rounded to the
    nearest level, so within half a level of the float formula with the quantised mask.
    """
    delta = s2.sub_(s3).mul_(mask_q)  # |delta| <= 255 * 128 < 2^15
    return delta.add_(MASK_LEVELS // 2).bitwise_right_shift_(MASK_SHIFT).add_(s3)
