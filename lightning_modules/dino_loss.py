"""The DINO self-distillation loss with a centred, sharpened teacher.

For every pair (teacher view ``t`` of the 2 global crops, student view ``s`` of all crops, ``s != t``)
the loss is the cross-entropy ``-sum_k P_t[k] log P_s[k]`` with
``P_t = softmax((teacher - c) / tau_t)`` and ``P_s = softmax(student / tau_s)``, averaged over the
batch and over the pairs. The centre ``c`` is an EMA of the teacher's batch-mean output; centring
keeps one prototype from dominating, sharpening (``tau_t < tau_s``) keeps the output from becoming
uniform; together they prevent collapse.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from lightning_modules.schedules import linear_warmup
from procedural_perception.core.distributed import is_distributed


class DINOLoss(nn.Module):
    """Args:
        out_dim: number of head outputs ``K``.
        n_crops: crops per image given to the student (2 global + local).
        student_temp: ``tau_s`` (0.1).
        teacher_temp: ``tau_t`` after warm-up (0.04 in the paper).
        warmup_teacher_temp: ``tau_t`` at step 0 (equal to ``teacher_temp`` for no warm-up).
        warmup_teacher_temp_steps: steps of the linear warm-up of ``tau_t``.
        center_momentum: EMA momentum of the centre (0.9).

    The centre is a registered buffer ``[1, K]``, so it is saved in checkpoints and restored on resume.
    """

    n_global_crops = 2

    def __init__(
        self,
        out_dim: int,
        n_crops: int,
        student_temp: float = 0.1,
        teacher_temp: float = 0.04,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_steps: int = 0,
        center_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        if n_crops < self.n_global_crops:
            raise ValueError(f"n_crops must include the {self.n_global_crops} global crops, got {n_crops}")
        self.n_crops = n_crops
        self.student_temp = student_temp
        self.teacher_temp = teacher_temp
        self.warmup_teacher_temp = warmup_teacher_temp
        self.warmup_teacher_temp_steps = warmup_teacher_temp_steps
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def teacher_temperature(self, step: int) -> float:
        return linear_warmup(step, self.warmup_teacher_temp_steps, self.warmup_teacher_temp, self.teacher_temp)

    def teacher_probabilities(self, teacher_output: torch.Tensor, step: int) -> torch.Tensor:
        """Centred, sharpened teacher distribution ``[2B, K]`` (no gradient flows to the teacher)."""
        temp = self.teacher_temperature(step)
        return F.softmax((teacher_output.detach().float() - self.center) / temp, dim=-1)

    def forward(self, student_output: torch.Tensor, teacher_output: torch.Tensor, step: int) -> torch.Tensor:
        """``student_output [n_crops * B, K]`` (crop-major: all images' crop 0, then crop 1, ...),
        ``teacher_output [2 * B, K]`` (the 2 global crops, same order); returns the scalar loss and
        then updates the centre with this batch."""
        batch = teacher_output.shape[0] // self.n_global_crops
        if student_output.shape[0] != self.n_crops * batch:
            raise ValueError(
                f"student output has {student_output.shape[0]} rows, expected n_crops x B = "
                f"{self.n_crops} x {batch}; check that the transform makes {self.n_crops} crops"
            )
        teacher_probs = self.teacher_probabilities(teacher_output, step).chunk(self.n_global_crops)
        student_logp = F.log_softmax(student_output.float() / self.student_temp, dim=-1).chunk(self.n_crops)
        total = student_output.new_zeros((), dtype=torch.float32)
        n_terms = 0
        for t, probs in enumerate(teacher_probs):
            for s, logp in enumerate(student_logp):
                if s == t:  # the same view seen by both networks gives no learning signal
                    continue
                total = total + torch.sum(-probs * logp, dim=-1).mean()
                n_terms += 1
        self.update_center(teacher_output)
        return total / n_terms

    @torch.no_grad()
    def update_center(self, teacher_output: torch.Tensor) -> None:
        """``c <- m c + (1 - m) mean(teacher_output)``; the mean is over the global batch of all ranks."""
        batch_sum = teacher_output.detach().float().sum(dim=0, keepdim=True)
        count = torch.tensor(float(teacher_output.shape[0]), device=batch_sum.device)
        if is_distributed():
            dist.all_reduce(batch_sum)
            dist.all_reduce(count)
        self.center.mul_(self.center_momentum).add_(batch_sum / count, alpha=1 - self.center_momentum)


@torch.no_grad()
def collapse_monitors(teacher_probs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Two numbers that tell the two kinds of collapse apart, from teacher probabilities ``[N, K]``.

    ``teacher_entropy``: mean per-image entropy; it rises to ``log K`` when the output collapses to
    uniform. ``teacher_kl_uniform``: KL(mean distribution || uniform) = ``log K - H(mean)``; it rises
    to ``log K`` when every image lands on the same prototype. Healthy training keeps both well below
    ``log K`` (confident per image, spread over prototypes across images).
    """
    eps = 1e-12
    log_k = math.log(teacher_probs.shape[-1])
    entropy = -(teacher_probs * (teacher_probs + eps).log()).sum(-1).mean()
    mean = teacher_probs.mean(0)
    kl_uniform = log_k + (mean * (mean + eps).log()).sum()
    return {"teacher_entropy": entropy, "teacher_kl_uniform": kl_uniform}


@torch.no_grad()
def embedding_std(embeddings: torch.Tensor) -> torch.Tensor:
    """Per-dimension std of L2-normalised embeddings ``[N, D]``, averaged, times ``sqrt(D)``:
    about 1 for embeddings spread over the sphere, 0 when all images map to one point."""
    normed = F.normalize(embeddings.detach().float(), dim=-1)
    return normed.std(dim=0).mean() * math.sqrt(normed.shape[-1])
