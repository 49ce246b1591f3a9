"""Embedding geometry metrics against direct computations of their formulas."""

import math

import pytest
import torch
import torch.nn.functional as F

from procedural_perception.evaluations.embedding_geometry import (
    anisotropy_metrics,
    effective_rank,
    mean_pairwise_cosine,
    vendi_score,
)


def _entropy_exp(p):
    p = p[p > 1e-12] / p.sum()
    return math.exp(-sum(float(v) * math.log(float(v)) for v in p))


def test_vendi_of_identical_vectors_is_one_and_of_orthogonal_vectors_is_n():
    v = torch.randn(1, 16)
    assert vendi_score(v.repeat(10, 1)) == pytest.approx(1.0, abs=1e-9)
    assert vendi_score(torch.eye(7) * 3.0) == pytest.approx(7.0, abs=1e-9)
    assert vendi_score(torch.eye(5, 40)) == pytest.approx(5.0, abs=1e-9)  # N < D: the N x N Gram


def test_vendi_matches_the_n_by_n_kernel_definition():
    x = torch.randn(30, 8, generator=torch.Generator().manual_seed(0))
    u = F.normalize(x.double(), dim=1)
    eig = torch.linalg.eigvalsh(u @ u.T / 30)  # the definition: K = cosine kernel [N, N]
    assert vendi_score(x) == pytest.approx(_entropy_exp(eig.clamp(min=0)), rel=1e-9)


def test_mean_pairwise_cosine_matches_the_double_loop():
    x = torch.randn(12, 5, generator=torch.Generator().manual_seed(1))
    u = F.normalize(x.double(), dim=1)
    pairs = [float(u[i] @ u[j]) for i in range(12) for j in range(12) if i != j]
    assert mean_pairwise_cosine(x) == pytest.approx(sum(pairs) / len(pairs), rel=1e-9)
    assert mean_pairwise_cosine(torch.ones(4, 3)) == pytest.approx(1.0)
    assert mean_pairwise_cosine(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(-1.0)


def test_effective_rank_matches_the_singular_value_formula_and_its_bounds():
    x = torch.randn(50, 6, generator=torch.Generator().manual_seed(2))
    sv = torch.linalg.svdvals(F.normalize(x.double(), dim=1))
    assert effective_rank(x) == pytest.approx(_entropy_exp(sv), rel=1e-9)
    assert effective_rank(torch.randn(1, 9).repeat(20, 1)) == pytest.approx(1.0, abs=1e-6)
    assert effective_rank(torch.eye(6)) == pytest.approx(6.0, abs=1e-9)


def test_anisotropy_metrics_keys_and_bad_shapes():
    metrics = anisotropy_metrics(torch.eye(4))
    assert metrics == {"knn/anisotropy/mean_cosine": pytest.approx(0.0), "knn/anisotropy/effective_rank": pytest.approx(4.0)}
    with pytest.raises(ValueError, match="N >= 2"):
        vendi_score(torch.ones(1, 3))
