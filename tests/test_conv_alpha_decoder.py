"""The per-slot upsampling decoder (conv_alpha_decoder.py): alpha masks normalised over slots, shapes,
composition against a reference computation, slot independence, the pixel-subset contract, and its use in
the slot VAE."""

import pytest
import torch

from procedural_perception.compositional.alpha_decoder import AlphaMaskDecoder
from procedural_perception.compositional.conv_alpha_decoder import ConvAlphaDecoder
from procedural_perception.compositional.interaction import interaction_penalty
from procedural_perception.compositional.slot_decoder import SlotDecoder
from procedural_perception.compositional.slot_vae import SlotVAE


@pytest.mark.parametrize("size", [16, 32])
def test_masks_sum_to_one_and_compose_the_image(size):
    torch.manual_seed(0)
    decoder = ConvAlphaDecoder(slot_dim=4, image_size=size, hidden=16, channels=8)
    slots = torch.randn(2, 3, 4)
    images, masks = decoder(slots)
    assert images.shape == (2, 3, size, size) and masks.shape == (1, 2, 1, size * size, 3)
    assert torch.allclose(masks.sum(-1), torch.ones(1, 2, 1, size * size), atol=1e-6)
    rgb, logits = decoder.slot_outputs(slots)  # [B, K, 3, S, S], [B, K, S, S]
    assert rgb.shape == (2, 3, 3, size, size) and logits.shape == (2, 3, size, size)
    # Reference: image[b, c, y, x] = sum_k softmax_k(logit[b, k, y, x]) rgb[b, k, c, y, x], one pixel at a time.
    b, y, x = 1, size // 2, 3
    weights = torch.exp(logits[b, :, y, x]) / torch.exp(logits[b, :, y, x]).sum()
    assert torch.allclose(images[b, :, y, x], (weights[:, None] * rgb[b, :, :, y, x]).sum(0), atol=1e-5)
    assert torch.allclose(masks[0, b, 0, y * size + x], weights, atol=1e-6)
    assert interaction_penalty(masks) > 0  # soft masks overlap


def test_each_slot_is_decoded_alone_and_order_does_not_matter():
    torch.manual_seed(0)
    decoder = ConvAlphaDecoder(slot_dim=4, image_size=16, hidden=16, channels=8)
    slots = torch.randn(2, 3, 4)
    rgb, logits = decoder.slot_outputs(slots)
    changed = slots.clone()
    changed[:, 2] += 1.0
    rgb2, logits2 = decoder.slot_outputs(changed)
    assert torch.allclose(rgb2[:, :2], rgb[:, :2]) and torch.allclose(logits2[:, :2], logits[:, :2])
    assert not torch.allclose(rgb2[:, 2], rgb[:, 2])
    assert torch.allclose(decoder(slots[:, [2, 0, 1]])[0], decoder(slots)[0], atol=1e-5)


@pytest.mark.parametrize("make", [
    lambda: ConvAlphaDecoder(slot_dim=4, image_size=16, hidden=16, channels=8),
    lambda: AlphaMaskDecoder(slot_dim=4, image_size=16, d_model=16),
    lambda: SlotDecoder(slot_dim=4, image_size=16, d_model=16, heads=2),
], ids=["conv_alpha", "alpha", "attention"])
def test_render_pixels_on_a_subset_equals_the_same_pixels_of_the_full_render(make):
    """The contract every slot decoder keeps: pixels render independently (training may draw a subset)."""
    torch.manual_seed(0)
    decoder = make()
    slots = torch.randn(2, 3, 4)
    images, masks = decoder(slots)
    pixels = torch.tensor([0, 5, 77, 255])
    colours, sub = decoder.render_pixels(slots, pixels)
    assert torch.allclose(colours, images.flatten(2).transpose(1, 2)[:, pixels], atol=1e-5)
    assert torch.allclose(sub, masks[:, :, :, pixels], atol=1e-6)
    full, _ = decoder.render_pixels(slots)
    assert full.shape == (2, 256, 3)


def test_colours_are_not_squashed():
    """The colour head is linear: a sigmoid saturates on the black background and stops learning."""
    decoder = ConvAlphaDecoder(slot_dim=2, image_size=8, hidden=8, channels=4)
    torch.nn.init.constant_(decoder.upsample[-1].bias, 2.0)
    images, _ = decoder(torch.zeros(1, 2, 2))
    assert images.max() > 1.0


@pytest.mark.parametrize("size", [4, 24, 33])
def test_rejects_sizes_it_cannot_upsample_to(size):
    with pytest.raises(ValueError, match="image_size must be 4 \\* 2\\^n"):
        ConvAlphaDecoder(slot_dim=4, image_size=size)


def test_slot_vae_with_conv_alpha_decoder_and_warmup():
    model = SlotVAE(decoder="conv_alpha", n_slots=3, n_objects=2, slot_dim=4, d_model=16, channels=8, hidden=32,
                    lr_warmup=10)
    out = model.losses(torch.rand(2, 3, 32, 32))
    assert all(torch.isfinite(v) for v in out.values())
    assert model.infer(torch.rand(2, 3, 32, 32)).shape == (2, 3, 4)
    config = model.configure_optimizers()
    schedule = config["lr_scheduler"]["scheduler"]
    assert config["optimizer"].param_groups[0]["lr"] == pytest.approx(model.hparams.lr / 10)
    for _ in range(20):
        config["optimizer"].step()
        schedule.step()
    assert config["optimizer"].param_groups[0]["lr"] == pytest.approx(model.hparams.lr)
    assert isinstance(SlotVAE(decoder="conv_alpha", slot_dim=4, d_model=16, channels=8).configure_optimizers(),
                      torch.optim.Adam)
