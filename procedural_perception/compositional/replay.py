"""Generative replay: train the encoder on decoded recombinations of in-distribution slots.

Slots inferred on a batch of ID scenes are pooled (``B * K`` slot vectors); a new scene takes
``K`` slots drawn from the pool at random, so objects meet in combinations the data never showed.
With a background slot (``K = objects + 1``) only the *object* slots are pooled and redrawn
(``movable``: the ``n_objects`` slots that own the most object pixels, :func:`object_slots`) and each scene
keeps its own background slot: pooling every slot made scenes with three objects or none, which a model of
two-object scenes cannot re-encode, so replay trained the encoder on targets it could not recover.
The decoder renders them (no gradient: it is the teacher) and the encoder is trained to return the
slots it was given, by the Hungarian-matched slot MSE in standardised units (each latent dimension
divided by its spread over the pool, so that no dimension dominates and the loss does not depend on
the latent scale). This is Wiedemer et al.'s consistency loss with the pooled recombination of
arXiv 2512.08854; it only helps once the decoder renders ID scenes well, so it starts late.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from procedural_perception.compositional.slot_matching import matched_mse
from procedural_perception.compositional.slot_share import slot_shares


def recombine(slots: torch.Tensor, generator: torch.Generator | None = None,
              movable: torch.Tensor | None = None) -> torch.Tensor:
    """``slots [B, K, D]`` -> ``[B, K, D]``: every new scene draws its ``K`` slots from the pooled ``B * K``;
    with ``movable [B, K]`` bool (the same count per scene), only those positions are redrawn, from the pool of
    movable slots, and the others stay."""
    batch, k, dim = slots.shape
    if movable is None:
        index = torch.randint(batch * k, (batch, k), generator=generator).to(slots.device)
        return slots.reshape(batch * k, dim)[index]
    pool = slots[movable]  # [B * m, D]
    out = slots.clone()
    out[movable] = pool[torch.randint(len(pool), (len(pool),), generator=generator).to(slots.device)]
    return out


def object_slots(weights: torch.Tensor, objects: torch.Tensor, n_objects: int) -> torch.Tensor:
    """``weights [B, P, K]`` (the decoder's per-pixel slot weights), ``objects [B, P]`` bool (object pixels) ->
    ``[B, K]`` bool: the ``n_objects`` slots owning the largest shares of the object pixels (``slot_share.py``)."""
    # A tiny preference for earlier slots breaks ties (e.g. two slots owning no object pixel) deterministically.
    shares = slot_shares(weights, objects) + 1e-6 * torch.arange(weights.shape[-1], 0, -1, device=weights.device)
    top = shares.topk(n_objects, dim=1).indices
    return torch.zeros_like(shares, dtype=torch.bool).scatter_(1, top, True)


def standardised_matched_mse(pred: torch.Tensor, target: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
    """Matched slot MSE of ``pred``, ``target`` ``[B, K, D]`` in units of ``spread [D]``."""
    spread = spread.clamp_min(1e-3)
    return matched_mse(pred / spread, target / spread)


def replay_loss(encode: Callable[[torch.Tensor], torch.Tensor], render: Callable[[torch.Tensor], torch.Tensor],
                slots: torch.Tensor, generator: torch.Generator | None = None,
                movable: torch.Tensor | None = None) -> torch.Tensor:
    """Recombine ``slots [B, K, D]`` (detached ID posterior means; only the ``movable`` ones when given), render
    without gradient, and score ``encode`` (images -> ``[B, K, D]``) on recovering them (standardised,
    Hungarian-matched)."""
    slots = slots.detach()
    mixed = recombine(slots, generator, movable)
    with torch.no_grad():
        images = render(mixed).clamp(0, 1)
    return standardised_matched_mse(encode(images), mixed, slots.reshape(-1, slots.shape[-1]).std(0))


@torch.no_grad()
def replay_recoverability(encode: Callable[[torch.Tensor], torch.Tensor], render: Callable[[torch.Tensor], torch.Tensor],
                          images: torch.Tensor, generator: torch.Generator | None = None,
                          movable: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                          ) -> dict[str, float]:
    """Are replay's targets recoverable? On ID ``images [B, 3, S, S]``: their slots ``encode(images)``
    (posterior means ``[B, K, D]``), recombined from the pool, rendered and re-encoded; the error of the
    re-encoded slots against the recombined ones (standardised by the pool's spread, Hungarian-matched).

    ``recombined``: that error (0: recovered exactly; replay trains the encoder towards it);
    ``reencoded``: the same round trip without recombination (the ID scenes' own slots);
    ``chance``: the error against the recombined slots of an unrelated permutation of the batch, the level
    of an encoder that ignores its input. ``movable(images, slots) -> [B, K]`` bool: the slots replay redraws
    (None: all), as the model's replay does.
    """
    slots = encode(images)
    spread = slots.reshape(-1, slots.shape[-1]).std(0)
    mixed = recombine(slots, generator, None if movable is None else movable(images, slots))
    recovered = encode(render(mixed).clamp(0, 1))
    shuffled = mixed[torch.randperm(len(mixed), generator=generator).to(mixed.device)]
    own = encode(render(slots).clamp(0, 1))
    return {"recombined": float(standardised_matched_mse(recovered, mixed, spread)),
            "reencoded": float(standardised_matched_mse(own, slots, spread)),
            "chance": float(standardised_matched_mse(recovered, shuffled, spread))}
