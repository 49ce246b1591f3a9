"""The DINO multi-crop augmentation: 2 global crops and N local crops of one image.

Input: one image as a float tensor ``[3, H, W]`` with values in ``[0, 1]`` (what the data modules
yield per sample). Output: a list of ``2 + n_local`` normalised float tensors, the two global crops
``[3, global_size, global_size]`` first, then the local crops ``[3, local_size, local_size]``; the
default collate turns a batch of them into a list of ``[B, 3, S, S]`` tensors.

Augmentations follow DINO: random resized crop (bicubic), horizontal flip (p 0.5), colour jitter
(brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1; p 0.8), grayscale (p 0.2), Gaussian blur
(p 1.0 on global crop 1, 0.1 on global crop 2, 0.5 on local crops), solarise (p 0.2, global crop 2
only), then ImageNet mean/std normalisation (the encoders undo nothing: they normalise the same way).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class MultiCropTransform:
    """Args:
        global_size: side of the 2 global crops (224 in the paper).
        local_size: side of the local crops (96 in the paper).
        n_local: number of local crops (8 in the paper; 0 disables them).
        global_scale: area fraction range of a global crop (0.4-1.0, the anchor scripts' value).
        local_scale: area fraction range of a local crop (0.05-0.4).
        blur_sigma: Gaussian blur sigma range in pixels of the crop (DINO: 0.1-2.0 at 224 px).
    """

    def __init__(
        self,
        global_size: int = 224,
        local_size: int = 96,
        n_local: int = 8,
        global_scale: Sequence[float] = (0.4, 1.0),
        local_scale: Sequence[float] = (0.05, 0.4),
        blur_sigma: Sequence[float] = (0.1, 2.0),
    ) -> None:
        if n_local < 0 or global_size < 1 or local_size < 1:
            raise ValueError(f"bad multi-crop sizes: global {global_size}, local {local_size}, n_local {n_local}")
        self.n_local = n_local
        self.n_crops = 2 + n_local
        self.global_size = global_size
        self.local_size = local_size
        blur_sigma = tuple(float(s) for s in blur_sigma)
        # An odd kernel covering +-3 sigma of the widest blur.
        kernel = 2 * math.ceil(3 * blur_sigma[1]) + 1
        colour = [
            v2.RandomHorizontalFlip(p=0.5),
            v2.RandomApply([v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
        ]

        def blur(p: float) -> v2.Transform:
            return v2.RandomApply([v2.GaussianBlur(kernel_size=kernel, sigma=blur_sigma)], p=p)

        normalise = [v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]

        def crop(size: int, scale: Sequence[float]) -> v2.Transform:
            resize = v2.RandomResizedCrop(
                size, scale=tuple(scale), interpolation=v2.InterpolationMode.BICUBIC, antialias=True
            )
            # Bicubic resampling overshoots [0, 1] a little; the colour ops assume that range.
            return v2.Compose([resize, v2.Lambda(_clamp_unit)])

        self.global1 = v2.Compose([crop(global_size, global_scale), *colour, blur(1.0), *normalise])
        self.global2 = v2.Compose(
            [crop(global_size, global_scale), *colour, blur(0.1), v2.RandomSolarize(threshold=0.5, p=0.2), *normalise]
        )
        self.local = v2.Compose([crop(local_size, local_scale), *colour, blur(0.5), *normalise])

    def __call__(self, image: torch.Tensor) -> list[torch.Tensor]:
        if not (isinstance(image, torch.Tensor) and image.ndim == 3 and image.shape[0] == 3):
            shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(f"multi-crop expects one float image [3, H, W] in [0, 1], got {shape}")
        image = tv_tensors.Image(image.float())
        crops = [self.global1(image), self.global2(image)]
        crops += [self.local(image) for _ in range(self.n_local)]
        # Plain tensors collate without tv_tensor metadata.
        return [c.as_subclass(torch.Tensor) for c in crops]

    def __repr__(self) -> str:
        return (f"MultiCropTransform(global_size={self.global_size}, local_size={self.local_size}, "
                f"n_local={self.n_local})")


def _clamp_unit(image: torch.Tensor) -> torch.Tensor:
    return image.clamp(0.0, 1.0)


def denormalise(crops: torch.Tensor) -> torch.Tensor:
    """Undo the ImageNet normalisation of crops ``[..., 3, H, W]`` for display, clamped to [0, 1]."""
    mean = crops.new_tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = crops.new_tensor(IMAGENET_STD).view(3, 1, 1)
    return (crops * std + mean).clamp(0, 1)
