"""The unlearning-equality check: does a memory that forgot samples answer exactly like one built
without them?

Exact unlearning means every later answer equals that of a memory that never held the removed
samples. Comparing two memories' neighbour lists proves it only when both lists are exact: an
approximate backend may differ (or agree) because of what its search skipped, not because of the
data, so uncertified answers are refused (:func:`~procedural_perception.visual_memory.backends.require_exact`).
"""

from __future__ import annotations

import numpy as np
import torch

from procedural_perception.visual_memory.backends import require_exact
from procedural_perception.visual_memory.memory import VisualMemory


def answers_equal(forgot: VisualMemory, rebuilt: VisualMemory, queries: torch.Tensor | np.ndarray, k: int) -> bool:
    """``True`` when both memories return the same ``k`` ids and similarities for every one of
    ``queries [Q, D]``; raises ``ApproximateAnswerError`` if either answer is uncertified."""
    a = require_exact(forgot.search(queries, k), "The unlearning-equality check")
    b = require_exact(rebuilt.search(queries, k), "The unlearning-equality check")
    return bool(np.array_equal(a.ids, b.ids) and np.array_equal(a.scores, b.scores))
