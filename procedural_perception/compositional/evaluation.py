"""Compositional generalisation scores of slot representations (Wiedemer et al. 2024 protocol).

A readout maps one slot vector to one object's latents. It is fitted on ID slots only (inputs and
targets standardised with ID statistics; slots matched to objects by the Hungarian rule on the
readout's own error) and then applied unchanged to held-out ID slots and to OOD slots. Scores: R^2
per continuous factor (x, y, scale, hue) and accuracy for the categorical shape.
Pure evaluation math (no Lightning): used by ``procedural_perception/compositional/callback.py`` and
``procedural_perception/compositional/benchmark.py`` alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from sklearn.metrics import r2_score
from torch import nn

from procedural_perception.compositional.data import CONTINUOUS, FACTORS, SHAPE_INDEX
from procedural_perception.compositional.slot_matching import align_targets, best_assignment
from procedural_perception.compositional.slot_share import min_slot_share

CONTINUOUS_INDEX = [FACTORS.index(f) for f in CONTINUOUS]


@dataclass
class SlotReadout:
    """A fitted readout; ``predict(slots [N, K, D])`` -> (continuous ``[N, K, 4]`` in target units,
    shape logits ``[N, K, n_shapes]``)."""

    net: nn.Module
    slot_mean: torch.Tensor
    slot_std: torch.Tensor
    target_mean: torch.Tensor
    target_std: torch.Tensor

    @torch.no_grad()
    def predict(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cont, logits = _split(self.net((slots - self.slot_mean) / self.slot_std), len(CONTINUOUS))
        return cont * self.target_std + self.target_mean, logits


def _split(out: torch.Tensor, n_cont: int) -> tuple[torch.Tensor, torch.Tensor]:
    return out[..., :n_cont], out[..., n_cont:]


def _shape_labels(latents: torch.Tensor, n_shapes: int) -> torch.Tensor:
    return torch.round(latents[..., SHAPE_INDEX] * max(n_shapes - 1, 1)).long()


def _pair_costs(cont: torch.Tensor, logits: torch.Tensor, target_cont: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``[N, K(slot), M(object)]``: squared error (standardised units) + shape cross-entropy of each pairing."""
    sq = ((cont.unsqueeze(2) - target_cont.unsqueeze(1)) ** 2).sum(-1)
    logp = logits.log_softmax(-1)  # [N, K, C]
    ce = -logp.gather(2, labels.unsqueeze(1).expand(-1, logits.shape[1], -1))  # [N, K, M]: -log p_slot(label_obj)
    return sq + ce


def _object_slots(costs: torch.Tensor) -> torch.Tensor:
    """``costs [N, K(slot), M(object)]`` -> ``[N, M]``: the slot matched to each object (spare slots unused)."""
    return best_assignment(costs.transpose(1, 2))


def fit_slot_readout(slots: torch.Tensor, latents: torch.Tensor, n_shapes: int, kind: str = "mlp",
                     hidden: int = 64, steps: int = 400, lr: float = 1e-2, seed: int = 0) -> SlotReadout:
    """Fit on ID ``slots [N, K, D]`` and normalised ``latents [N, M, 5]`` (``K >= M``: spare slots unmatched).

    ``kind``: "mlp" (two hidden layers of ``hidden`` units) or "linear". Full-batch Adam for ``steps``
    steps at ``lr``; each step re-matches slots to objects with the current readout (min-cost
    permutation), so no ordering of the slots is assumed.
    """
    if kind not in ("mlp", "linear"):
        raise ValueError(f"readout kind must be 'mlp' or 'linear', got {kind!r}.")
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    slots, latents = slots.float(), latents.float()
    d_in, d_out = slots.shape[-1], len(CONTINUOUS) + n_shapes
    net = (nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, d_out))
           if kind == "mlp" else nn.Linear(d_in, d_out))
    torch.random.set_rng_state(generator_state)
    flat = slots.reshape(-1, d_in)
    slot_mean, slot_std = flat.mean(0), flat.std(0).clamp_min(1e-6)
    target = latents[..., CONTINUOUS_INDEX]
    target_mean, target_std = target.reshape(-1, len(CONTINUOUS)).mean(0), target.reshape(-1, len(CONTINUOUS)).std(0).clamp_min(1e-6)
    x, y, labels = (slots - slot_mean) / slot_std, (target - target_mean) / target_std, _shape_labels(latents, n_shapes)
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            cont, logits = _split(net(x), len(CONTINUOUS))
            costs = _pair_costs(cont, logits, y, labels).transpose(1, 2)  # [N, M, K]
            loss = costs.gather(2, best_assignment(costs).unsqueeze(-1)).mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    net.eval()
    return SlotReadout(net, slot_mean, slot_std, target_mean, target_std)


