"""The exact privacy audit equals brute-force leave-one-out, for every rule and several k."""

import numpy as np
import pytest
import torch

from procedural_perception.visual_memory import RULES, VisualMemory
from procedural_perception.visual_memory.privacy import removal_changes


def clustered(n, q, dim=6, classes=3, seed=0, duplicates=6):
    """Memory and queries around class centres; some memory vectors repeated exactly (similarity ties)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g)
    labels = torch.randint(0, classes, (n,), generator=g)
    memory = centres[labels] + 0.9 * torch.randn(n, dim, generator=g)
    memory[-duplicates:] = memory[:duplicates]  # exact duplicates with possibly other labels
    query_labels = torch.randint(0, classes, (q,), generator=g)
    queries = centres[query_labels] + 0.9 * torch.randn(q, dim, generator=g)
    queries[:2] = memory[:2]  # queries equal to stored vectors: ties at rank 0
    return memory, labels, queries


def build(memory, labels, keep=None):
    keep = range(len(labels)) if keep is None else keep
    keep = list(keep)
    out = VisualMemory(memory.shape[1])
    out.add(memory[keep], labels[keep])
    return out, np.array(keep)


def leave_one_out(memory, labels, queries, k, rule):
    """Positions (in the original order) whose removal changes at least one prediction."""
    full, _ = build(memory, labels)
    before = full.classify(queries, k, rule)
    changed = set()
    for drop in range(len(labels)):
        smaller, _ = build(memory, labels, [i for i in range(len(labels)) if i != drop])
        if not torch.equal(smaller.classify(queries, k, rule), before):
            changed.add(drop)
    return changed


@pytest.mark.parametrize("rule", RULES)
def test_exact_audit_equals_leave_one_out(rule):
    memory, labels, queries = clustered(n=36, q=40)
    for k in (1, 3, 7):
        audit = build(memory, labels)[0].audit(queries, k, rule)
        # ids were given in insertion order 0..n-1, so an id is the original position.
        assert set(audit.non_private_ids.tolist()) == leave_one_out(memory, labels, queries, k, rule), (rule, k)
        assert audit.fraction == pytest.approx(audit.count / len(labels))


def test_audit_changes_match_removal_from_the_memory_itself():
    memory, labels, queries = clustered(n=40, q=10, seed=2)
    mem, _ = build(memory, labels)
    report = mem.audit(queries, 5, "softmax")
    before = mem.classify(queries, 5, "softmax")
    for sample in report.non_private_ids[:5]:
        copy, _ = build(memory, labels)
        copy.remove([int(sample)], reason="audit check")
        flips = int((copy.classify(queries, 5, "softmax") != before).sum())
        assert flips == report.influence[list(report.non_private_ids).index(sample)]


def test_memory_of_exactly_k_samples_and_bad_width():
    sims = torch.tensor([[0.9, 0.5, 0.1]])
    labels = torch.tensor([[0, 1, 1]])
    changed = removal_changes(sims, labels, 2, 3, "plurality")  # memory of 3 = k: 2 left after a removal
    assert changed.tolist() == [[False, True, True]]
    with pytest.raises(ValueError, match="top-"):
        removal_changes(sims[:, :1], labels[:, :1], 2, 3, "plurality")
