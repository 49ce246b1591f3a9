"""Intersection over union from a confusion matrix (the segmentation evaluations' score)."""

from __future__ import annotations

import torch
from torchmetrics.functional.classification import multiclass_confusion_matrix

from procedural_perception.datasets.segmentation import IGNORE


def confusion(pred: torch.Tensor, target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``[C, C]`` long counts (rows = truth, columns = prediction); ``IGNORE`` pixels left out."""
    return multiclass_confusion_matrix(pred.flatten(), target.flatten(), num_classes=n_classes,
                                       ignore_index=IGNORE).long()


def iou_per_class(matrix: torch.Tensor) -> torch.Tensor:
    """``[C]`` IoU = TP / (TP + FP + FN); NaN for classes absent from both truth and prediction."""
    tp = matrix.diag().double()
    union = matrix.sum(0).double() + matrix.sum(1).double() - tp
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))


def mean_iou(matrix: torch.Tensor) -> float:
    """Mean IoU over the classes that occur (in truth or prediction)."""
    return float(iou_per_class(matrix).nanmean())
