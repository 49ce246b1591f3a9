import numpy as np
import pytest
import torch
from distributed import run_distributed
from PIL import Image
from torch.utils.data import TensorDataset

from lightning_modules.encoders import PixelEncoder, build_encoder
from procedural_perception.evaluations.embedding import embed_dataset, eval_transform


def test_random_vit_is_reproducible_and_frozen():
    a = build_encoder("random_vit:vit_tiny_patch16_224")
    b = build_encoder("random_vit:vit_tiny_patch16_224")
    x = torch.rand(2, 3, 32, 48)
    assert torch.equal(a(x), b(x))
    assert a(x).shape == (2, a.embed_dim)
    assert a.patch_features(x).shape == (2, a.embed_dim, 2, 3)
    assert not any(p.requires_grad for p in a.parameters())


def test_pixel_encoder_patch_features_are_the_patch_pixels():
    enc = PixelEncoder(patch_size=4, global_size=8)
    x = torch.rand(1, 3, 8, 12)
    feats = enc.patch_features(x)
    assert feats.shape == (1, 48, 2, 3)
    patch = (x[0, :, 4:8, 8:12] - 0.5) / 0.5
    assert torch.allclose(feats[0, :, 1, 2], patch.reshape(-1))


def test_efficientnet_lite0_loads_offline_and_classifies_imagenet_mean_image():
    enc = build_encoder("efficientnet_lite0")
    x = torch.rand(2, 3, 64, 64)
    assert enc(x).shape == (2, 1280)
    assert enc.patch_features(x).shape == (2, 1280, 2, 2)
    # the trained weights are really loaded: the classifier's outputs are far from a random layer's
    logits = enc.net(enc.normalise(x))
    assert logits.shape == (2, 1000) and logits.std() > 0.5


def test_unknown_encoder_lists_options():
    with pytest.raises(ValueError, match="random_vit, rgb, efficientnet_lite0"):
        build_encoder("resnet_from_the_internet")


def test_eval_transform_resizes_and_crops():
    image = Image.fromarray((np.random.rand(30, 50, 3) * 255).astype(np.uint8))
    out = eval_transform(28)(image)
    assert out.shape == (3, 28, 28) and out.dtype == torch.float32
    assert 0.0 <= out.min() and out.max() <= 1.0


def _dataset(n=11):
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.rand(n, 3, 16, 16, generator=g), torch.arange(n) % 3)


def test_embed_dataset_normalises_and_keeps_order():
    enc = PixelEncoder(patch_size=4, global_size=4)
    feats, labels = embed_dataset(enc, _dataset(), batch_size=4, progress=False)
    assert feats.shape == (11, 48)
    assert torch.allclose(feats.norm(dim=1), torch.ones(11))
    assert torch.equal(labels, torch.arange(11) % 3)


def _embed_in_rank():
    return embed_dataset(PixelEncoder(patch_size=4, global_size=4), _dataset(), batch_size=4, progress=False)


@pytest.mark.ddp
def test_embed_dataset_two_processes_equal_one():
    single = _embed_in_rank()
    for feats, labels in run_distributed(_embed_in_rank, world=2):
        assert torch.allclose(feats, single[0]) and torch.equal(labels, single[1])
