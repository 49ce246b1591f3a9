"""Per-step schedules of the DINO recipe: learning rate, weight decay and teacher momentum.

Every value is a pure function of the optimisation step, so a resumed run (which restores
``trainer.global_step``) continues each schedule exactly where it stopped; no schedule state is saved.
"""

from __future__ import annotations

import math

# DINO scales the base learning rate linearly with the global batch, relative to 256 images.
LR_REFERENCE_BATCH = 256


def cosine_schedule(
    step: int,
    total_steps: int,
    base: float,
    final: float,
    warmup_steps: int = 0,
    warmup_start: float = 0.0,
) -> float:
    """Linear warm-up from ``warmup_start`` (step 0) to ``base`` (step ``warmup_steps - 1``, as the
    original's ``linspace``), then a half cosine from ``base`` down (or up) to ``final`` at
    ``total_steps``; ``final`` after that.

    Step ``warmup_steps + i`` of the cosine part takes the value
    ``final + (base - final) * (1 + cos(pi * i / (total_steps - warmup_steps))) / 2``.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    warmup_steps = max(0, warmup_steps)  # a run shorter than its warm-up ends mid-warm-up
    if step < warmup_steps:
        if warmup_steps == 1:
            return warmup_start
        return warmup_start + (base - warmup_start) * step / (warmup_steps - 1)
    if step >= total_steps:
        # A run made only of warm-up (total == warm-up) stays at ``base``.
        return final if total_steps > warmup_steps else base
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return final + 0.5 * (base - final) * (1.0 + math.cos(math.pi * progress))


def linear_warmup(step: int, warmup_steps: int, start: float, end: float) -> float:
    """``start`` rising linearly to ``end`` over ``warmup_steps``, constant afterwards (teacher temperature)."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return end
    return start + (end - start) * step / warmup_steps


def scaled_lr(base_lr: float, global_batch: int, reference_batch: int = LR_REFERENCE_BATCH) -> float:
    """Linear scaling rule: ``base_lr * global_batch / reference_batch`` (5e-4 at 512 gives 1e-3)."""
    if global_batch <= 0:
        raise ValueError(f"global batch must be positive, got {global_batch}")
    return base_lr * global_batch / reference_batch