@torch.no_grad()
def score_slot_readout(readout: SlotReadout, slots: torch.Tensor, latents: torch.Tensor, n_shapes: int) -> dict[str, float]:
    """R^2 per continuous factor (``r2/<factor>``, their mean ``r2/mean``) and ``shape_acc`` on ``slots``."""
    cont, logits = readout.predict(slots.float())
    target, labels = latents[..., CONTINUOUS_INDEX].float(), _shape_labels(latents, n_shapes)
    costs = _pair_costs((cont - readout.target_mean) / readout.target_std, logits,
                        (target - readout.target_mean) / readout.target_std, labels)
    chosen = _object_slots(costs)  # [N, M]
    cont, logits = align_targets(cont, chosen), align_targets(logits, chosen)  # each object's slot, object order
    scores = {}
    for i, name in enumerate(CONTINUOUS):
        scores[f"r2/{name}"] = float(r2_score(target[..., i].reshape(-1).numpy(), cont[..., i].reshape(-1).numpy()))
    scores["r2/mean"] = sum(scores[f"r2/{n}"] for n in CONTINUOUS) / len(CONTINUOUS)
    scores["shape_acc"] = float((logits.argmax(-1) == labels).float().mean())
    return scores


@torch.no_grad()
def infer_slots(model, images: torch.Tensor, search: bool = False, batch_size: int = 256, **search_options) -> torch.Tensor:
    """``model.infer`` over ``images [N, 3, S, S]`` in batches -> slots ``[N, K, D]`` on the CPU."""
    device = next(model.parameters()).device
    out = [model.infer(images[i : i + batch_size].to(device), search=search, **search_options).cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out)


@torch.no_grad()
def reconstruction_error(model, images: torch.Tensor, slots: torch.Tensor, batch_size: int = 256) -> float:
    """Mean squared pixel error of ``model.render(slots)`` against ``images``."""
    device = next(model.parameters()).device
    total = 0.0
    for i in range(0, len(images), batch_size):
        recon = model.render(slots[i : i + batch_size].to(device)).cpu()
        total += float(((recon - images[i : i + batch_size]) ** 2).sum())
    return total / images.numel()


@torch.no_grad()
def recon_ratio(model, images: torch.Tensor, batch_size: int = 256) -> float:
    """Reconstruction error of the posterior means over the error of an all-black prediction
    (``mean(images^2)``) on ``images [N, 3, S, S]``: 1 draws nothing, 0 is perfect. The criterion that a
    decoder reproduces its training distribution before its OOD scores mean anything is <= 0.10."""
    slots = infer_slots(model, images, batch_size=batch_size)
    return reconstruction_error(model, images, slots, batch_size) / float((images**2).mean())


