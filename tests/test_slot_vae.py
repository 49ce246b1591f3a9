import itertools

import lightning
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from procedural_perception.compositional import evaluation as comp
from procedural_perception.compositional.callback import CompositionalMetrics
from procedural_perception.compositional.data import CompositionalDataModule, SpriteScenes
from procedural_perception.compositional.interaction import interaction_penalty
from procedural_perception.compositional.latent_search import latent_search
from procedural_perception.compositional.slot_decoder import SlotDecoder
from procedural_perception.compositional.slot_matching import align_targets, best_permutation, matched_mse
from procedural_perception.compositional.slot_regressor import SlotRegressor
from procedural_perception.compositional.slot_vae import SlotVAE
from procedural_perception.core.results import read_results

SMALL = dict(slot_dim=4, d_model=16, heads=2, hidden=32, channels=8, out_hidden=16)


def test_interaction_zero_for_disjoint_attention():
    # Every pixel attends to exactly one slot (in every head and layer): no interaction.
    owner = torch.tensor([0, 1, 1, 2, 0])  # pixel -> slot
    one_hot = torch.nn.functional.one_hot(owner, 3).float()  # [P, K]
    attention = one_hot.expand(2, 4, 3, 5, 3)  # [L, B, H, P, K]
    assert interaction_penalty(attention).item() == 0.0


def test_interaction_positive_for_overlap_and_hand_computed():
    # One layer... two layers, one image, two heads, two pixels, three slots.
    layer1 = torch.tensor([[[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]], [[0.2, 0.3, 0.5], [0.0, 1.0, 0.0]]])  # [H, P, K]
    layer2 = torch.tensor([[[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]], [[0.2, 0.3, 0.5], [0.0, 0.0, 1.0]]])
    attention = torch.stack([layer1, layer2]).unsqueeze(1)  # [L=2, B=1, H=2, P=2, K=3]
    # a = mean over layers of the sum over heads:
    # pixel 0: [0.7, 0.8, 0.5] -> pairs 0.7*0.8 + 0.7*0.5 + 0.8*0.5 = 0.56 + 0.35 + 0.40 = 1.31
    # pixel 1: layer1 [1, 1, 0], layer2 [1, 0, 1] -> [1, 0.5, 0.5] -> 0.5 + 0.5 + 0.25 = 1.25
    expected = (1.31 + 1.25) / 2
    assert interaction_penalty(attention).item() == pytest.approx(expected)
    # Brute force over pairs i < j equals the closed form.
    a = attention.sum(2).mean(0)
    brute = sum(a[..., i] * a[..., j] for i, j in itertools.combinations(range(3), 2)).mean()
    assert interaction_penalty(attention).item() == pytest.approx(brute.item())


def test_interaction_rejects_wrong_shape():
    with pytest.raises(ValueError, match="layers, batch, heads, pixels, slots"):
        interaction_penalty(torch.rand(2, 3, 4))


def test_decoder_shapes_and_attention_over_slots():
    decoder = SlotDecoder(slot_dim=4, image_size=16, d_model=16, heads=2, layers=2, frequencies=4)
    images, attention = decoder(torch.randn(3, 2, 4))
    assert images.shape == (3, 3, 16, 16)
    assert attention.shape == (2, 3, 2, 256, 2)  # [layers, batch, heads, pixels, slots]
    assert torch.allclose(attention.sum(-1), torch.ones(2, 3, 2, 256), atol=1e-5)


def test_a_vae_trained_on_a_pixel_subset_has_a_finite_loss():
    # (the decoders' subset contract itself: tests/test_conv_alpha_decoder.py)
    model = SlotVAE(train_pixels=64, **SMALL)
    assert torch.isfinite(model.losses(torch.rand(2, 3, 32, 32))["loss"])


def test_decoder_is_slot_permutation_invariant():
    decoder = SlotDecoder(slot_dim=4, image_size=16, d_model=16, heads=2)
    slots = torch.randn(2, 3, 4)
    assert torch.allclose(decoder(slots)[0], decoder(slots[:, [2, 0, 1]])[0], atol=1e-5)


def test_search_lowers_reconstruction_error():
    torch.manual_seed(0)
    decoder = SlotDecoder(slot_dim=4, image_size=16, d_model=16, heads=2, frequencies=4)
    for p in decoder.parameters():
        p.requires_grad_(False)
    truth = torch.randn(6, 2, 4)
    with torch.no_grad():
        images = decoder(truth)[0]
    start = truth + 0.5 * torch.randn_like(truth)
    result = latent_search(lambda z: decoder(z)[0], images, start, steps=60, lr=0.05)
    assert (result.final_error <= result.initial_error).all()
    assert result.final_error.mean() < 0.5 * result.initial_error.mean()
    assert latent_search(lambda z: decoder(z)[0], images, start, steps=0).slots.equal(start)
    low, high = truth.amin(dim=(0, 1)), truth.amax(dim=(0, 1))
    boxed = latent_search(lambda z: decoder(z)[0], images, start.clamp(low, high), steps=20, lr=0.5, bounds=(low, high))
    assert (boxed.slots >= low).all() and (boxed.slots <= high).all()


