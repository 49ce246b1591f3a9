"""When and how strongly the interaction regulariser acts: off until the decoder reconstructs, then a ramp.

Brady et al. weight the interaction penalty by about 1e-4 in per-pixel-mean units and raise it
linearly over 25k of 500k steps, after the decoder has learned to draw; applied from the first
step at full strength, the penalty is minimised by a decoder that draws everything from one slot
before it draws anything well. Here the weight at step ``t`` of ``T`` is

    alpha(t) = alpha * clip((t - t0) / (warmup * T), 0, 1)

where ``t0 = start * T`` or, with plateau detection on, the first step at which the reconstruction
loss has stopped improving (:class:`PlateauDetector`), whichever comes first.
"""

from __future__ import annotations


class PlateauDetector:
    """Says when a loss has plateaued: its exponential moving average (``decay``) improved by less than
    the fraction ``tolerance`` over the last ``window`` steps. Once reached, stays reached."""

    def __init__(self, window: int = 200, tolerance: float = 0.01, decay: float = 0.98) -> None:
        if window < 1 or not 0 < decay < 1:
            raise ValueError(f"PlateauDetector needs window >= 1 and 0 < decay < 1, got {window}, {decay}.")
        self.window, self.tolerance, self.decay = window, tolerance, decay
        self.average: float | None = None
        self.history: list[float] = []
        self.reached_at: int | None = None

    def update(self, step: int, loss: float) -> bool:
        """Record ``loss`` at ``step``; return whether the plateau has been reached (now or before)."""
        if self.reached_at is not None:
            return True
        self.average = loss if self.average is None else self.decay * self.average + (1 - self.decay) * loss
        self.history.append(self.average)
        if len(self.history) > self.window:
            before = self.history.pop(0)
            if before - self.average < self.tolerance * before:
                self.reached_at = step
        return self.reached_at is not None


def ramp_weight(weight: float, step: int, total_steps: int, start: float, warmup: float,
                started_at: int | None = None) -> float:
    """``alpha(t)`` of the module docstring: ``start`` and ``warmup`` are fractions of ``total_steps``;
    ``started_at`` (a step, e.g. a plateau) starts the ramp earlier than ``start * total_steps``."""
    if not (0 <= start <= 1 and 0 <= warmup <= 1):
        raise ValueError(f"start and warmup are fractions of training in [0, 1], got {start}, {warmup}.")
    t0 = start * total_steps if started_at is None else min(started_at, start * total_steps)
    if step < t0:
        return 0.0
    span = warmup * total_steps
    return weight * (min(1.0, (step - t0) / span) if span > 0 else 1.0)
