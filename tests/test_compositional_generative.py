"""The rebuilt generative side of the compositional study (issue 13): alpha-mask decoding, the regulariser's
schedule, the collapse monitor, MAP search, pooled replay, rectangular matching and the table's refusal rule."""

import itertools

import pytest
import torch
from scipy.optimize import linear_sum_assignment

from procedural_perception.compositional import benchmark
from procedural_perception.compositional import evaluation as comp
from procedural_perception.compositional.alpha_decoder import AlphaMaskDecoder
from procedural_perception.compositional.interaction import interaction_penalty
from procedural_perception.compositional.latent_search import gaussian_prior, latent_search
from procedural_perception.compositional.regulariser_schedule import PlateauDetector, ramp_weight
from procedural_perception.compositional.replay import (
    object_slots,
    recombine,
    replay_recoverability,
    standardised_matched_mse,
)
from procedural_perception.compositional.slot_decoder import SlotDecoder
from procedural_perception.compositional.slot_matching import best_assignment
from procedural_perception.compositional.slot_share import min_slot_share
from procedural_perception.compositional.slot_vae import SlotVAE

SMALL = dict(slot_dim=4, d_model=16, heads=2, hidden=32, channels=8, out_hidden=16)


def _at_step(model, step, total):
    model.trainer = type("T", (), {"global_step": step, "estimated_stepping_batches": total, "should_stop": False})()
    return model


def test_alpha_masks_sum_to_one_over_slots_and_compose_the_image():
    torch.manual_seed(0)
    decoder = AlphaMaskDecoder(slot_dim=4, image_size=16, d_model=16, layers=2, frequencies=4)
    slots = torch.randn(3, 3, 4)
    images, masks = decoder(slots)
    assert images.shape == (3, 3, 16, 16) and masks.shape == (1, 3, 1, 256, 3)
    assert torch.allclose(masks.sum(-1), torch.ones(1, 3, 1, 256), atol=1e-6)
    rgb, logits = decoder.slot_outputs(slots)  # [B, K, P, 3], [B, K, P]
    expected = (logits.softmax(1).unsqueeze(-1) * rgb).sum(1)  # reference: sum_k softmax_k(alpha) rgb_k
    assert torch.allclose(images.flatten(2).transpose(1, 2), expected, atol=1e-6)
    # Each slot is decoded alone: changing slot 2 leaves slots 0 and 1's colours and logits unchanged.
    changed = slots.clone()
    changed[:, 2] += 1.0
    rgb2, logits2 = decoder.slot_outputs(changed)
    assert torch.allclose(rgb2[:, :2], rgb[:, :2]) and torch.allclose(logits2[:, :2], logits[:, :2])
    # Pixels are independent and the slot order does not matter.
    pixels = torch.tensor([0, 5, 77, 255])
    colours, sub = decoder.render_pixels(slots, pixels)
    assert torch.allclose(colours, images.flatten(2).transpose(1, 2)[:, pixels], atol=1e-6)
    assert torch.allclose(decoder(slots[:, [2, 0, 1]])[0], images, atol=1e-6)
    assert interaction_penalty(masks) > 0  # soft masks overlap


def test_vae_with_alpha_decoder_and_background_slot():
    model = SlotVAE(decoder="alpha", n_slots=3, n_objects=2, **SMALL)
    out = model.losses(torch.rand(2, 3, 32, 32))
    assert all(torch.isfinite(v) for v in out.values())
    assert model.infer(torch.rand(2, 3, 32, 32)).shape == (2, 3, 4)
    with pytest.raises(ValueError, match="n_objects must be"):
        SlotVAE(n_slots=2, n_objects=3, **SMALL)
    with pytest.raises(ValueError, match="decoder must be"):
        SlotVAE(decoder="conv", **SMALL)
    with pytest.raises(ValueError, match="fractions of training"):
        SlotVAE(alpha_warmup=2.0, **SMALL)


