"""Search backends of the visual memory (see base.py for the interface and its certificate)."""

from procedural_perception.visual_memory.backends.base import (
    ApproximateAnswerError,
    Backend,
    SearchResult,
    require_exact,
)
from procedural_perception.visual_memory.backends.registry import (
    BACKENDS,
    DEFAULT_BACKEND,
    EXACT_BACKENDS,
    make_backend,
)

__all__ = ["ApproximateAnswerError", "Backend", "SearchResult", "require_exact", "BACKENDS", "DEFAULT_BACKEND",
           "EXACT_BACKENDS", "make_backend"]
