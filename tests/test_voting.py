"""Voting rules against their reference formulas and a literal walk over the neighbours."""

import math

import pytest
import torch

from procedural_perception.visual_memory.voting import (
    RULES,
    accuracy_for_ks,
    neighbour_weights,
    predict,
    rank_classes,
)


def reference_walk(weights, labels, num_classes):
    """Geirhos et al.'s loop: add each neighbour's weight in rank order; the leader changes only when
    a class strictly exceeds the current maximum. Returns (leader, class order for top-5)."""
    scores = [0.0] * num_classes
    reached = [None] * num_classes
    leader, best = None, -math.inf
    for r, (w, c) in enumerate(zip(weights, labels, strict=True)):
        scores[c] += w
        reached[c] = r
        if scores[c] > best:
            best, leader = scores[c], c
    n = len(labels)
    order = sorted(range(num_classes), key=lambda c: (-scores[c], reached[c] if reached[c] is not None else n + c))
    return leader, order


def tied_neighbours(q=64, width=12, num_classes=3, seed=0):
    """Similarities on a coarse grid (many exact ties) sorted descending; few classes (class ties)."""
    g = torch.Generator().manual_seed(seed)
    sims = (torch.randint(0, 5, (q, width), generator=g).float() / 5.0).sort(dim=1, descending=True).values
    labels = torch.randint(0, num_classes, (q, width), generator=g)
    return sims, labels


def test_weights_match_reference_formulas():
    sims = torch.tensor([[0.9, 0.7, 0.4, 0.1]], dtype=torch.float64)
    d = 1 - sims
    t = 0.07
    torch.testing.assert_close(neighbour_weights(sims, "plurality"), torch.ones_like(sims))
    torch.testing.assert_close(neighbour_weights(sims, "distance", power=2.0), torch.exp(-d) ** 2)
    torch.testing.assert_close(neighbour_weights(sims, "dino", temperature=t), torch.exp(sims / t))
    torch.testing.assert_close(neighbour_weights(sims, "rank"), torch.tensor([[1 / 2, 1 / 3, 1 / 4, 1 / 5]], dtype=torch.float64))
    d_hat = (d - d.min()) / (d.max() - d.min())
    torch.testing.assert_close(neighbour_weights(sims, "softmax", temperature=t), torch.exp((1 - d_hat) / t))
    # softmax normalises over the k given: with the top 2 only, the second neighbour has d_hat = 1.
    torch.testing.assert_close(neighbour_weights(sims[:, :2], "softmax", temperature=t),
                               torch.tensor([[math.exp(1 / t), 1.0]], dtype=torch.float64))
    assert torch.equal(neighbour_weights(sims[:, :1], "softmax"), torch.full((1, 1), math.exp(1 / 0.07), dtype=torch.float64))


@pytest.mark.parametrize("rule", RULES)
def test_every_k_in_one_pass_equals_literal_walk_with_ties(rule):
    sims, labels = tied_neighbours()
    ks = list(range(1, sims.shape[1] + 1))
    rankings = rank_classes(sims, labels, 3, rule, ks)
    targets = torch.randint(0, 3, (sims.shape[0],), generator=torch.Generator().manual_seed(1))
    for k, ranking in zip(ks, rankings, strict=True):
        weights = neighbour_weights(sims[:, :k], rule)  # per-k weights (softmax renormalises)
        preds = ranking.predictions()
        positions = ranking.rank_of(targets)
        for q in range(sims.shape[0]):
            leader, order = reference_walk(weights[q].tolist(), labels[q, :k].tolist(), 3)
            assert preds[q] == leader, (rule, k, q)
            assert positions[q] == order.index(int(targets[q])), (rule, k, q)


def test_ties_go_to_the_class_that_reached_the_maximum_first():
    sims = torch.tensor([[0.9, 0.8, 0.7, 0.6]])
    # plurality: A B B A -> 2:2, B reached 2 at rank 2, A at rank 3 -> B
    assert predict(sims, torch.tensor([[0, 1, 1, 0]]), 2, "plurality").item() == 1
    assert predict(sims, torch.tensor([[1, 0, 0, 1]]), 2, "plurality").item() == 0
    # rank: 1/2 + 1/5 (class 0) vs 1/3 + 1/4 (class 1): 0.7 > 0.583 -> class 0
    assert predict(sims, torch.tensor([[0, 1, 1, 0]]), 2, "rank").item() == 0


def test_single_k_prediction_equals_all_k_accuracy_path():
    g = torch.Generator().manual_seed(3)
    sims = torch.rand(500, 30, generator=g).sort(dim=1, descending=True).values * 2 - 1
    labels = torch.randint(0, 7, (500, 30), generator=g)
    targets = torch.randint(0, 7, (500,), generator=g)
    for rule in RULES:
        acc = accuracy_for_ks(sims, labels, targets, 7, rule, (1, 5, 30), chunk=128)
        for k in (1, 5, 30):
            top1 = 100.0 * (predict(sims, labels, 7, rule, k) == targets).float().mean().item()
            assert acc[k][0] == pytest.approx(top1)
            assert acc[k][1] >= acc[k][0]


def test_dino_rule_matches_eval_knn_formula():
    g = torch.Generator().manual_seed(4)
    sims = torch.rand(200, 20, generator=g).sort(dim=1, descending=True).values
    labels = torch.randint(0, 10, (200, 20), generator=g)
    one_hot = torch.nn.functional.one_hot(labels, 10).double()
    scores = (one_hot * torch.exp(sims.double() / 0.07)[..., None]).sum(1)  # DINO eval_knn
    assert torch.equal(predict(sims, labels, 10, "dino", temperature=0.07), scores.argmax(1))


def test_bad_arguments_have_clear_errors():
    sims, labels = tied_neighbours(q=2, width=4)
    with pytest.raises(ValueError, match="Unknown voting rule"):
        predict(sims, labels, 3, "majority")
    with pytest.raises(ValueError, match="every k"):
        rank_classes(sims, labels, 3, "rank", [5])
