"""The search-backend interface: top-n answers that carry a certificate of exactness.

A backend stores L2-normalised float32 vectors under stable int64 ids and answers top-``n``
inner-product queries. Besides the scores and ids, every answer carries, per query, a *bound*: a
number no stored vector left out of the answer can score above. When the n-th returned score
is at least that bound (ties broken by id, the memory's total order), nothing left out could
have entered the answer, so the answer equals an exhaustive float64 search: it is *exact*.

* the flat backend searches everything; its bound is the n-th score itself (always exact);
* IVF bounds each unprobed list by its centroid score plus the list's radius (often loose, so
  answers are exact only when that bound happens to fall below the n-th score);
* backends that cannot bound what they skipped (ScaNN's quantised trees) report ``+inf``.

Classification accepts approximate answers; the privacy audit and the unlearning-equality check
(which claim "removing this sample changes / does not change a prediction") refuse them through
:func:`require_exact`, since an approximate answer can differ because of the search, not the data.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from procedural_perception.visual_memory.index import checked_additions

# Backends whose every answer is certified exact (see registry.py): the memory's exact-unlearning
# and audit guarantees hold for them.
EXACT_BACKENDS = ("flat", "milvus")


class ApproximateAnswerError(RuntimeError):
    """An operation that needs exact neighbours got answers the backend could not certify."""


@dataclass(frozen=True)
class SearchResult:
    """Top-``n`` neighbours of ``Q`` queries.

    ``scores [Q, n]`` float32 cosine similarities, descending (ties: ascending id);
    ``ids [Q, n]`` int64; ``bound [Q]`` float64: no stored vector missing from row ``q`` scores
    above ``bound[q]`` (``+inf``: unknown); ``exact [Q]`` bool: row ``q`` provably equals an
    exhaustive search; ``backend``: the backend's name (for error messages).
    """

    scores: np.ndarray
    ids: np.ndarray
    bound: np.ndarray
    exact: np.ndarray
    backend: str

    @property
    def all_exact(self) -> bool:
        return bool(np.all(self.exact))


def require_exact(result: SearchResult, purpose: str) -> SearchResult:
    """Return ``result`` when every row is certified exact; otherwise raise with what to do."""
    if result.all_exact:
        return result
    bad = int(np.count_nonzero(~np.asarray(result.exact)))
    raise ApproximateAnswerError(
        f"{purpose} needs exact neighbours, but the {result.backend!r} backend could not certify "
        f"{bad} of {len(result.exact)} answers (it cannot bound the score of what it did not search). "
        f"Open the memory with an exact backend ({', '.join(EXACT_BACKENDS)}), e.g. "
        f"VisualMemory.load(path, backend='flat'); classification accepts approximate answers."
    )


def certify(scores: np.ndarray, bound: np.ndarray, slack: float) -> np.ndarray:
    """``[Q]`` bool: the last returned score beats ``bound`` by more than float32 ``slack``."""
    return scores[:, -1].astype(np.float64) > bound + slack


def float32_error(dim: int) -> float:
    """Bound on |float32 inner product - exact| for unit vectors of ``dim`` entries (dim * 2^-23,
    twice the classical n*u bound of a length-n dot product, covering norms slightly off 1)."""
    return dim * 2.0**-23


def rescore_sorted(queries: np.ndarray, ids: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact float64 scores of candidates ``ids [Q, m]`` whose vectors are ``rows [Q, m, dim]``,
    each row sorted by (score descending, id ascending); missing candidates (id -1) go last."""
    exact = np.einsum("qd,qmd->qm", queries.astype(np.float64), rows.astype(np.float64))
    exact[ids < 0] = -np.inf
    order = np.lexsort((ids, -exact), axis=1)
    return np.take_along_axis(exact, order, 1), np.take_along_axis(ids, order, 1)


class Backend(ABC):
    """Vectors under stable ids, searchable with a certificate (see the module docstring).

    Subclasses set ``name`` and ``claims_exact`` (every answer is certified exact, so the
    memory's exact-unlearning guarantee holds for it) and keep ``dim``.
    """

    name: ClassVar[str]
    claims_exact: ClassVar[bool]
    dim: int

    @abstractmethod
    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Store ``vectors [n, dim]`` (float32, unit length) under new distinct ``ids [n]``."""

    @abstractmethod
    def remove(self, ids: np.ndarray) -> None:
        """Remove ``ids``; ``KeyError`` naming the unknown ones (removing nothing) if any is absent."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __contains__(self, item: int) -> bool: ...

    @property
    @abstractmethod
    def ids(self) -> np.ndarray:
        """``[N]`` stored ids (any order)."""

    @abstractmethod
    def vectors(self, ids: np.ndarray | None = None) -> np.ndarray:
        """``[n, dim]`` stored vectors of ``ids`` (default: all, in the order of :attr:`ids`)."""

    @abstractmethod
    def search(self, queries: np.ndarray, n: int) -> SearchResult:
        """Top-``n`` neighbours of ``queries [Q, dim]`` with their certificate."""

    # --- persistence (the SQLite store is the system of record; backends are derived from it) ---
    snapshot_files: ClassVar[tuple[str, ...]] = ()  # files in the memory folder that hold vectors

    def options(self) -> dict[str, Any]:
        """JSON options that reopen this backend (recorded in the memory's metadata; default none)."""
        return {}

    def persist(self, folder: Path) -> None:
        """Write what :meth:`options` refers to into the memory folder (default: nothing)."""
        return None  # optional hook

    def write_snapshot(self, folder: Path) -> None:
        """Write whatever makes the next open faster (default: nothing)."""
        return None  # optional hook

    def load_snapshot(self, folder: Path) -> bool:
        """Fill an empty backend from a snapshot in ``folder``; ``False`` when there is none."""
        return False

    def reconcile(self, ids: np.ndarray, load: Callable[[], tuple[np.ndarray, np.ndarray]]) -> None:
        """Make the stored ids equal ``ids`` (the store's), loading ``(ids, vectors)`` on demand.

        The default suits in-process backends that start empty; a persistent engine (Milvus)
        overrides it to add what it lacks and drop what the store no longer has.
        """
        if len(self) == 0 and len(ids):
            stored_ids, vectors = load()
            self.add(vectors, stored_ids)

    def close(self) -> None:
        """Release connections or files (default: nothing)."""
        return None  # optional hook

    def _check_add(self, vectors: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return checked_additions(vectors, ids, self.dim, self.__contains__)

    def _check_n(self, n: int) -> None:
        if not 1 <= n <= len(self):
            raise ValueError(f"n must be in 1..{len(self)} (the memory size), got {n}")


class KnownIds:
    """``__contains__`` and ``ids`` from a set ``_ids`` of the stored ids, for backends whose engine
    cannot answer either cheaply (IVF, Milvus); mix in before :class:`Backend`."""

    _ids: set[int]

    def __contains__(self, item: int) -> bool:
        return int(item) in self._ids

    @property
    def ids(self) -> np.ndarray:
        return np.fromiter(self._ids, dtype=np.int64, count=len(self._ids))
