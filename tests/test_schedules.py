import math

import numpy as np
import pytest

from lightning_modules.schedules import cosine_schedule, linear_warmup, scaled_lr


def reference_cosine(base, final, total, warmup, start=0.0):
    """The DINO schedule written the way the original builds it: an array over all steps."""
    warm = np.linspace(start, base, warmup) if warmup > 0 else np.array([])
    iters = np.arange(total - warmup)
    cos = final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / len(iters)))
    return np.concatenate([warm, cos])


@pytest.mark.parametrize("total,warmup", [(50, 0), (50, 10), (7, 3), (7, 1)])
def test_cosine_matches_reference_array(total, warmup):
    ref = reference_cosine(1e-3, 1e-6, total, warmup)
    ours = [cosine_schedule(s, total, 1e-3, 1e-6, warmup) for s in range(total)]
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-15)


def test_cosine_landmarks():
    assert cosine_schedule(0, 100, 2.0, 0.0, warmup_steps=10) == 0.0
    assert cosine_schedule(3, 100, 2.0, 0.0, warmup_steps=10) == pytest.approx(2.0 * 3 / 9)
    assert cosine_schedule(9, 100, 2.0, 0.0, warmup_steps=10) == pytest.approx(2.0)  # end of warm-up
    assert cosine_schedule(10, 100, 2.0, 0.0, warmup_steps=10) == pytest.approx(2.0)
    assert cosine_schedule(55, 100, 2.0, 0.0, warmup_steps=10) == pytest.approx(1.0)  # cosine midpoint
    assert cosine_schedule(100, 100, 2.0, 0.0, warmup_steps=10) == 0.0
    assert cosine_schedule(10**6, 100, 2.0, 0.0) == 0.0
    # Increasing schedules (weight decay 0.04 -> 0.4, momentum 0.996 -> 1).
    assert cosine_schedule(0, 10, 0.04, 0.4) == pytest.approx(0.04)
    assert cosine_schedule(5, 10, 0.996, 1.0) == pytest.approx(0.998)
    values = [cosine_schedule(s, 10, 0.996, 1.0) for s in range(11)]
    assert all(a <= b for a, b in zip(values, values[1:], strict=False))


def test_warmup_longer_than_run_is_all_warmup():
    assert cosine_schedule(5, 10, 1.0, 0.0, warmup_steps=21) == pytest.approx(0.25)
    assert cosine_schedule(10, 10, 1.0, 0.0, warmup_steps=21) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        cosine_schedule(-1, 10, 1.0, 0.0)


def test_linear_warmup_and_lr_scaling():
    assert linear_warmup(0, 10, 0.04, 0.07) == pytest.approx(0.04)
    assert linear_warmup(5, 10, 0.04, 0.07) == pytest.approx(0.055)
    assert linear_warmup(50, 10, 0.04, 0.07) == pytest.approx(0.07)
    assert linear_warmup(0, 0, 0.04, 0.07) == pytest.approx(0.07)
    assert scaled_lr(5e-4, 512) == pytest.approx(1e-3)  # the paper's lr at batch 512
    assert scaled_lr(5e-4, 448) == pytest.approx(5e-4 * 448 / 256)
    assert math.isclose(scaled_lr(1.0, 256), 1.0)
    with pytest.raises(ValueError):
        scaled_lr(5e-4, 0)
