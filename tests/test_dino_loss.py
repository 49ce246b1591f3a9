import math

import numpy as np
import pytest
import torch
from dino_helpers import distributed_center

from lightning_modules.dino_loss import DINOLoss, collapse_monitors, embedding_std


def reference_loss(student, teacher, center, n_crops, student_temp, teacher_temp):
    """The DINO loss written as plain loops over images and crop pairs (numpy, float64)."""
    student = np.asarray(student, dtype=np.float64)
    teacher = np.asarray(teacher, dtype=np.float64)
    batch = teacher.shape[0] // 2

    def softmax(z):
        z = z - z.max()
        e = np.exp(z)
        return e / e.sum()

    total, terms = 0.0, 0
    for t in range(2):
        for s in range(n_crops):
            if s == t:
                continue
            pair = 0.0
            for b in range(batch):
                p = softmax((teacher[t * batch + b] - center) / teacher_temp)
                log_q = np.log(softmax(student[s * batch + b] / student_temp))
                pair += -(p * log_q).sum()
            total += pair / batch
            terms += 1
    return total / terms


def test_matches_reference_loops():
    torch.manual_seed(0)
    n_crops, batch, k = 5, 3, 7
    loss_fn = DINOLoss(k, n_crops, student_temp=0.1, teacher_temp=0.04, center_momentum=0.9)
    loss_fn.center.copy_(torch.randn(1, k) * 0.1)
    student, teacher = torch.randn(n_crops * batch, k), torch.randn(2 * batch, k)
    expected = reference_loss(student, teacher, loss_fn.center[0].numpy(), n_crops, 0.1, 0.04)
    assert loss_fn(student, teacher, step=0).item() == pytest.approx(expected, rel=1e-5)


def test_hand_computed_case():
    # K=2, one image, only the 2 global crops, temperatures 1, centre 0. The teacher is uniform
    # (logits equal), the student gives log-probabilities log(3/4), log(1/4) on both crops, so each
    # pair costs -(0.5 log 0.75 + 0.5 log 0.25) = 0.5 log(16/3).
    loss_fn = DINOLoss(2, 2, student_temp=1.0, teacher_temp=1.0)
    student = torch.tensor([[math.log(3.0), 0.0], [math.log(3.0), 0.0]])
    teacher = torch.tensor([[1.0, 1.0], [2.0, 2.0]])
    assert loss_fn(student, teacher, step=0).item() == pytest.approx(0.5 * math.log(16 / 3), rel=1e-6)


def test_same_crop_pairs_are_skipped():
    # If the student matched the teacher exactly on global crop 0 only, the pair (0, 0) would be
    # the minimum; since it is skipped, changing the student's crop-0 output changes only the
    # (teacher 1, student 0) term.
    k, batch = 4, 2
    loss_fn = DINOLoss(k, 2, student_temp=1.0, teacher_temp=1.0, center_momentum=1.0)  # centre frozen at 0
    teacher = torch.randn(2 * batch, k)
    student = torch.randn(2 * batch, k)
    full = loss_fn(student, teacher, 0)
    p1 = torch.softmax(teacher[batch:], -1)
    logq0 = torch.log_softmax(student[:batch], -1)
    p0 = torch.softmax(teacher[:batch], -1)
    logq1 = torch.log_softmax(student[batch:], -1)
    cross = ((-p1 * logq0).sum(-1).mean() + (-p0 * logq1).sum(-1).mean()) / 2
    torch.testing.assert_close(full, cross)


def test_center_ema_update():
    loss_fn = DINOLoss(3, 2, center_momentum=0.9)
    teacher = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [0.0, 0.0, 6.0], [4.0, 0.0, 2.0]])
    loss_fn(torch.zeros(4, 3), teacher, 0)
    torch.testing.assert_close(loss_fn.center, 0.1 * teacher.mean(0, keepdim=True))
    loss_fn(torch.zeros(4, 3), teacher, 0)
    torch.testing.assert_close(loss_fn.center, (0.9 * 0.1 + 0.1) * teacher.mean(0, keepdim=True))
    assert "center" in loss_fn.state_dict()  # saved in checkpoints


def test_loss_uses_centre_before_update_and_gives_student_gradient_only():
    loss_fn = DINOLoss(5, 3)
    student = torch.randn(6, 5, requires_grad=True)
    teacher = torch.randn(4, 5, requires_grad=True)
    loss_fn(student, teacher, 0).backward()
    assert student.grad is not None and teacher.grad is None


def test_teacher_temperature_warmup():
    loss_fn = DINOLoss(3, 2, teacher_temp=0.07, warmup_teacher_temp=0.04, warmup_teacher_temp_steps=30)
    assert loss_fn.teacher_temperature(0) == pytest.approx(0.04)
    assert loss_fn.teacher_temperature(15) == pytest.approx(0.055)
    assert loss_fn.teacher_temperature(30) == pytest.approx(0.07)
    assert DINOLoss(3, 2).teacher_temperature(0) == pytest.approx(0.04)  # the paper: no warm-up


def test_wrong_crop_count_is_explained():
    with pytest.raises(ValueError, match="n_crops x B"):
        DINOLoss(3, 4)(torch.zeros(6, 3), torch.zeros(4, 3), 0)


def test_collapse_monitors_tell_collapse_kinds_apart():
    k = 8
    uniform = torch.full((10, k), 1 / k)
    one_hot_same = torch.zeros(10, k)
    one_hot_same[:, 3] = 1
    spread = torch.eye(k)
    m = collapse_monitors(uniform)
    assert m["teacher_entropy"].item() == pytest.approx(math.log(k)) and m["teacher_kl_uniform"].item() == pytest.approx(0, abs=1e-6)
    m = collapse_monitors(one_hot_same)
    assert m["teacher_entropy"].item() == pytest.approx(0, abs=1e-6) and m["teacher_kl_uniform"].item() == pytest.approx(math.log(k))
    m = collapse_monitors(spread)
    assert m["teacher_entropy"].item() == pytest.approx(0, abs=1e-6) and m["teacher_kl_uniform"].item() == pytest.approx(0, abs=1e-6)


def test_embedding_std():
    assert embedding_std(torch.ones(16, 4) * 3).item() == pytest.approx(0, abs=1e-6)
    torch.manual_seed(0)
    assert embedding_std(torch.randn(4096, 32)).item() == pytest.approx(1.0, abs=0.05)


@pytest.mark.ddp
def test_center_all_reduced_over_ranks_equals_one_process():
    from distributed import run_distributed

    torch.manual_seed(0)
    teacher = torch.randn(8, 6)  # 2 global crops x 4 images
    one = DINOLoss(6, 2)
    one(torch.zeros(8, 6), teacher, 0)
    # Each rank holds 2 of the 4 images (both global crops of them).
    shards = [torch.cat([teacher[0:2], teacher[4:6]]), torch.cat([teacher[2:4], teacher[6:8]])]
    centres = run_distributed(distributed_center, world=2, args=(shards,))
    for centre in centres:
        torch.testing.assert_close(torch.tensor(centre), one.center)
