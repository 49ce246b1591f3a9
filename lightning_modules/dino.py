"""DINO self-distillation as a LightningModule: a student ViT (or convnet) trained to match an EMA teacher.

The student sees all crops of an image (2 global + N local), the teacher only the 2 global crops;
the loss (``dino_loss.py``) pulls the student's output on every crop towards the teacher's centred,
sharpened output on the other global crops. Only the student is optimised; the teacher is an
exponential moving average of it and is the model that is evaluated afterwards
(:attr:`DINO.teacher_backbone`).

Schedules (learning rate, weight decay, teacher momentum, teacher temperature, last-layer freeze)
are pure functions of ``trainer.global_step``, and the loss centre is a buffer, so a checkpoint
holds everything a resumed run needs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import timm
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torch import nn
from torchvision.utils import make_grid

from lightning_modules.backbones import (
    VIT_ONLY_ARGUMENTS,
    backbone_arguments,
    check_feature_map,
    check_vit_only_arguments,
    is_vit,
)
from lightning_modules.dino_head import DINOHead
from lightning_modules.dino_loss import DINOLoss, collapse_monitors, embedding_std
from lightning_modules.multicrop import MultiCropTransform, denormalise
from lightning_modules.schedules import cosine_schedule, scaled_lr

# adamw: DINO's optimizer for ViTs (and this project's default); sgd: momentum 0.9, DINO's for convnets.
OPTIMIZERS = ("adamw", "sgd")


class NonFiniteLossError(RuntimeError):
    """The DINO loss became NaN or infinite; training stops instead of writing a broken checkpoint."""


class MultiCropNetwork(nn.Module):
    """Backbone + head applied to a list of crops.

    ``forward(crops)`` with ``crops`` a list of ``[B, 3, S_i, S_i]`` tensors returns
    ``(embeddings [len(crops) * B, D], logits [len(crops) * B, K])`` in crop-major order (crop 0 of
    every image, then crop 1, ...). Consecutive crops of the same size go through the backbone as one
    batch (a ViT with ``dynamic_img_size`` handles each size, a convnet any size; a convnet's BatchNorm
    statistics are per such batch, as in DINO), the head runs once on all of them.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, crops: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        embeddings = []
        start = 0
        while start < len(crops):
            end = start + 1
            while end < len(crops) and crops[end].shape[-2:] == crops[start].shape[-2:]:
                end += 1
            embeddings.append(self.backbone(torch.cat(list(crops[start:end]))))
            start = end
        embedding = torch.cat(embeddings)
        return embedding, self.head(embedding)


