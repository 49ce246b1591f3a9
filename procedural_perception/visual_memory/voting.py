"""Voting rules that turn a query's ranked neighbours into a class prediction.

A query's neighbours come sorted by decreasing cosine similarity (ties by increasing id, see
:mod:`procedural_perception.visual_memory.index`). Every rule walks them in rank order and adds a weight to the
neighbour's class (Geirhos et al., "visual memory"; Caron et al., DINO ``eval_knn``):

==============  ======================================  =============================================
rule            weight of the neighbour at rank ``r``     notes
==============  ======================================  =============================================
``plurality``   ``1``                                    one vote each
``distance``    ``exp(-d) ** power``                     ``d = 1 - cosine``; ``power = 1`` by default
``softmax``     ``exp((1 - d_hat) / temperature)``       ``d_hat``: the query's top-k distances
                                                         min-max normalised to [0, 1], so the weights
                                                         depend on k (0 when all k distances are equal)
``dino``        ``exp(cosine / temperature)``            DINO's ``eval_knn``; ``temperature = 0.07``
``rank``        ``1 / (r + 2)``                          0-based rank: 1/2, 1/3, ...; accuracy rises
                                                         with k to a plateau instead of peaking
==============  ======================================  =============================================

The rules live in the registry :data:`VOTING_RULES` (name -> :class:`VotingRule`: a weight function and
whether its weights depend on k); :data:`RULES` is a live view of its names. Adding a rule is one weight
function plus one :func:`register_rule` call.

Ties between classes go to the class that reached the maximum first in the walk. Weights are
positive, so a class's score reaches its final value at its *last* neighbour within the top k; the
winner among tied classes is the one whose last neighbour ranks highest. Classes without a
neighbour rank after every class with one, in class-index order (this only matters for top-5).

Scores are accumulated in float64 one rank at a time, so every caller (evaluation over many k,
single predictions, the privacy audit, attribution) sums the same terms in the same order and
gets bit-identical scores, hence identical tie decisions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

# DINO's eval_knn temperature; Geirhos et al. use the same value for the softmax rule.
DEFAULT_TEMPERATURE = 0.07
# The paper's privacy setting (section 6): k = 20 neighbours, the DINO vote at DEFAULT_TEMPERATURE. It is
# also the memory's default classification and the experiment's headline accuracy, fixed in advance
# rather than picked as the best k on test queries. Every caller takes these two names from here.
PAPER_K = 20
PAPER_RULE = "dino"
# Exponent of the distance rule; 1 is the notebook's default.
DEFAULT_POWER = 1.0

# A weight function maps ``similarities [N, k]`` (float64, rank order), ``temperature`` and ``power`` to
# the ``[N, k]`` float64 vote weights of those k neighbours; weights must be positive (see module doc).
WeightFunction = Callable[[torch.Tensor, float, float], torch.Tensor]


@dataclass(frozen=True)
class VotingRule:
    """One voting rule: its weight function and whether the weights depend on the list's length k.

    ``depends_on_k``: True when a neighbour's weight changes with the number of neighbours voting
    (softmax's min-max normalisation over the top k). Such a rule walks the first k ranks once per k;
    the others accumulate one running sum and read it off at each k. Both give the same numbers, the
    flag only tells :func:`rank_classes` which shortcut is exact.
    """

    weights: WeightFunction
    depends_on_k: bool = False


def _plurality(sims: torch.Tensor, temperature: float, power: float) -> torch.Tensor:
    return torch.ones_like(sims)


def _distance(sims: torch.Tensor, temperature: float, power: float) -> torch.Tensor:
    return torch.exp(-(1.0 - sims)) ** power


def _softmax(sims: torch.Tensor, temperature: float, power: float) -> torch.Tensor:
    dist = 1.0 - sims
    low = dist.min(dim=1, keepdim=True).values
    span = dist.max(dim=1, keepdim=True).values - low
    # All k distances equal (always so for k = 1): every neighbour is "nearest", d_hat = 0.
    d_hat = torch.where(span > 0, (dist - low) / span.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
    return torch.exp((1.0 - d_hat) / temperature)


def _dino(sims: torch.Tensor, temperature: float, power: float) -> torch.Tensor:
    return torch.exp(sims / temperature)


def _rank(sims: torch.Tensor, temperature: float, power: float) -> torch.Tensor:
    ranks = torch.arange(sims.shape[1], dtype=torch.float64, device=sims.device)
    return (1.0 / (ranks + 2.0)).expand_as(sims).clone()


# The registry: adding a rule is one weight function plus one ``register_rule`` call (or one entry here).
# Every caller (classification, evaluation, the privacy audit, attribution, the CLI) looks rules up here.
VOTING_RULES: dict[str, VotingRule] = {
    "plurality": VotingRule(_plurality),
    "distance": VotingRule(_distance),
    "softmax": VotingRule(_softmax, depends_on_k=True),
    "dino": VotingRule(_dino),
    "rank": VotingRule(_rank),
}


def register_rule(name: str, weights: WeightFunction, depends_on_k: bool = False) -> VotingRule:
    """Add a voting rule under ``name``; it then joins :data:`RULES` and every caller that takes a rule."""
    if name in VOTING_RULES:
        raise ValueError(f"Voting rule {name!r} is already registered; pick another name.")
    rule = VotingRule(weights, depends_on_k)
    VOTING_RULES[name] = rule
    return rule


class RuleNames(Sequence[str]):
    """Live, read-only view of the registry's names in registration order (behaves like a tuple).

    A view rather than a tuple snapshot, so a rule registered after import still appears in
    ``RULES`` wherever it was imported (CLI choices, evaluation defaults, benchmarks).
    """

    def __getitem__(self, index):
        return tuple(VOTING_RULES)[index]

    def __len__(self) -> int:
        return len(VOTING_RULES)

    def __contains__(self, name: object) -> bool:
        return name in VOTING_RULES

    def __eq__(self, other: object) -> bool:
        return tuple(self) == (tuple(other) if isinstance(other, (tuple, RuleNames)) else other)

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return repr(tuple(self))


RULES = RuleNames()


def check_rule(rule: str) -> VotingRule:
    """The registered :class:`VotingRule` named ``rule``; a clear error for an unknown name."""
    if rule not in VOTING_RULES:
        raise ValueError(
            f"Unknown voting rule {rule!r}; choose one of {', '.join(RULES)} "
            "(or add one with procedural_perception.visual_memory.voting.register_rule)."
        )
    return VOTING_RULES[rule]


def neighbour_weights(
    similarities: torch.Tensor,
    rule: str,
    temperature: float = DEFAULT_TEMPERATURE,
    power: float = DEFAULT_POWER,
) -> torch.Tensor:
    """Vote weight of every neighbour of a list of exactly ``k`` neighbours.

    ``similarities``: ``[N, k]`` cosine similarities in rank order. Returns ``[N, k]`` float64.
    For a rule that depends on k (``softmax``: min-max normalisation over these ``k`` columns), pass
    exactly the top-k (not a longer list) to get the weights of a k-neighbour vote.
    """
    return check_rule(rule).weights(similarities.to(torch.float64), temperature, power)


@dataclass
class ClassRanking:
    """Class scores after a vote over the top ``k`` neighbours of ``N`` queries.

    ``scores [N, C]`` float64 summed weights; ``last [N, C]`` rank of each class's last neighbour
    within the top k (the tie-break key), ``k + c`` for a class ``c`` with no neighbour.
    """

    scores: torch.Tensor
    last: torch.Tensor

    def predictions(self) -> torch.Tensor:
        """``[N]`` winning class: highest score, ties to the lowest ``last``."""
        top = self.scores == self.scores.max(dim=1, keepdim=True).values
        key = torch.where(top, self.last, torch.iinfo(torch.long).max)
        return key.argmin(dim=1)

    def rank_of(self, targets: torch.Tensor) -> torch.Tensor:
        """``[N]`` 0-based position of ``targets`` in each query's class ranking (0 = predicted)."""
        t_score = self.scores.gather(1, targets[:, None])
        t_last = self.last.gather(1, targets[:, None])
        beats = (self.scores > t_score) | ((self.scores == t_score) & (self.last < t_last))
        return beats.sum(dim=1)


def rank_classes(
    similarities: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    rule: str,
    ks: Sequence[int],
    temperature: float = DEFAULT_TEMPERATURE,
    power: float = DEFAULT_POWER,
    sample_weights: torch.Tensor | None = None,
) -> list[ClassRanking]:
    """Vote with the top ``k`` neighbours for every ``k`` in ``ks``, in one walk over the ranks.

    ``similarities``, ``labels``: ``[N, K]`` in rank order with ``K >= max(ks)``;
    ``sample_weights``: optional ``[N, K]`` factor per neighbour (soft pruning). Rules whose weight
    does not depend on k accumulate one running sum and read it off at each k (cumulative votes);
    a rule that depends on k (``softmax`` renormalises its distances per k) walks the first k ranks
    once per k.
    Returns one :class:`ClassRanking` per entry of ``ks``.
    """
    voting_rule = check_rule(rule)
    n, width = labels.shape
    ks = [int(k) for k in ks]
    if not ks or min(ks) < 1 or max(ks) > width:
        raise ValueError(f"every k must be in 1..{width} (the neighbours given), got {ks}")
    labels = labels.long()
    factor = None if sample_weights is None else sample_weights.to(torch.float64)

    def walk(weights: torch.Tensor, stops: list[int]) -> dict[int, ClassRanking]:
        if factor is not None:
            weights = weights * factor[:, : weights.shape[1]]
        scores = torch.zeros(n, num_classes, dtype=torch.float64, device=labels.device)
        last = torch.full((n, num_classes), -1, dtype=torch.long, device=labels.device)
        classes = torch.arange(num_classes, device=labels.device)
        out = {}
        for r in range(max(stops)):
            column = labels[:, r : r + 1]
            scores.scatter_add_(1, column, weights[:, r : r + 1])
            last.scatter_(1, column, r)
            if r + 1 in stops:
                out[r + 1] = ClassRanking(scores.clone(), torch.where(last < 0, r + 1 + classes, last))
        return out

    if voting_rule.depends_on_k:
        return [walk(neighbour_weights(similarities[:, :k], rule, temperature, power), [k])[k] for k in ks]
    weights = neighbour_weights(similarities[:, : max(ks)], rule, temperature, power)
    rankings = walk(weights, sorted(set(ks)))
    return [rankings[k] for k in ks]


def predict(
    similarities: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    rule: str,
    k: int | None = None,
    temperature: float = DEFAULT_TEMPERATURE,
    power: float = DEFAULT_POWER,
    sample_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[N]`` predicted class from the top ``k`` (default: all given) neighbours ``[N, K]``."""
    k = labels.shape[1] if k is None else k
    ranking = rank_classes(similarities, labels, num_classes, rule, [k], temperature, power, sample_weights)[0]
    return ranking.predictions()


def accuracy_for_ks(
    similarities: torch.Tensor,
    labels: torch.Tensor,
    targets: torch.Tensor,
    num_classes: int,
    rule: str,
    ks: Sequence[int],
    temperature: float = DEFAULT_TEMPERATURE,
    power: float = DEFAULT_POWER,
    chunk: int = 4096,
) -> dict[int, tuple[float, float]]:
    """Top-1 and top-5 accuracy (in %) of ``rule`` for every k in ``ks``.

    ``similarities``, ``labels``: ``[Q, K]`` neighbours of ``Q`` queries; ``targets``: ``[Q]``.
    Queries are processed in chunks of ``chunk`` so memory stays ``O(chunk * num_classes)``.
    """
    top1 = torch.zeros(len(ks), dtype=torch.long)
    top5 = torch.zeros(len(ks), dtype=torch.long)
    for start in range(0, targets.shape[0], chunk):
        part = slice(start, start + chunk)
        rankings = rank_classes(similarities[part], labels[part], num_classes, rule, ks, temperature, power)
        for i, ranking in enumerate(rankings):
            position = ranking.rank_of(targets[part].long())
            top1[i] += int((position == 0).sum())
            top5[i] += int((position < 5).sum())
    total = max(targets.shape[0], 1)
    return {int(k): (100.0 * float(top1[i]) / total, 100.0 * float(top5[i]) / total) for i, k in enumerate(ks)}