def test_best_permutation_equals_scipy_hungarian():
    torch.manual_seed(1)
    cost = torch.rand(50, 4, 4)
    perm = best_permutation(cost)
    for c, p in zip(cost, perm, strict=True):
        assert p.tolist() == linear_sum_assignment(c.numpy())[1].tolist()
    big = torch.rand(5, 7, 7)  # above MAX_ENUMERATED: scipy path
    assert best_permutation(big)[0].tolist() == linear_sum_assignment(big[0].numpy())[1].tolist()


def test_matched_mse_ignores_slot_order():
    target = torch.rand(8, 3, 5)
    shuffled = target[:, [1, 2, 0]]
    assert matched_mse(shuffled, target).item() == pytest.approx(0.0, abs=1e-7)
    perm = best_permutation(((shuffled.unsqueeze(2) - target.unsqueeze(1)) ** 2).sum(-1))
    assert torch.equal(align_targets(target, perm), shuffled)


def _at_step(model, step, total):
    """Attach a stand-in trainer: ``step`` of a ``total``-step fit."""
    model.trainer = type("T", (), {"global_step": step, "estimated_stepping_batches": total, "should_stop": False})()
    return model


def test_vae_losses_warmup_and_replay_trains_encoder_only():
    model = _at_step(SlotVAE(alpha=0.5, alpha_start=0.0, alpha_warmup=0.2, replay_weight=1.0, replay_start=0.0,
                             **SMALL), 0, 50)
    images = torch.rand(4, 3, 32, 32)
    out = model.losses(images)
    assert {"recon", "kl", "interaction", "replay", "loss", "min_slot_share"} <= set(out)
    assert all(torch.isfinite(v) for v in out.values())
    assert model.alpha_now() == 0.0  # step 0 of a 10-step warm-up
    late = _at_step(SlotVAE(alpha=0.5, alpha_start=0.1, alpha_warmup=0.2, **SMALL), 9, 40)
    assert late.alpha_now() == pytest.approx(0.5 * 5 / 8)  # 5 steps into the 8-step warm-up starting at step 4
    assert "replay" not in _at_step(SlotVAE(replay_weight=1.0, replay_start=0.5, **SMALL), 24, 50).losses(images)
    model.zero_grad()
    model.losses(images)["replay"].backward(inputs=list(model.decoder.parameters()) + list(model.encoder.parameters()))
    model.zero_grad()
    from procedural_perception.compositional.replay import replay_loss

    replay_loss(lambda x: model.encode(x)[0], model.render, model.encode(images)[0].detach()).backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.decoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())