@torch.no_grad()
def slot_usage(model, images: torch.Tensor, n_objects: int | None = None, batch_size: int = 256) -> dict[str, float]:
    """How the decoder's pixels share the slots on ``images [N, 3, S, S]`` (models with ``decode``).

    ``interaction``: the regulariser's value (``interaction.py``); ``min_slot_share``: the mean over
    images of the ``n_objects``-th largest share of object pixels one slot owns (``slot_share.py``;
    ``n_objects`` defaults to the number of slots): about 1/n_objects when every object has its own
    slot, 0 when one slot draws everything (a collapse that also makes the interaction 0).
    """
    from procedural_perception.compositional.interaction import interaction_penalty
    from procedural_perception.compositional.slot_share import object_pixels

    device = next(model.parameters()).device
    inter, shares = [], []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(device)
        attention = model.decode(model.infer(x))[1]  # [L, B, H, P, K]
        inter.append(float(interaction_penalty(attention)) * len(x))
        weights = attention.sum(2).mean(0)  # [B, P, K]
        shares.append(min_slot_share(weights, object_pixels(x), n_objects or weights.shape[-1]).cpu())
    return {"interaction": sum(inter) / len(images), "min_slot_share": float(torch.cat(shares).mean())}


def evaluate_compositional(model, id_fit, id_eval, ood, n_shapes: int, search: bool = False,
                           search_scenes: int | None = None, readout: str = "mlp", readout_steps: int = 400,
                           seed: int = 0, search_fit_scenes: int = 0, **search_options) -> dict[str, float]:
    """Fit a readout on the encoder's ``id_fit`` slots, score it on ``id_eval`` and ``ood``.

    The sets are ``SpriteScenes`` (``.images``, ``.unit_latents``). Keys: ``id/<score>`` and
    ``ood/<score>`` (R^2 per factor, ``r2/mean``, ``shape_acc``, and ``recon`` for models with a
    decoder). With ``search``, also ``search/id/<score>`` and ``search/ood/<score>``: the first
    ``search_scenes`` scenes (all if None: the same scenes as the encoder rows) with slots refined by
    MAP search, ``model.infer(..., search=True, **search_options)``, each slot kept within its own ID
    range and stepped in units of its ID spread, scored by the same readout, unchanged. With
    ``search_fit_scenes > 0`` also ``search_fit/<split>/<score>``: a second readout fitted on the
    search-inferred slots of that many ``id_fit`` scenes (the readout then sees the kind of slots it
    is applied to). ``readout_steps``: Adam steps of each readout fit.
    """
    model.eval()
    id_slots = infer_slots(model, id_fit.images)
    fitted = fit_slot_readout(id_slots, id_fit.unit_latents, n_shapes, kind=readout, steps=readout_steps, seed=seed)
    if search:
        # Each slot stays inside its own box of ID latents, where the decoder and the readout were fitted.
        search_options = {"bounds": (id_slots.amin(dim=0), id_slots.amax(dim=0)), "scale": id_slots.std(dim=0),
                          **search_options}
    results: dict[str, float] = {}
    searched: dict[str, torch.Tensor] = {}
    modes = [("", False, None)] + ([("search/", True, search_scenes)] if search else [])
    for prefix, refine, n in modes:
        for split, data in (("id", id_eval), ("ood", ood)):
            images, latents = data.images[:n], data.unit_latents[:n]
            slots = infer_slots(model, images, search=refine, **(search_options if refine else {}))
            if refine:
                searched[split] = slots
            scores = score_slot_readout(fitted, slots, latents, n_shapes)
            results.update({f"{prefix}{split}/{k}": v for k, v in scores.items()})
            if hasattr(model, "render"):
                results[f"{prefix}{split}/recon"] = reconstruction_error(model, images, slots)
    if search and search_fit_scenes > 0:
        fit_set = id_fit.head(search_fit_scenes)
        fit_slots = infer_slots(model, fit_set.images, search=True, **search_options)
        refitted = fit_slot_readout(fit_slots, fit_set.unit_latents, n_shapes, kind=readout, steps=readout_steps,
                                    seed=seed)
        for split, data in (("id", id_eval), ("ood", ood)):
            scores = score_slot_readout(refitted, searched[split], data.unit_latents[:search_scenes], n_shapes)
            results.update({f"search_fit/{split}/{k}": v for k, v in scores.items()})
    return results
