"""Registries where people extend: a voting rule or a process added by one registration joins every caller."""

import pytest
import torch

from datamodules.procedural import processes
from datamodules.procedural.processes import PROCESSES, Process
from datamodules.shaders import ShaderDataModule
from procedural_perception.visual_memory import RULES, VisualMemory, voting
from procedural_perception.visual_memory.voting import VOTING_RULES, VotingRule, rank_classes, register_rule


def _cube(sims, temperature, power):
    """A made-up rule for the tests: (1 + cosine)^3, positive, independent of k."""
    return (1.0 + sims) ** 3


def _above_last(sims, temperature, power):
    """A made-up k-dependent rule: 1 + (cosine - the k-th neighbour's cosine)."""
    return 1.0 + sims - sims[:, -1:]


@pytest.fixture
def cube(monkeypatch):
    monkeypatch.setitem(VOTING_RULES, "cube", VotingRule(_cube))
    return "cube"


def reference_votes(sims, labels, num_classes, k, weight):
    """Plain loop: per query, sum weight(rank) per class over the top k; ties to the class whose last
    neighbour ranks highest; classes without a neighbour after all others, by index."""
    out = []
    for q in range(sims.shape[0]):
        w = weight(sims[q : q + 1, :k].double())[0]
        score, last = [0.0] * num_classes, [k + c for c in range(num_classes)]
        for r in range(k):
            c = int(labels[q, r])
            score[c] += float(w[r])
            last[c] = r
        out.append(min(range(num_classes), key=lambda c: (-score[c], last[c])))
    return torch.tensor(out)


def test_a_registered_rule_joins_rules_everywhere(cube):
    from procedural_perception.evaluations import knn

    assert cube in RULES and cube in voting.RULES and RULES[-1] == cube
    assert tuple(RULES) == tuple(VOTING_RULES) and len(RULES) == len(VOTING_RULES)
    assert knn.RULES is voting.RULES  # the evaluation's default rule list sees it too


def test_registered_rule_votes_as_the_reference(cube):
    g = torch.Generator().manual_seed(3)
    sims = torch.rand(50, 9, generator=g).sort(dim=1, descending=True).values
    labels = torch.randint(0, 4, (50, 9), generator=g)
    for ranking, k in zip(rank_classes(sims, labels, 4, cube, [1, 4, 9]), [1, 4, 9], strict=True):
        expected = reference_votes(sims, labels, 4, k, lambda s: _cube(s, 0.0, 0.0))
        assert torch.equal(ranking.predictions(), expected), k


def test_a_rule_that_depends_on_k_is_renormalised_per_k(monkeypatch):
    monkeypatch.setitem(VOTING_RULES, "above_last", VotingRule(_above_last, depends_on_k=True))
    g = torch.Generator().manual_seed(4)
    sims = torch.rand(60, 8, generator=g).sort(dim=1, descending=True).values
    labels = torch.randint(0, 3, (60, 8), generator=g)
    together = rank_classes(sims, labels, 3, "above_last", [3, 8])
    for ranking, k in zip(together, [3, 8], strict=True):
        alone = rank_classes(sims[:, :k], labels[:, :k], 3, "above_last", [k])[0]
        assert torch.equal(ranking.scores, alone.scores), k
        expected = reference_votes(sims, labels, 3, k, lambda s: _above_last(s, 0.0, 0.0))
        assert torch.equal(ranking.predictions(), expected), k


def test_registered_rule_classifies_and_audits_through_the_memory(cube, monkeypatch):
    g = torch.Generator().manual_seed(5)
    centres = torch.randn(3, 6, generator=g)
    labels = torch.randint(0, 3, (30,), generator=g)
    vectors = centres[labels] + 0.9 * torch.randn(30, 6, generator=g)
    queries = centres[torch.randint(0, 3, (25,), generator=g)] + 0.9 * torch.randn(25, 6, generator=g)

    def build(keep):
        mem = VisualMemory(6)
        mem.add(vectors[keep], labels[keep])
        return mem

    full = build(list(range(30)))
    # Scaling every weight by 3 changes no decision: "3 x plurality" must classify as plurality does.
    monkeypatch.setitem(VOTING_RULES, "triple", VotingRule(lambda s, t, p: 3.0 * torch.ones_like(s)))
    assert torch.equal(full.classify(queries, 5, "triple"), full.classify(queries, 5, "plurality"))
    k = 4
    before = full.classify(queries, k, cube)
    brute = {d for d in range(30)
             if not torch.equal(build([i for i in range(30) if i != d]).classify(queries, k, cube), before)}
    assert set(full.audit(queries, k, cube).non_private_ids.tolist()) == brute


def test_register_rule_and_unknown_names(monkeypatch):
    monkeypatch.setattr(voting, "VOTING_RULES", dict(VOTING_RULES))
    rule = register_rule("cube", _cube)
    assert voting.VOTING_RULES["cube"] is rule and "cube" in voting.RULES
    with pytest.raises(ValueError, match="already registered"):
        register_rule("dino", _cube)
    with pytest.raises(ValueError, match="Unknown voting rule 'nope'.*register_rule"):
        voting.check_rule("nope")


def test_default_reuse_lives_in_the_process_registry(monkeypatch):
    # The values the former separate table held: the stream of every existing process is unchanged.
    assert {name: p.default_reuse for name, p in PROCESSES.items()} == {
        "shaders": 1.0, "mixup": 24.0, "kml": 24.0, "kml_mixup": 24.0, "stylegan": 1.0, "dead_leaves": 1.0}
    monkeypatch.setitem(PROCESSES, "pairs", Process("pairs", 2, processes._mixup, default_reuse=7.0))
    dm = ShaderDataModule("pairs", image_size=32, batch_size=4, num_workers=0, samples_per_epoch=8, block_size=4)
    assert dm.config.reuse == 7.0 and dm.config.ingredients == 2
    assert ShaderDataModule("pairs", image_size=32, batch_size=4, num_workers=0, samples_per_epoch=8,
                            block_size=4, reuse=2.0).config.reuse == 2.0
