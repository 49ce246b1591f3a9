"""The geometry of a set of embeddings: how spread out (Vendi score, mean pairwise cosine) and how
many directions they use (effective rank).

Why: a kNN memory only discriminates when its vectors are spread. The cpu checkpoint's Fashion-MNIST
memory has a mean pairwise cosine of about 0.9 (every image looks alike to the encoder: an
anisotropic, "narrow cone" embedding), so a query's 20 neighbours all sit at similarity ~0.999 and the
DINO vote's exp(s / T) weights are nearly equal. The same functions measure the diversity of
procedural images under a fixed reference encoder (``benchmarks/diversity.py``).

All functions take ``features [N, D]`` (any float dtype; rows are L2-normalised here, so raw encoder
outputs are fine) and compute in float64.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run BLAS/LAPACK on one thread: a threaded reduction's order (hence its last bits) depends on the
    thread count, and a metric logged by 2 ranks must equal one process's bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _unit_rows(features: torch.Tensor) -> torch.Tensor:
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"expected features [N >= 2, D], got shape {tuple(features.shape)}")
    return F.normalize(features.double(), dim=1)


def _exp_entropy(weights: torch.Tensor) -> float:
    """exp(-sum p log p) of non-negative ``weights`` normalised to sum 1 (zeros contribute nothing)."""
    p = weights.clamp(min=0)
    p = p[p > 0] / p.sum()
    return float(torch.exp(-(p * p.log()).sum()))


@_one_thread()
def mean_pairwise_cosine(features: torch.Tensor) -> float:
    """Mean cosine similarity over the N(N-1) ordered pairs i != j, in O(N D).

    With unit rows x_i: sum_{i != j} x_i . x_j = |sum_i x_i|^2 - N. 1.0: all vectors equal; about 0
    for isotropic directions; -1 / (N - 1) at the minimum. The mean pairwise cosine *distance* is 1 - this.
    """
    x = _unit_rows(features)
    n = len(x)
    return float((x.sum(0).square().sum() - n) / (n * (n - 1)))


@_one_thread()
def vendi_score(features: torch.Tensor) -> float:
    """Vendi score (Friedman & Dieng 2023) with the cosine kernel: exp of the Shannon entropy of the
    eigenvalues of K / N, K [N, N] = X X^T for unit rows X.

    The "effective number of distinct samples": 1 when all N vectors are equal, N when they are
    orthogonal. K / N and X^T X / N share their non-zero eigenvalues, so the smaller Gram is used.
    """
    x = _unit_rows(features)
    gram = x.T @ x if x.shape[1] < len(x) else x @ x.T
    return _exp_entropy(torch.linalg.eigvalsh(gram / len(x)))


@_one_thread()
def effective_rank(features: torch.Tensor) -> float:
    """Effective rank (Roy & Vetterli 2007) of the unit-row matrix X [N, D]: exp of the entropy of its
    singular values normalised to sum 1. Between 1 (all rows on one line) and min(N, D) (equal
    singular values). Not centred on purpose: a shared mean direction is the anisotropy it measures.
    """
    return _exp_entropy(torch.linalg.svdvals(_unit_rows(features)))


def anisotropy_metrics(features: torch.Tensor, prefix: str = "knn/anisotropy") -> dict[str, float]:
    """``{prefix}/mean_cosine`` and ``{prefix}/effective_rank`` of ``features [N, D]``."""
    return {f"{prefix}/mean_cosine": mean_pairwise_cosine(features),
            f"{prefix}/effective_rank": effective_rank(features)}