def test_attention_decoder_mlp_output_head():
    decoder = SlotDecoder(slot_dim=4, image_size=16, d_model=16, heads=4, out_hidden=24, frequencies=4)
    linears = [m for m in decoder.out if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [24, 24, 3]
    assert decoder(torch.randn(2, 3, 4))[0].shape == (2, 3, 16, 16)


def test_min_slot_share_with_a_background_slot():
    objects = torch.tensor([[True, True, True, True, False, False]])
    # Slot 0 owns 3 object pixels, slot 1 one, slot 2 (background) the black pixels: 2nd largest share = 1/4.
    owner = torch.tensor([[0, 0, 0, 1, 2, 2]])
    weights = torch.nn.functional.one_hot(owner, 3).float()
    assert min_slot_share(weights, objects, 2).item() == pytest.approx(0.25)
    assert min_slot_share(weights, objects, 3).item() == 0.0
    collapsed = torch.nn.functional.one_hot(torch.tensor([[0, 0, 0, 0, 2, 2]]), 3).float()
    assert min_slot_share(collapsed, objects, 2).item() == 0.0


def test_regulariser_schedule_by_hand():
    # 1000 steps, off for the first 30%, ramp over 25% (250 steps).
    assert ramp_weight(1e-4, 299, 1000, 0.3, 0.25) == 0.0
    assert ramp_weight(1e-4, 300, 1000, 0.3, 0.25) == 0.0
    assert ramp_weight(1e-4, 425, 1000, 0.3, 0.25) == pytest.approx(0.5e-4)
    assert ramp_weight(1e-4, 900, 1000, 0.3, 0.25) == pytest.approx(1e-4)
    assert ramp_weight(1e-4, 150, 1000, 0.3, 0.25, started_at=100) == pytest.approx(1e-4 * 50 / 250)
    with pytest.raises(ValueError, match="fractions"):
        ramp_weight(1e-4, 0, 10, 1.5, 0.2)


def test_plateau_detector():
    falling, flat = PlateauDetector(window=20, tolerance=0.01), PlateauDetector(window=20, tolerance=0.01)
    for step in range(200):
        falling.update(step, 0.97**step)
        flat.update(step, 1.0 + 0.001 * (step % 2))
    assert falling.reached_at is None
    assert flat.reached_at is not None and flat.update(500, 100.0)


def test_alpha_starts_at_the_plateau_when_asked():
    model = _at_step(SlotVAE(alpha=1.0, alpha_start=0.5, alpha_warmup=0.2, alpha_on_plateau=True, **SMALL), 30, 100)
    assert model.alpha_now() == 0.0
    model.plateau.reached_at = 20
    assert model.alpha_now() == pytest.approx(10 / 20)


def test_collapse_monitor_stops_the_run_with_a_clear_message():
    model = _at_step(SlotVAE(min_slot_share=0.05, collapse_check_start=0.5, **SMALL), 10, 100)
    model.monitor_collapse(0.0, recon_ratio=0.9)  # before the check starts: no stop
    assert not model.trainer.should_stop and model.collapsed_at_step is None
    model.trainer.global_step = 60
    for _ in range(30):  # a decoder that does not draw the objects yet (ratio 0.9): the share means nothing
        model.monitor_collapse(0.0, recon_ratio=0.9)
    assert not model.trainer.should_stop
    with pytest.warns(UserWarning, match="Slot collapse at step 60"):
        for _ in range(30):
            model.monitor_collapse(0.0, recon_ratio=0.05)
    assert model.trainer.should_stop and model.collapsed_at_step == 60
    healthy = _at_step(SlotVAE(min_slot_share=0.05, **SMALL), 90, 100)
    for _ in range(30):
        healthy.monitor_collapse(0.4, recon_ratio=0.05)
    assert not healthy.trainer.should_stop
    off = _at_step(SlotVAE(min_slot_share=0.0, **SMALL), 90, 100)
    off.monitor_collapse(0.0, recon_ratio=0.05)
    assert not off.trainer.should_stop


def test_gaussian_prior_by_hand():
    z = torch.tensor([[[1.0, 2.0]], [[0.0, -1.0]]])  # [B=2, K=1, D=2]
    assert torch.allclose(gaussian_prior(0.5)(z), torch.tensor([0.5 * 0.5 * 5, 0.5 * 0.5 * 1]))
    mean, logvar = torch.ones_like(z), torch.log(torch.full_like(z, 4.0))
    expected = torch.tensor([0.5 * (0 + 1 / 4), 0.5 * (1 / 4 + 4 / 4)])
    assert torch.allclose(gaussian_prior(1.0, mean, logvar)(z), expected)


def _frozen_decoder():
    torch.manual_seed(0)
    decoder = AlphaMaskDecoder(slot_dim=4, image_size=16, d_model=16, layers=2, frequencies=4)
    for p in decoder.parameters():
        p.requires_grad_(False)
    return decoder


def test_search_lowers_the_map_objective_and_keeps_each_slot_within_its_bounds():
    torch.manual_seed(0)
    decoder = SlotDecoder(slot_dim=4, image_size=16, d_model=16, heads=2, frequencies=4)
    for p in decoder.parameters():
        p.requires_grad_(False)
    render = lambda z: decoder(z)[0]  # noqa: E731
    truth = torch.randn(8, 3, 4)
    with torch.no_grad():
        images = render(truth)
    start = truth + 0.5 * torch.randn_like(truth)
    prior = gaussian_prior(1e-4)
    low = truth.amin(0) - torch.tensor([0.0, 0.5, 1.0])[:, None]  # [K, D]: a different box per slot
    high = truth.amax(0) + torch.tensor([1.0, 0.5, 0.0])[:, None]
    result = latent_search(render, images, start, steps=60, lr=0.05, bounds=(low, high), scale=truth.std(0),
                           prior=prior)
    assert (result.final_error <= result.initial_error).all()
    assert result.final_error.mean() < 0.7 * result.initial_error.mean()
    assert (result.slots >= low - 1e-6).all() and (result.slots <= high + 1e-6).all()
    # The returned objective is recomputed by hand: per-pixel mean error + prior.
    recon = ((render(result.slots) - images) ** 2).flatten(1).mean(1)
    assert torch.allclose(result.final_error, recon + prior(result.slots), atol=1e-5)
    assert torch.allclose(result.final_recon, recon, atol=1e-6)


def test_search_steps_in_units_of_the_id_spread():
    decoder = _frozen_decoder()
    images = torch.rand(4, 3, 16, 16)
    start = torch.randn(4, 3, 4)
    scale = torch.ones(3, 4)
    scale[:, 0] = 0.0  # a coordinate with no ID spread never moves
    result = latent_search(lambda z: decoder(z)[0], images, start, steps=10, lr=0.3, scale=scale)
    assert torch.allclose(result.slots[..., 0], start[..., 0], atol=1e-4)
    assert not torch.allclose(result.slots[..., 1:], start[..., 1:])


def test_vae_search_uses_the_model_prior():
    model = SlotVAE(search_steps=3, **SMALL)
    images = torch.rand(2, 3, 32, 32)
    mean = model.infer(images)
    low, high = mean.amin(0) - 0.1, mean.amax(0) + 0.1
    searched = model.infer(images, search=True, bounds=(low, high), scale=torch.ones(2, 4))
    assert searched.shape == mean.shape and (searched >= low - 1e-6).all() and (searched <= high + 1e-6).all()
    with pytest.raises(ValueError, match="search_prior"):
        SlotVAE(search_prior="uniform", **SMALL)


def test_recombine_draws_every_slot_from_the_pool():
    slots = torch.arange(24.0).view(4, 3, 2)
    mixed = recombine(slots, torch.Generator().manual_seed(0))
    pool = {tuple(v.tolist()) for v in slots.view(-1, 2)}
    assert mixed.shape == slots.shape and all(tuple(v.tolist()) in pool for v in mixed.view(-1, 2))
    # Pooled, not per index: over many draws slot index 0 of new scenes takes slots of every index.
    many = recombine(slots.repeat(50, 1, 1), torch.Generator().manual_seed(1))
    assert {int(v) % 6 // 2 for v in many[:, 0, 0]} == {0, 1, 2}


def test_standardised_matched_mse_is_scale_free_and_order_free():
    target = torch.randn(6, 3, 4)
    pred = target[:, [2, 0, 1]] + 0.1 * torch.randn(6, 3, 4)
    spread = target.view(-1, 4).std(0)
    loss = standardised_matched_mse(pred, target, spread)
    assert loss.item() == pytest.approx(standardised_matched_mse(10 * pred, 10 * target, 10 * spread).item(), rel=1e-4)
    assert loss.item() < 0.1


def test_best_assignment_rectangular_equals_scipy():
    torch.manual_seed(2)
    cost = torch.rand(40, 2, 3)  # 2 objects, 3 slots
    chosen = best_assignment(cost)
    for c, a in zip(cost, chosen, strict=True):
        rows, cols = linear_sum_assignment(c.numpy())
        assert c[rows, cols].sum().item() == pytest.approx(c[torch.arange(2), a].sum().item())
        assert len(set(a.tolist())) == 2
    brute = min(itertools.permutations(range(3), 2), key=lambda p: cost[0, 0, p[0]] + cost[0, 1, p[1]])
    assert chosen[0].tolist() == list(brute)
    big = torch.rand(3, 4, 7)  # above MAX_ENUMERATED: scipy path
    rows, cols = linear_sum_assignment(big[0].numpy())
    assert best_assignment(big)[0].tolist() == cols.tolist()
    with pytest.raises(ValueError, match="rows <= columns"):
        best_assignment(torch.rand(1, 3, 2))


def test_recon_ratio_and_the_table_refuses_models_that_do_not_reconstruct():
    images = torch.rand(4, 3, 8, 8)

    class Fixed(torch.nn.Module):
        def __init__(self, output):
            super().__init__()
            self.output, self.w = output, torch.nn.Parameter(torch.zeros(1))

        def infer(self, x, search=False, **_):
            return torch.arange(len(x), dtype=torch.float32)[:, None, None]

        def render(self, slots):
            return self.output[slots.view(-1).long()]

    assert comp.recon_ratio(Fixed(images), images) == pytest.approx(0.0)
    assert comp.recon_ratio(Fixed(torch.zeros_like(images)), images) == pytest.approx(1.0)
    good = type("M", (), {"collapsed_at_step": None})()
    assert benchmark.refusal(good, 0.05) is None
    assert "recon ratio 0.450 > 0.1" in benchmark.refusal(good, 0.45)
    assert "slot collapse at step 7" in benchmark.refusal(type("M", (), {"collapsed_at_step": 7})(), 0.01)
    assert benchmark.refusal(object(), None) is None  # the encoder-only model has no decoder


def test_replay_recoverability_by_hand():
    """A decoder the encoder inverts exactly recovers every recombination (0); an encoder that ignores its
    input recovers nothing, the same error as against an unrelated permutation (chance)."""
    torch.manual_seed(0)
    weights = torch.randn(4, 3 * 8 * 8)  # slot [4] -> its own image channels; slots add up (invertible)

    def render(slots):  # [B, 2, 4] -> [B, 3, 8, 8] in (0, 1), slot k in its own half of the pixels
        out = 0.5 + 0.05 * torch.tanh(slots @ weights)  # [B, 2, 192]
        return torch.cat([out[:, 0, :96], out[:, 1, 96:]], 1).view(-1, 3, 8, 8)

    def encode(images):  # the exact inverse of render for slots with |slot @ weights| small
        flat = images.flatten(1)
        halves = torch.stack([flat[:, :96], flat[:, 96:]], 1)  # [B, 2, 96]
        z = torch.atanh((halves - 0.5) / 0.05)
        return torch.stack([torch.linalg.lstsq(weights[:, :96].T, z[:, 0].T).solution.T,
                            torch.linalg.lstsq(weights[:, 96:].T, z[:, 1].T).solution.T], 1)

    images = render(0.1 * torch.randn(64, 2, 4))
    exact = replay_recoverability(encode, render, images, torch.Generator().manual_seed(1))
    assert exact["recombined"] < 1e-4 and exact["reencoded"] < 1e-4 and exact["chance"] > 0.5
    noisy = replay_recoverability(lambda x: encode(x) + 0.3 * torch.randn(len(x), 2, 4), render, images)
    assert exact["recombined"] < noisy["recombined"] < noisy["chance"]
    blind = replay_recoverability(lambda x: torch.randn(len(x), 2, 4), render, images,
                                  torch.Generator().manual_seed(1))
    assert blind["recombined"] > 0.5


def test_replay_keeps_each_scenes_background_slot_and_redraws_its_object_slots():
    # 3 slots; per-pixel weights make slot 2 of scene 0 and slot 0 of scene 1 the background (no object pixels).
    objects = torch.tensor([[True, True, False, False], [False, True, True, False]])  # [B=2, P=4]
    weights = torch.tensor([[[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]],
                            [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]]], dtype=torch.float32)  # [B, P, K]
    movable = object_slots(weights, objects, n_objects=2)
    assert movable.tolist() == [[True, True, False], [False, True, True]]
    slots = torch.arange(6, dtype=torch.float32).view(2, 3, 1)
    mixed = recombine(slots, torch.Generator().manual_seed(0), movable)
    assert mixed[0, 2] == 2 and mixed[1, 0] == 3  # backgrounds stay
    assert set(mixed[movable].view(-1).tolist()) <= {0.0, 1.0, 4.0, 5.0}  # objects come from the object pool


def test_a_partial_rerun_names_known_models_and_replaces_only_its_rows(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELS", "vae+reg+replay")
    assert benchmark.selected_models() == {"vae+reg+replay"}
    monkeypatch.setenv("MODELS", "vae+reg+replay,vea")
    with pytest.raises(SystemExit, match=r"unknown \['vea'\]; choose from .*'vae\+reg'"):
        benchmark.selected_models()
    monkeypatch.delenv("MODELS")
    assert benchmark.selected_models() is None
    committed = tmp_path / "compositional.json"
    committed.write_text('[{"name": "a", "value": 1}, {"name": "b", "value": 2}]')
    merged = benchmark.merged_rows(committed, [{"name": "b", "value": 3}, {"name": "c", "value": 4}])
    assert merged == [{"name": "a", "value": 1}, {"name": "b", "value": 3}, {"name": "c", "value": 4}]
    assert benchmark.merged_rows(tmp_path / "none.json", [{"name": "c"}]) == [{"name": "c"}]


def test_benchmark_logs_scores_and_the_ood_grid_to_tensorboard(tmp_path):
    """Each model's TensorBoard run gets its finite scores, and a generative one its OOD grid."""
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    loggers = {n: TensorBoardLogger(tmp_path, name="seed0", version=n) for n in ("encoder-only", "vae")}
    evaluated = {"encoder-only": {"ood/r2/mean": 0.7}, "vae": {"ood/r2/mean": 0.3, "search/r2": float("nan")}}
    images = torch.rand(3, 3, 8, 8)
    benchmark.log_results(loggers, evaluated, images, {"vae": images * 0.5}, {"encoder-only": 4, "vae": 6})
    runs = {}
    for name in loggers:
        events = EventAccumulator(str(tmp_path / "seed0" / name))
        events.Reload()
        runs[name] = events
    assert runs["vae"].Tags()["scalars"] == ["compositional/ood/r2/mean"]  # the NaN is left out
    assert runs["vae"].Scalars("compositional/ood/r2/mean")[0].step == 6
    assert abs(runs["encoder-only"].Scalars("compositional/ood/r2/mean")[0].value - 0.7) < 1e-6
    assert runs["vae"].Tags()["images"] == ["compositional/ood_reconstructions"]
    assert runs["encoder-only"].Tags()["images"] == []
    image = runs["vae"].Images("compositional/ood_reconstructions")[0]
    assert (image.height, image.width) == (2 * 8 + 3, 3 * 8 + 4)  # 2 rows x 3 scenes, 1 px padding
