"""Which timm backbones DINO trains, and the arguments each kind is built with.

Two kinds (DINO trains both; its reference code takes ViTs and torchvision ResNets):

* **ViT**: a timm ``VisionTransformer`` (timm modules ``vision_transformer`` and ``deit``). Its shape can
  be overridden (``patch_size``, ``embed_dim``, ``depth``, ``num_heads``: the cpu profile shrinks it
  this way) and it is built with ``dynamic_img_size`` and ``img_size`` so that one network takes the
  global and the local crops. Embedding: the CLS token ``[B, D]``; dense features: the patch tokens.
* **convnet**: any other timm network whose ``forward_features`` is a feature map ``[B, C, h, w]``
  (``resnet18``, ``resnet50``, ``resnet10t``, ``resnet26d``, ``convnext_atto``, ``regnetx_002``, ...).
  Built with ``num_classes=0``, so ``forward`` is the global-average-pooled ``[B, num_features]``
  feature (DINO replaces the ResNet's ``fc`` by an identity and puts its head on the 2048-d pooled
  feature of a ResNet-50). It takes any input size, so multi-crop needs nothing more. Dense features:
  the last feature map, whose effective stride (timm ``feature_info[-1]["reduction"]``, 32 for a
  ResNet) plays the ViT's patch size.

Both kinds expose their embedding width as timm's ``num_features`` (equal to ``embed_dim`` for a ViT).
"""

from __future__ import annotations

import difflib

import timm
import torch
from torch import nn

# DINO arguments that shape a ViT and mean nothing to a convnet.
VIT_ONLY_ARGUMENTS = ("patch_size", "embed_dim", "depth", "num_heads")
# timm modules that define VisionTransformer networks (deit's distilled ViT is one, with two prefix tokens).
VIT_MODULES = ("vision_transformer", "deit")


def check_arch(arch: str) -> None:
    """Raise a ``ValueError`` naming close timm names when ``arch`` is not a timm model."""
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.7)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"model.arch={arch!r} is not a timm architecture.{hint} Examples: "
                         "vit_tiny_patch16_224, vit_small_patch16_224 (ViTs), resnet18, resnet50 (convnets).")


def is_vit(arch: str) -> bool:
    """True for a timm VisionTransformer architecture, False for any other (treated as a convnet)."""
    check_arch(arch)
    return timm.models.is_model_in_modules(arch, VIT_MODULES)


def check_vit_only_arguments(arch: str, **values: object) -> None:
    """Refuse a ViT-only argument (``VIT_ONLY_ARGUMENTS``) given with a convnet ``arch``.

    ``values``: the DINO arguments by name; ``None`` means "not given".
    """
    if is_vit(arch):
        return
    given = [k for k in VIT_ONLY_ARGUMENTS if values.get(k) is not None]
    if given:
        settings = ", ".join(f"model.{k}={values[k]}" for k in given)
        raise ValueError(
            f"model.arch={arch} is a convolutional network, but {settings} only applies to a ViT. Remove "
            f"{' and '.join('model.' + k for k in given)} (the convnet's width and depth come from its "
            "timm name: pick e.g. resnet10t, resnet18 or resnet50), or choose a ViT arch."
        )


def backbone_arguments(arch: str, global_crop_size: int, **vit_overrides: int | None) -> dict:
    """The ``timm.create_model(arch, **kwargs)`` arguments (without drop-path) for either kind.

    ``vit_overrides``: the ``VIT_ONLY_ARGUMENTS`` (``None`` keeps the arch's own value).
    """
    if not is_vit(arch):
        return {"num_classes": 0}  # the pooled feature, no classifier
    return {
        "num_classes": 0,
        "dynamic_img_size": True,  # local crops are smaller than the position-embedding grid
        "img_size": global_crop_size,  # the position-embedding grid; other sizes are interpolated
        **{k: v for k, v in vit_overrides.items() if v is not None},
    }


def is_vit_backbone(net: nn.Module) -> bool:
    """True when ``net`` is a timm VisionTransformer (tokens), False for a feature-map network."""
    return isinstance(net, timm.models.VisionTransformer)


def feature_stride(net: nn.Module) -> int:
    """Input pixels per cell of a convnet's last feature map (timm ``feature_info``; 32 for a ResNet)."""
    info = getattr(net, "feature_info", None)
    if not info:
        raise ValueError(f"{type(net).__name__} has no timm feature_info: its feature-map stride is unknown.")
    last = info[-1] if isinstance(info, list) else info.info[-1]
    return int(last["reduction"])


@torch.no_grad()
def check_feature_map(net: nn.Module, arch: str, side: int) -> None:
    """Refuse a non-ViT network that cannot take ``side`` px crops (the smallest crop DINO feeds it), or
    whose ``forward_features`` is not ``[B, num_features, h, w]`` (a Swin returns channels last, for
    example): the encoders read the last feature map as ``[B, C, h, w]``.

    One forward of a zero image ``[1, 3, side, side]`` in eval mode, so no BatchNorm statistic moves.
    """
    was_training = net.training
    net.eval()
    try:
        out = net.forward_features(torch.zeros(1, 3, side, side))
    except Exception as err:  # noqa: BLE001 - any failure means the network does not fit
        raise ValueError(
            f"model.arch={arch} cannot take the {side} px crops of this configuration ({type(err).__name__}: "
            f"{err}). Raise model.local_crop_size / model.global_crop_size (a ConvNeXt needs at least 32 px), or "
            "pick a timm ViT or a convnet with a [B, C, h, w] feature map (e.g. resnet18)."
        ) from err
    finally:
        net.train(was_training)
    if out.ndim != 4 or out.shape[1] != net.num_features:
        raise ValueError(f"model.arch={arch}: forward_features returns shape {tuple(out.shape)}, not "
                         f"[B, {net.num_features}, h, w]; only ViTs and convnets with channels-first feature "
                         "maps are supported. Pick e.g. resnet18, convnext_atto or a vit_* arch.")