def test_readout_fitted_on_id_only_and_applied_unchanged(monkeypatch):
    torch.manual_seed(0)
    n = 64
    # A stand-in model whose slots are the true normalised latents, read back from the image tensor.
    latents_id, latents_ood = torch.rand(n, 2, 5), torch.rand(n, 2, 5)
    for z in (latents_id, latents_ood):
        z[..., 2] = (z[..., 2] > 0.5).float()

    class Oracle(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def infer(self, images, search=False, **_):
            return images.flatten(1)[:, :10].view(-1, 2, 5)

    def scenes(z):
        images = torch.zeros(len(z), 3, 4, 4)
        images.view(len(z), -1)[:, :10] = z.view(len(z), -1)
        return SpriteScenes(images, z, z)

    seen = []
    real_fit = comp.fit_slot_readout
    monkeypatch.setattr(comp, "fit_slot_readout", lambda slots, latents, *a, **k: seen.append((slots, latents)) or real_fit(slots, latents, *a, **k))
    id_fit, id_eval, ood = scenes(latents_id), scenes(latents_id[:16]), scenes(latents_ood)
    scores = comp.evaluate_compositional(Oracle(), id_fit, id_eval, ood, n_shapes=2, readout="linear", readout_steps=200)
    assert len(seen) == 1 and torch.equal(seen[0][0], latents_id) and torch.equal(seen[0][1], latents_id)
    # A linear readout of the true latents generalises to OOD scenes, whatever the slot order.
    assert scores["ood/r2/mean"] > 0.95 and scores["ood/shape_acc"] == 1.0
    swapped = scenes(latents_ood[:, [1, 0]].contiguous())
    swapped.unit_latents = latents_ood
    assert comp.evaluate_compositional(Oracle(), id_fit, id_eval, swapped, 2, readout="linear", readout_steps=200)["ood/r2/mean"] > 0.95


def test_slot_usage_detects_collapse():
    model = SlotVAE(**SMALL)
    images = torch.zeros(2, 3, 32, 32)
    images[:, :, 4:12, 4:12] = 1.0  # one object on the left, one on the right
    images[:, :, 20:28, 20:28] = 1.0
    left = torch.zeros(32, 32, dtype=torch.bool)
    left[:, :16] = True

    def attention(owner):  # [L, B, H, P, K] one-hot on the slot each pixel belongs to
        one_hot = torch.nn.functional.one_hot(owner.flatten().long(), 2).float()
        return one_hot.expand(2, 2, 2, 1024, 2)

    model.decode = lambda z: (None, attention(~left))  # each object owned by its own slot
    usage = comp.slot_usage(model, images)
    assert usage["interaction"] == 0.0 and usage["min_slot_share"] == pytest.approx(0.5)
    model.decode = lambda z: (None, attention(torch.zeros(32, 32)))  # slot 0 draws everything
    usage = comp.slot_usage(model, images)
    assert usage["interaction"] == 0.0 and usage["min_slot_share"] == 0.0


@pytest.mark.parametrize("encoder", ["mlp", "mlp_s4", "slot_attention"])
def test_encoders_give_k_slots(encoder):
    model = SlotVAE(encoder=encoder, **SMALL)
    mean, logvar = model.encode(torch.rand(3, 3, 32, 32))
    assert mean.shape == logvar.shape == (3, 2, 4)
    with pytest.raises(ValueError, match="encoder must be"):
        SlotVAE(encoder="vit", **SMALL)


def test_regressor_learns_and_cannot_search():
    torch.manual_seed(0)
    model = SlotRegressor(channels=8, hidden=32)
    images, latents = torch.rand(16, 3, 32, 32), torch.rand(16, 2, 5)
    optimiser = model.configure_optimizers()
    first = matched_mse(model.encoder(images), latents).item()
    for _ in range(30):
        optimiser.zero_grad()
        model.training_step((images, latents), 0).backward()
        optimiser.step()
    assert matched_mse(model.encoder(images), latents).item() < first
    with pytest.raises(ValueError, match="no decoder"):
        model.infer(images, search=True)


def test_the_s4_encoder_keeps_an_8x8_map_at_32px_and_checks_its_sizes():
    from procedural_perception.compositional.slot_encoder import SlotEncoder

    encoder = SlotEncoder(3, 16, image_size=32, channels=8, downsample=4)
    features = encoder.conv(torch.rand(2, 5, 32, 32))
    assert features.shape == (2, 8, 8, 8) and encoder(torch.rand(2, 3, 32, 32)).shape == (2, 3, 16)
    with pytest.raises(ValueError, match="downsample must be"):
        SlotEncoder(3, 16, downsample=2)
    with pytest.raises(ValueError, match="multiple of 4"):
        SlotEncoder(3, 16, image_size=30, downsample=4)


@pytest.mark.slow
def test_fit_with_metrics_callback_logs_and_writes(tmp_path):
    data = CompositionalDataModule(seed=0, image_size=32, n_train=64, n_val=32, n_test=32, batch_size=32,
                                   supersample=1)
    model = SlotVAE(min_slot_share=0.0, **SMALL)
    callback = CompositionalMetrics(n_fit=64, n_eval=32, search=True, search_steps=2, readout_steps=20, grid_images=4)
    trainer = lightning.Trainer(max_epochs=1, accelerator="cpu", default_root_dir=tmp_path, enable_progress_bar=False,
                                enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0,
                                callbacks=[callback])
    trainer.fit(model, datamodule=data)
    metrics = trainer.callback_metrics
    for key in ("compositional/id/r2/mean", "compositional/ood/shape_acc", "compositional/ood/recon",
                "compositional/search/ood/r2/mean", "val/recon"):
        assert key in metrics
    rows = read_results(tmp_path / "lightning_logs" / "version_0" / "results.jsonl")
    assert rows and rows[0]["evaluation"] == "compositional"
    assert list((tmp_path / "lightning_logs" / "version_0").glob("events.out.tfevents.*"))


def test_pretrained_slot_encoder_fine_tunes_its_backbone_at_its_own_rate():
    import timm

    from lightning_modules.encoders import ViTEncoder
    from procedural_perception.compositional.slot_encoder import PretrainedSlotEncoder

    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32, patch_size=8,
                            depth=1, embed_dim=24, num_heads=2, dynamic_img_size=True)
    backbone = ViTEncoder(vit, "tiny", image_size=32).freeze()  # frozen as evaluation encoders are
    encoder = PretrainedSlotEncoder(backbone, n_slots=2, out_dim=5, hidden=16)
    assert all(p.requires_grad for p in backbone.parameters())  # fine-tuned, not frozen
    assert encoder(torch.rand(3, 3, 16, 16)).shape == (3, 2, 5)  # scenes resized to the backbone's 32 px
    model = SlotRegressor(encoder=encoder, backbone_lr=1e-4, lr=1e-3)
    optimiser = model.configure_optimizers()
    rates = sorted(group["lr"] for group in optimiser.param_groups)
    assert rates == [1e-4, 1e-3]
    assert sum(len(g["params"]) for g in optimiser.param_groups) == len(list(model.parameters()))
    before = vit.patch_embed.proj.weight.clone()
    images, latents = torch.rand(4, 3, 16, 16), torch.rand(4, 2, 5)
    optimiser.zero_grad()
    model.training_step((images, latents), 0).backward()
    optimiser.step()
    assert not torch.equal(before, vit.patch_embed.proj.weight)
    assert model.infer(images).shape == (4, 2, 5)