class DINO(L.LightningModule):
    """DINO with a timm ViT (or convnet) student and EMA teacher. Paper values are the defaults.

    Architecture:
        arch: timm model name (``vit_small_patch16_224`` = ViT-S/16), built with ``pretrained=False``;
            a convolutional timm network (``resnet18``, ``resnet50``, ``convnext_atto``, ...) trains too,
            its global-average-pooled feature feeding the head (``backbones.py``).
        patch_size, embed_dim, depth, num_heads: override the timm ViT's value when given
            (the cpu profile and the tests shrink the ViT this way); ``None`` keeps the arch's own.
            ViT only: giving one with a convnet arch is a ``ValueError`` naming it.
        drop_path_rate: stochastic depth of the student (0.1); the teacher has none.
        out_dim, head_hidden_dim, head_bottleneck_dim, head_nlayers, norm_last_layer: the head.
    Crops (the transform the data module applies, see ``train_transform``):
        global_crop_size, local_crop_size, n_local_crops, global_crop_scale, local_crop_scale, blur_sigma.
    Optimisation:
        optimizer: ``adamw`` (DINO's choice for ViTs) or ``sgd`` (momentum 0.9; DINO's recipe for a
            ResNet-50 uses it with base_lr 0.03 and a constant weight decay of 1e-4).
        base_lr: learning rate per 256 images; the peak lr is ``base_lr * global_batch / 256``.
        min_lr: lr at the end of the cosine; warmup_epochs: linear lr warm-up from 0.
        weight_decay -> weight_decay_end: cosine schedule (biases and 1-D parameters get none).
        clip_grad: per-parameter-tensor gradient norm clip (0 disables).
        freeze_last_layer_epochs: the head's last layer gets no update for this many epochs.
    Teacher and loss:
        momentum_teacher: EMA momentum at step 0, cosine to 1 at the end.
        teacher_temp, warmup_teacher_temp, warmup_teacher_temp_epochs, student_temp, center_momentum.
    Logging:
        grid_images: number of images whose crops are drawn in the TensorBoard grid at the start.
    """

    def __init__(
        self,
        arch: str = "vit_small_patch16_224",
        patch_size: int | None = None,
        embed_dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        drop_path_rate: float = 0.1,
        out_dim: int = 65536,
        head_hidden_dim: int = 2048,
        head_bottleneck_dim: int = 256,
        head_nlayers: int = 3,
        norm_last_layer: bool = True,
        global_crop_size: int = 224,
        local_crop_size: int = 96,
        n_local_crops: int = 8,
        global_crop_scale: Sequence[float] = (0.4, 1.0),
        local_crop_scale: Sequence[float] = (0.05, 0.4),
        blur_sigma: Sequence[float] = (0.1, 2.0),
        optimizer: str = "adamw",
        base_lr: float = 5e-4,
        min_lr: float = 1e-6,
        warmup_epochs: float = 10,
        weight_decay: float = 0.04,
        weight_decay_end: float = 0.4,
        clip_grad: float = 3.0,
        freeze_last_layer_epochs: float = 1,
        momentum_teacher: float = 0.996,
        teacher_temp: float = 0.04,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: float = 0,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        grid_images: int = 8,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"model.optimizer={optimizer!r} is not one of {', '.join(OPTIMIZERS)}.")
        check_vit_only_arguments(arch, patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads)
        backbone = self._backbone(drop_path_rate)
        if not is_vit(arch):
            check_feature_map(backbone, arch, min(global_crop_size, local_crop_size))
        self.student = MultiCropNetwork(backbone, self._head(backbone.num_features))
        self.teacher = MultiCropNetwork(self._backbone(0.0), self._head(backbone.num_features))
        self.teacher.load_state_dict(self.student.state_dict())
        # Never optimised. It is built without drop-path and the ViT has no dropout, so for a ViT train
        # and eval mode compute the same function; it follows Lightning's mode like the student. A
        # convnet's BatchNorm layers in train mode normalise with the batch's statistics and update
        # the teacher's running statistics from its own inputs, as DINO's teacher does (parameters
        # follow the EMA, BatchNorm buffers do not); evaluations use the running statistics (eval mode).
        self.teacher.requires_grad_(False)
        self.loss_fn = DINOLoss(
            out_dim,
            n_crops=2 + n_local_crops,
            student_temp=student_temp,
            teacher_temp=teacher_temp,
            warmup_teacher_temp=warmup_teacher_temp,
            center_momentum=center_momentum,
        )
        self._reset_run_state()

    def _reset_run_state(self) -> None:
        # Derived once per fit from the trainer and the first batch; never checkpointed.
        self._first_batch_size: int | None = None
        self._global_batch: int | None = None
        self._steps_per_epoch: int | None = None
        self._total_steps: int | None = None
        self._last_batch_time: float | None = None
        self._grid_logged = False

    # ------------------------------------------------------------------ building blocks
    @staticmethod
    def unused_arguments(arguments: Mapping[str, Any]) -> tuple[str, ...]:
        """The arguments these ``arguments`` leave unused: the ViT-only shape keys when ``arch`` names a
        convnet. The config composer resets them when a profile (not the command line) set them."""
        arch = arguments.get("arch")
        return VIT_ONLY_ARGUMENTS if arch is not None and timm.is_model(arch) and not is_vit(arch) else ()

    def backbone_kwargs(self) -> dict:
        """The ``timm.create_model(arch, **kwargs)`` arguments of the backbone (without drop-path), also
        what an exported model records so that timm rebuilds the same network (``backbones.py``)."""
        h = self.hparams
        return backbone_arguments(h.arch, h.global_crop_size, patch_size=h.patch_size, embed_dim=h.embed_dim,
                                  depth=h.depth, num_heads=h.num_heads)

    def _backbone(self, drop_path_rate: float) -> nn.Module:
        # Drop-path only when asked for (timm's default is none): some convnets take no such argument.
        drop_path = {"drop_path_rate": drop_path_rate} if drop_path_rate else {}
        return timm.create_model(self.hparams.arch, pretrained=False, **drop_path, **self.backbone_kwargs())

    def _head(self, embed_dim: int) -> DINOHead:
        h = self.hparams
        return DINOHead(embed_dim, h.out_dim, h.head_hidden_dim, h.head_bottleneck_dim, h.head_nlayers, h.norm_last_layer)

    @property
    def teacher_backbone(self) -> nn.Module:
        """The teacher's timm network (``num_classes=0``), ImageNet-normalised input. A ViT:
        ``forward(x) -> [B, D]`` CLS embedding, ``forward_features(x) -> [B, 1 + h*w, D]`` tokens; a
        convnet: ``forward(x) -> [B, D]`` pooled feature, ``forward_features(x) -> [B, D, h, w]``."""
        return self.teacher.backbone

    def train_transform(self) -> MultiCropTransform:
        """The multi-crop transform the data module applies to each image ``[3, H, W]`` in [0, 1]."""
        h = self.hparams
        return MultiCropTransform(
            h.global_crop_size, h.local_crop_size, h.n_local_crops, h.global_crop_scale, h.local_crop_scale,
            h.blur_sigma,
        )

    # ------------------------------------------------------------------ schedule plan
    def global_batch_size(self) -> int:
        """Images per optimisation step over all devices: per-device batch x devices x accumulation."""
        if self._global_batch is None:
            per_device = getattr(self.trainer.datamodule, "batch_size", None) if self.trainer.datamodule else None
            if per_device is None:
                per_device = self._first_batch_size
            self._global_batch = per_device * self.trainer.world_size * self.trainer.accumulate_grad_batches
        return self._global_batch

    def steps_per_epoch(self) -> int:
        """Optimisation steps per epoch, from the train loader's length or the data module's
        ``samples_per_epoch`` (for an unsized stream)."""
        if self._steps_per_epoch is None:
            self._steps_per_epoch = self._count_steps_per_epoch()
        return self._steps_per_epoch

    def _count_steps_per_epoch(self) -> int:
        batches = self.trainer.num_training_batches
        if math.isfinite(batches):
            return max(1, math.ceil(batches / self.trainer.accumulate_grad_batches))
        datamodule = self.trainer.datamodule
        samples = getattr(datamodule, "samples_per_epoch", None) or getattr(
            getattr(datamodule, "dataset", None), "samples_per_epoch", None
        )
        if samples is None:
            raise RuntimeError(
                "Cannot tell how long an epoch is: the train loader has no length and the data module "
                "has no samples_per_epoch. Give one of them (the schedules are defined in epochs)."
            )
        return max(1, math.ceil(samples / self.global_batch_size()))

    def total_steps(self) -> int:
        """Optimisation steps of the whole run (the end of every cosine schedule)."""
        if self._total_steps is None:
            self._total_steps = self._count_total_steps()
        return self._total_steps

    def _count_total_steps(self) -> int:
        # min(max_epochs x steps per epoch, max_steps); either may be unset (-1 / None).
        max_epochs, max_steps = self.trainer.max_epochs, self.trainer.max_steps
        by_epochs = max_epochs * self.steps_per_epoch() if max_epochs is not None and max_epochs > 0 else math.inf
        by_steps = max_steps if max_steps is not None and max_steps > 0 else math.inf
        total = min(by_epochs, by_steps)
        if not math.isfinite(total):
            raise RuntimeError("Set trainer.max_epochs or trainer.max_steps: the cosine schedules need an end.")
        return max(1, int(total))

    def _epochs_to_steps(self, epochs: float) -> int:
        if epochs <= 0:
            return 0
        return int(round(epochs * self.steps_per_epoch()))

    def schedule_values(self, step: int) -> dict[str, float]:
        """lr, weight decay, teacher momentum and temperature at optimisation step ``step``."""
        h = self.hparams
        total = self.total_steps()
        peak_lr = scaled_lr(h.base_lr, self.global_batch_size())
        return {
            "lr": cosine_schedule(step, total, peak_lr, h.min_lr, self._epochs_to_steps(h.warmup_epochs)),
            "weight_decay": cosine_schedule(step, total, h.weight_decay, h.weight_decay_end),
            "momentum": cosine_schedule(step, total, h.momentum_teacher, 1.0),
            "teacher_temp": self.loss_fn.teacher_temperature(step),
        }

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> torch.optim.Optimizer:
        decay, no_decay = [], []
        for name, param in self.student.named_parameters():
            if not param.requires_grad:
                continue
            # Biases and norm scales (1-D) are not decayed, as in DINO.
            (no_decay if name.endswith(".bias") or param.ndim == 1 else decay).append(param)
        groups = [
            {"params": decay, "weight_decay": self.hparams.weight_decay, "scheduled_weight_decay": True},
            {"params": no_decay, "weight_decay": 0.0, "scheduled_weight_decay": False},
        ]
        # lr and weight decay are set every step from the schedules (on_train_batch_start).
        if self.hparams.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=0.0, momentum=0.9)
        return torch.optim.AdamW(groups, lr=0.0)

    def on_fit_start(self) -> None:
        self._reset_run_state()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        crops = self._crops(batch)
        if self._first_batch_size is None:
            self._first_batch_size = crops[0].shape[0]
        # The temperature warm-up is given in epochs; the loss counts steps.
        self.loss_fn.warmup_teacher_temp_steps = self._epochs_to_steps(self.hparams.warmup_teacher_temp_epochs)
        step = self.global_step
        values = self.schedule_values(step)
        for group in self.trainer.optimizers[0].param_groups:
            group["lr"] = values["lr"]
            if group["scheduled_weight_decay"]:
                group["weight_decay"] = values["weight_decay"]
        now = time.perf_counter()
        if self._last_batch_time is not None:
            per_step = self.global_batch_size() / self.trainer.accumulate_grad_batches
            values["images_per_s"] = per_step / max(now - self._last_batch_time, 1e-9)
        self._last_batch_time = now
        if self._should_log():  # only the steps the logger writes (self.log costs time per call)
            self.log_dict({f"train/{k}": float(v) for k, v in values.items()}, on_step=True, on_epoch=False)
        if not self._grid_logged:
            self._log_crop_grid(crops)
            self._grid_logged = True

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        crops = self._crops(batch)
        step = self.global_step
        with torch.no_grad():
            teacher_embedding, teacher_out = self.teacher(crops[:2])
        student_embedding, student_out = self.student(crops)
        if self._should_log():
            monitors = collapse_monitors(self.loss_fn.teacher_probabilities(teacher_out, step))
            n_global = teacher_embedding.shape[0]
            monitors["student_embedding_std"] = embedding_std(student_embedding[:n_global])
            monitors["teacher_embedding_std"] = embedding_std(teacher_embedding)
            self.log_dict({f"monitor/{k}": v for k, v in monitors.items()}, on_step=True, on_epoch=False)
        loss = self.loss_fn(student_out, teacher_out, step)
        # Every rank stops together (a rank that stopped alone would leave the others waiting).
        finite = self.trainer.strategy.reduce_boolean_decision(bool(torch.isfinite(loss)), all=True)
        if not finite:
            raise NonFiniteLossError(
                f"DINO loss is non-finite at step {step} (this rank: {loss.item()}, "
                f"lr {self.trainer.optimizers[0].param_groups[0]['lr']:.3g}); "
                "stopping. Lower model.base_lr, raise model.warmup_epochs, or use trainer.precision=32-true "
                "to find the cause; the last good checkpoint is unchanged."
            )
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Per-parameter-tensor clipping of the (unscaled) gradients, then the last-layer freeze."""
        clip = self.hparams.clip_grad if gradient_clip_val is None else gradient_clip_val
        grads = [p.grad for p in self.student.parameters() if p.grad is not None]
        if clip and grads:
            # Each tensor's gradient is scaled to norm <= clip on its own, as in DINO (no global norm).
            coefs = torch._foreach_add(torch._foreach_norm(grads), 1e-6)
            torch._foreach_reciprocal_(coefs)
            torch._foreach_mul_(coefs, float(clip))
            torch._foreach_clamp_max_(coefs, 1.0)
            torch._foreach_mul_(grads, coefs)
        if self.global_step < self._epochs_to_steps(self.hparams.freeze_last_layer_epochs):
            # No gradient at all (not a zero one): AdamW then leaves the layer and its state untouched.
            for param in self.student.head.last_layer.parameters():
                param.grad = None

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        step = self.global_step
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        self.update_teacher(self.schedule_values(step)["momentum"])

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """``teacher <- momentum * teacher + (1 - momentum) * student`` for every parameter."""
        teacher = list(self.teacher.parameters())
        student = list(self.student.parameters())
        torch._foreach_lerp_(teacher, [s.detach() for s in student], 1.0 - momentum)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _crops(batch: Any) -> list[torch.Tensor]:
        """The list of crop tensors of a batch; a ``(crops, labels)`` pair from a labelled folder is accepted."""
        if isinstance(batch, (list, tuple)) and len(batch) == 2 and isinstance(batch[0], (list, tuple)):
            batch = batch[0]
        if not (isinstance(batch, (list, tuple)) and all(torch.is_tensor(c) and c.ndim == 4 for c in batch)):
            raise TypeError(
                "DINO expects a batch that is a list of crop tensors [B, 3, S, S]; give the data module "
                "transform=model.train_transform()."
            )
        return list(batch)

    def _should_log(self) -> bool:
        # The steps Lightning writes to the logger: (step + 1) divisible by log_every_n_steps.
        return (self.global_step + 1) % max(1, self.trainer.log_every_n_steps) == 0

    @rank_zero_only
    def _log_crop_grid(self, crops: list[torch.Tensor]) -> None:
        if not isinstance(self.logger, TensorBoardLogger):
            return
        n = min(self.hparams.grid_images, crops[0].shape[0])
        size = crops[0].shape[-1]
        rows = []
        for i in range(n):
            for crop in crops:
                image = crop[i : i + 1].float()
                if image.shape[-1] != size:
                    image = nn.functional.interpolate(image, size=(size, size), mode="nearest")
                rows.append(denormalise(image[0]).cpu())
        grid = make_grid(torch.stack(rows), nrow=len(crops), padding=2, pad_value=1.0)
        self.logger.experiment.add_image("train/crops", grid, self.global_step)
