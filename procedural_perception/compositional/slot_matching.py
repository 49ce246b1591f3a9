"""Optimal slot-to-target assignment (the Hungarian matching of object-centric learning).

Slots are an unordered set, so every loss or score that compares ``K`` predicted slots with ``K``
targets first finds the permutation with the lowest total cost. For the small ``K`` of sprite scenes
all ``K!`` permutations are scored at once on tensors (batched, differentiable in the costs); the
optimum equals ``scipy.optimize.linear_sum_assignment``'s, which is used for ``K > MAX_ENUMERATED``.
"""

from __future__ import annotations

import itertools

import torch
from scipy.optimize import linear_sum_assignment

# 5! = 120 permutations per sample is still cheaper than a Python loop over scipy calls.
MAX_ENUMERATED = 5


def best_permutation(cost: torch.Tensor) -> torch.Tensor:
    """``cost [B, K, K]`` (row = slot, column = target) -> ``perm [B, K]``: slot ``i`` goes to target
    ``perm[b, i]``, minimising ``sum_i cost[b, i, perm[b, i]]``."""
    return best_assignment(cost)


def best_assignment(cost: torch.Tensor) -> torch.Tensor:
    """``cost [B, R, C]`` with ``R <= C`` -> ``[B, R]``: distinct columns, one per row, of least total cost.

    With more slots than objects (a background slot), pass ``[B, objects, slots]``: each object gets
    its own slot and the spare slots stay unmatched."""
    batch, rows, cols = cost.shape
    if rows > cols:
        raise ValueError(f"best_assignment needs rows <= columns, got a [{batch}, {rows}, {cols}] cost.")
    if cols <= MAX_ENUMERATED:
        perms = torch.tensor(list(itertools.permutations(range(cols), rows)), device=cost.device)  # [P, R]
        index = torch.arange(rows, device=cost.device)
        totals = cost.detach()[:, index, perms].sum(-1)  # [B, P]
        return perms[totals.argmin(dim=1)]
    out = []
    for c in cost:
        r, col = linear_sum_assignment(c.detach().cpu().numpy())
        out.append(torch.as_tensor(col[r.argsort()]))
    return torch.stack(out).to(cost.device)


def align_targets(targets: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """``targets [B, K, ...]`` reordered so that ``out[b, i] = targets[b, perm[b, i]]``."""
    index = perm.view(*perm.shape, *([1] * (targets.dim() - 2))).expand(*perm.shape, *targets.shape[2:])
    return targets.gather(1, index)


def matched_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between ``pred [B, K, D]`` and ``target [B, K, D]`` after the best matching."""
    cost = ((pred.unsqueeze(2) - target.unsqueeze(1)) ** 2).mean(-1)  # [B, K(slot), K(target)]
    return ((pred - align_targets(target, best_permutation(cost))) ** 2).mean()
