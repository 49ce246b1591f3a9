"""Backends by name: ``make_backend(name, dim, **options)``, and which of them claim exactness.

``EXACT_BACKENDS`` certify every answer (the memory's exact-unlearning and audit guarantees hold);
the others may answer approximately (classification only). Optional engines (pymilvus, scann)
are imported only when asked for.
"""

from __future__ import annotations

import importlib
from typing import Any

from procedural_perception.visual_memory.backends.base import EXACT_BACKENDS, Backend

# name -> "module:class"; modules import lazily so a missing optional engine breaks only its backend.
BACKENDS = {
    "flat": "procedural_perception.visual_memory.backends.flat:FlatBackend",
    "ivf": "procedural_perception.visual_memory.backends.ivf:IVFBackend",
    "milvus": "procedural_perception.visual_memory.backends.milvus:MilvusBackend",
    "scann": "procedural_perception.visual_memory.backends.scann:ScannBackend",
}
DEFAULT_BACKEND = "flat"
__all__ = ["BACKENDS", "DEFAULT_BACKEND", "EXACT_BACKENDS", "backend_class", "make_backend"]


def backend_class(name: str) -> type[Backend]:
    if name not in BACKENDS:
        raise ValueError(f"Unknown memory backend {name!r}; choose one of {', '.join(BACKENDS)}.")
    module, cls = BACKENDS[name].split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as error:
        raise ImportError(f"The {name!r} backend needs a package that is not installed ({error.name}); "
                          f"install the versions pinned in pyproject.toml, or use backend='flat'.") from error


def make_backend(name: str, dim: int, **options: Any) -> Backend:
    """A new backend ``name`` over ``dim``-d vectors. Options by backend: flat ``device``;
    ivf ``centroids``, ``nprobe``; milvus ``uri``, ``collection``; scann ``leaves``, ``leaves_to_search``."""
    return backend_class(name)(dim, **options)
