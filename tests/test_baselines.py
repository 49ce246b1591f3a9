"""Baradad et al. 2021's baselines made without GL: ``stylegan`` (StyleGAN-Oriented) and ``dead_leaves``."""

import builtins
import hashlib
import io
import pathlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from dino_helpers import TINY_OVERRIDES

from datamodules.procedural import dead_leaves, stylegan
from datamodules.procedural.blocks import BlockConfig, BlockMaker
from datamodules.procedural.renderer import degenerate
from datamodules.procedural.sample_draws import SampleDraws
from datamodules.procedural.stream import Layout, ProceduralStream
from datamodules.shaders import ShaderDataModule

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BASELINES = ("stylegan", "dead_leaves")


def _config(process, **kw) -> BlockConfig:
    return BlockConfig(**{"process": process, "seed": 0, "image_size": 32, "block_size": 8, **kw})


# ---------------------------------------------------------------- StyleGAN: formulas against references
def _dense_reference(x, styles, filters, gains, up):
    """StyleGAN2's modulated convolution written densely: weight [N, Cout, Cin, k, k], modulate, demodulate."""
    weight = gains[:, :, None, None, None] * filters[:, None]  # [N, Cout, Cin, k, k]
    weight = weight * styles[:, None, :, None, None]
    weight = weight * torch.rsqrt(weight.square().sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
    out = []
    for n in range(len(x)):
        if up:  # a stride-2 transposed convolution of the input with its border replicated by one pixel
            padded = F.pad(x[n : n + 1], (1, 1, 1, 1), mode="replicate")
            out.append(F.conv_transpose2d(padded, weight[n].transpose(0, 1), stride=2, padding=1, output_padding=1))
        else:
            out.append(F.conv2d(x[n : n + 1], weight[n], padding=1))
    return torch.cat(out)


@pytest.mark.parametrize("up", [False, True])
def test_modulated_conv_matches_the_dense_computation(up):
    g = torch.Generator().manual_seed(0)
    x, styles = torch.randn(3, 5, 6, 6, generator=g), torch.randn(3, 5, generator=g)
    filters, gains = torch.randn(3, 5, 3, 3, generator=g), torch.randn(3, 7, generator=g)
    y, scale = stylegan.modulated_conv(x, styles, filters, gains, up=up)
    got = y * scale[:, :, None, None]
    torch.testing.assert_close(got, _dense_reference(x, styles, filters, gains, up), rtol=1e-4, atol=1e-5)
    if up:
        assert stylegan.blur(y).shape[-2:] == (12, 12)


def test_blur_is_a_normalised_low_pass_filter():
    ones, _ = stylegan.modulated_conv(torch.ones(1, 1, 8, 8), torch.ones(1, 1), torch.ones(1, 1, 3, 3) / 9,
                                      torch.ones(1, 1), up=True)
    flat = stylegan.blur(ones)  # a constant input upsampled stays constant inside (no seams of the stride)
    torch.testing.assert_close(flat[..., 2:-2, 2:-2], torch.ones(1, 1, 12, 12))


def test_wavelet_bank_is_oriented_and_signed():
    bank = stylegan.wavelets()
    assert bank.shape == (40, 3, 3)
    torch.testing.assert_close(bank[20:], -bank[:20])
    torch.testing.assert_close(bank[:16].sum(dim=(1, 2)), torch.zeros(16), atol=1e-5, rtol=0)  # mean removed
    # The 0-degree edge is +|0|- across columns; the 90-degree one is its transpose up to sign.
    assert bank[0, :, 0].min() > 0 and bank[0, :, 2].max() < 0
    torch.testing.assert_close(bank[4].abs(), bank[0].T.abs(), atol=1e-5, rtol=0)


def test_pink_noise_has_a_falling_power_spectrum():
    noise = stylegan.pink_noise(SampleDraws(0, range(16), 1), 64)
    assert noise.shape == (16, 64, 64)
    torch.testing.assert_close(noise.std(dim=(1, 2)), torch.ones(16), atol=1e-3, rtol=0)
    power = torch.fft.rfft2(noise).abs().square().mean(dim=0)
    low, high = power[1:4, 1:4].mean(), power[24:32, 24:32].mean()
    assert low > 20 * high, "1/f^alpha noise holds far more power at low frequencies"


@pytest.mark.parametrize("size,plan", [(64, (4, 5)), (224, (7, 6)), (96, (6, 5)), (100, (7, 5))])
def test_synthesis_plan_reaches_the_size(size, plan):
    start, levels = stylegan.synthesis_plan(size)
    assert (start, levels) == plan and start * 2 ** (levels - 1) >= size


# ---------------------------------------------------------------- StyleGAN: random weights only
def _weights(model):
    """The randomly drawn persistent tensors (affine biases are StyleGAN's constant 1)."""
    return [model.const, *[weight for weight, _ in model.affines], *model.mapping]


def test_stylegan_weights_are_random_init_from_the_seed_only(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"stylegan read a file: {args[:1]}")

    for name in ("load", "from_file"):
        monkeypatch.setattr(torch, name, refuse)
    monkeypatch.setattr(builtins, "open", refuse)
    monkeypatch.setattr(io, "open", refuse)
    monkeypatch.setattr(pathlib.Path, "read_bytes", refuse)
    a, b, other = stylegan.RandomStyleGAN(5, 32), stylegan.RandomStyleGAN(5, 32), stylegan.RandomStyleGAN(6, 32)
    images = a.generate(range(4))
    monkeypatch.undo()
    assert all(torch.equal(x, y) for x, y in zip(_weights(a), _weights(b), strict=True))
    assert all(not torch.equal(x, y) for x, y in zip(_weights(a), _weights(other), strict=True))
    assert torch.equal(images, b.generate(range(4)))
    assert not torch.equal(images, other.generate(range(4)))


def test_stylegan_mapping_network_variant_runs():
    model = stylegan.RandomStyleGAN(0, 32, stylegan.StyleGANSize(mapping_layers=2))
    images = model.generate(range(4))
    assert images.shape == (4, 3, 32, 32) and not degenerate(images.permute(0, 2, 3, 1).numpy()).any()


# ---------------------------------------------------------------- dead leaves
def test_radius_cdf_is_the_integral_of_the_power_law_density():
    r = torch.linspace(dead_leaves.R_MIN, dead_leaves.R_MAX, 200_001, dtype=torch.float64)
    density = r ** -dead_leaves.SIGMA - dead_leaves.R_MAX ** -dead_leaves.SIGMA
    numeric = torch.cumulative_trapezoid(density, r)
    numeric = torch.cat([torch.zeros(1, dtype=torch.float64), numeric]) / numeric[-1]
    torch.testing.assert_close(dead_leaves.radius_cdf(r), numeric, atol=1e-6, rtol=0)


def test_sampled_radii_follow_the_power_law():
    n = 200_000
    radii = dead_leaves.sample_radius(torch.rand(n, generator=torch.Generator().manual_seed(1))).double()
    assert radii.min() >= dead_leaves.R_MIN and radii.max() <= dead_leaves.R_MAX
    # Kolmogorov-Smirnov against the formula's CDF: D below the 0.1% critical value 1.95 / sqrt(n).
    sorted_radii = radii.sort().values
    cdf = dead_leaves.radius_cdf(sorted_radii)
    empirical = torch.arange(1, n + 1, dtype=torch.float64) / n
    d = torch.maximum((empirical - cdf).abs(), (cdf - (empirical - 1 / n)).abs()).max().item()
    assert d < 1.95 / np.sqrt(n), f"KS distance {d:.5f}"
    # And the power law itself: P(r > 2 R_MIN) / P(r > 4 R_MIN) ~ 4 for sigma = 3 (tail ~ r^-2).
    ratio = (radii > 2 * dead_leaves.R_MIN).double().mean() / (radii > 4 * dead_leaves.R_MIN).double().mean()
    assert 3.6 < ratio < 4.4


def test_leaves_are_the_shapes_they_claim():
    # A circle of radius 0.25 at the centre covers ~pi/16 of the image; a square inscribed in it 2/pi of that.
    u = torch.full((2, dead_leaves.DRAWS_PER_LEAF), 0.5)
    u[0, 0], u[1, 0] = 0.0, 1.5 / len(dead_leaves.SHAPES)  # circle, square
    radius_u = dead_leaves.radius_cdf(torch.tensor(0.25, dtype=torch.float64)).item()
    u[:, 4] = radius_u
    constraints, _, centres, radii = dead_leaves.leaf_constraints(u)
    assert radii[0].item() == pytest.approx(0.25, rel=1e-3)
    pixel, leaf = dead_leaves.covered_pixels(constraints, centres, radii, 256)
    circle, square = (leaf == 0).sum().item() / 256**2, (leaf == 1).sum().item() / 256**2
    assert circle == pytest.approx(np.pi * 0.25**2, rel=0.02) and square == pytest.approx(2 * 0.25**2, rel=0.02)


def test_dead_leaves_cover_the_image_front_to_back():
    images = dead_leaves.dead_leaves_images(SampleDraws(0, range(4), dead_leaves.PURPOSE), 32)
    assert images.shape == (4, 3, 32, 32)
    colours = images.permute(0, 2, 3, 1).reshape(4, -1, 3)
    assert (colours.sum(dim=2) > 0).float().mean() > 0.99  # covered: black only where a leaf is black
    assert all(len(torch.unique(c, dim=0)) >= 10 for c in colours)  # many leaves visible


# ---------------------------------------------------------------- both, through the engine
@pytest.mark.parametrize("process", BASELINES)
def test_images_are_not_degenerate(process):
    for seed in range(3):
        images = BlockMaker(_config(process, seed=seed))(0)
        assert images.shape == (8, 3, 32, 32) and images.dtype == torch.uint8
        assert not degenerate(images.permute(0, 2, 3, 1).numpy()).any(), f"{process} seed {seed}"


@pytest.mark.parametrize("process", BASELINES)
def test_sample_is_a_function_of_seed_and_index(process):
    block = BlockMaker(_config(process))(1)  # samples 8..15
    assert torch.equal(block, BlockMaker(_config(process))(1))
    halves = torch.cat([BlockMaker(_config(process, block_size=4))(b) for b in (2, 3)])  # samples 8..15 again
    assert torch.equal(block, halves), "a sample must not depend on the block size that made it"
    assert not torch.equal(block, BlockMaker(_config(process, seed=1))(1))
    assert len({hashlib.sha1(image.numpy().tobytes()).hexdigest() for image in block}) == 8


@pytest.mark.parametrize("process", BASELINES)
def test_samples_do_not_depend_on_the_thread_count(process):
    """DataLoader workers run one thread, the main process several: the samples must not differ."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = BlockMaker(_config(process))(0)
        torch.set_num_threads(2)
        two = BlockMaker(_config(process))(0)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


@pytest.mark.parametrize("process", BASELINES)
def test_same_samples_whatever_workers_and_world_size(process):
    config, epoch = _config(process, block_size=4), 4 * 6

    def digests(world, workers):
        got = {}
        for rank in range(world):
            stream = ProceduralStream(config, epoch, shuffle_blocks=2, rank=rank, world_size=world)
            for worker in range(workers):
                for index, image in stream.indexed_samples(Layout(rank, world, worker, workers), epoch=0):
                    assert index not in got, "slots overlap"
                    got[index] = hashlib.sha1(image.numpy().tobytes()).hexdigest()
        return got

    reference = digests(1, 1)
    assert sorted(reference) == list(range(epoch))
    for world, workers in ((2, 1), (1, 3), (2, 3)):
        assert digests(world, workers) == reference, f"{world} ranks x {workers} workers"


@pytest.mark.parametrize("process", BASELINES)
def test_data_module_needs_no_gl(process, monkeypatch):
    from datamodules.procedural import egl

    def no_gl(*args, **kwargs):
        raise AssertionError("a GL context was requested")

    for name in dir(egl):
        if callable(getattr(egl, name)) and not name.startswith("_") and name != "context_exists":
            monkeypatch.setattr(egl, name, no_gl)
    dm = ShaderDataModule(process, image_size=32, batch_size=4, num_workers=0, samples_per_epoch=8, block_size=4)
    batches = list(dm.train_dataloader())
    assert len(batches) == 2 and batches[0].shape == (4, 3, 32, 32) and 0 <= batches[0].min() < batches[0].max() <= 1


@pytest.mark.slow
def test_two_training_steps_on_stylegan(tmp_path):
    from procedural_perception.cli.train import main

    runs = tmp_path / "runs"
    args = ["data=stylegan", "data.image_size=32", "data.batch_size=4", "data.num_workers=0",
            "data.block_size=8", "data.samples_per_epoch=16", "profile=cpu", *TINY_OVERRIDES, f"runs_dir={runs}",
            "trainer.max_steps=2"]
    assert main(args) == 0
    state = torch.load(runs / "dino_stylegan_seed0" / "checkpoints" / "last.ckpt", map_location="cpu",
                       weights_only=False)
    assert state["global_step"] == 2
