"""StyleGAN-Oriented (Baradad et al., NeurIPS 2021): images from a randomly initialised StyleGAN2 generator.

Nothing is trained, downloaded or read from disk. The generator follows StyleGAN2's synthesis network
(skip architecture): a constant input at ``start`` px, then per resolution level two modulated 3x3
convolutions (the first after a 2x upsampling), each with a per-layer style ``affine(w_l)``, weight
demodulation, an added noise map scaled per sample, a bias and ReLU x sqrt(2); a modulated 1x1 ToRGB per
level is added to the 2x-upsampled image of the level below. Bilinear 2x upsampling is StyleGAN's
[1, 3, 3, 1] FIR upsampling filter (upsampling then convolving replaces its fused transposed convolution).

"Oriented" sampling, the best StyleGAN variant of Baradad et al. (their ``sparse_new`` network with
``bias_range`` 0.2 and one noise map for all scales), redraws most parameters for every image:

- latents: one w per layer, w_l = LeakyReLU_0.2(N(0, I_512)), no mapping network;
- 3x3 filters: a random subset of 5..40 of the 40 oriented "wavelets" (:func:`wavelets`); each input channel
  takes one filter of the subset, each output channel a N(0, 1) gain (their "chin-chout" configuration),
  so the weight of layer l is ``gain[o] * filter[i]`` (a rank-one structure :func:`modulated_conv` uses);
- biases ~ U(-0.2, 0.2); ToRGB weights ~ N(0, 1);
- noise: one pink-noise map per image (1 / f^alpha, alpha ~ U(0.5, 1.5), random phases, times a smooth
  Laplace envelope), area-resized to every layer, strength ~ U(0, 0.3) per layer;
- colour: each channel standardised, then given a mean and std drawn from Gaussians fitted to
  natural images (their ``tensor_to_uint8_norm``), clipped to [0, 1].

What persists across images is a pure function of the seed: the constant input and the style affines
(N(0, 1) weights / sqrt(fan-in), bias 1, as StyleGAN initialises them) and, with ``mapping_layers`` > 0,
a classic StyleGAN mapping network z -> w broadcast to every layer instead of the oriented latents.
Everything drawn per image comes from the image's own generator (:mod:`.sample_draws`).

Size: StyleGAN2 uses min(32768 / res, 512) channels; here min(channel_base / res, channel_max), at
least ``channel_min``, so a CPU makes >= 400 images/s at 64 px (benchmarks/render.py measures it). With
the oriented filters every output channel of a layer is the same map up to gain sign, bias and noise,
so narrow layers lose little.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

from .sample_draws import SampleDraws

# Oriented filter bank: 8 orientations of an edge and of a line, 4 sparse patterns, and their negatives.
ORIENTATIONS = 8
MIN_WAVELETS = 5  # the per-image subset holds U{5..40} filters
BIAS_RANGE = 0.2  # biases ~ U(-BIAS_RANGE, BIAS_RANGE)
NOISE_STRENGTH = 0.3  # per-layer noise strength ~ U(0, NOISE_STRENGTH)
PINK_ALPHA = (0.5, 1.5)  # pink-noise exponent ~ U(PINK_ALPHA)
ENVELOPE_GRID = 4  # Laplace envelope drawn on a 4 x 4 grid, then resized (bicubic) to the image
LEAK = 0.2  # slope of the LeakyReLU applied to the N(0, I) latents
# Per channel (R, G, B): mean ~ N(m, s) and std ~ N(m, s) of the output image, Baradad's colour statistics.
CHANNEL_MEAN = ((0.483, 0.145), (0.455, 0.142), (0.401, 0.161))
CHANNEL_STD = ((0.219, 0.063), (0.213, 0.062), (0.213, 0.069))
PURPOSE = 0x57E1  # generator key of the per-image draws (see sample_draws.py)


@dataclass(frozen=True)
class StyleGANSize:
    """Network width. ``channel_base`` / ``channel_max``: StyleGAN2's channel formula (theirs: 32768 / 512),
    shrunk for CPU speed; ``w_dim`` the latent width (theirs 512); ``mapping_layers`` 0 = oriented latents."""

    w_dim: int = 512
    channel_base: int = 1024
    channel_max: int = 64
    channel_min: int = 8
    mapping_layers: int = 0


def synthesis_plan(size: int) -> tuple[int, int]:
    """(start, levels): the constant is start x start (4..7 px), doubled ``levels - 1`` times to reach >= size.

    Exact for sizes start * 2^k (64 = 4 * 16, 224 = 7 * 32, 96 = 6 * 16); otherwise the smallest such size
    above ``size`` is generated and resized down.
    """
    if size < 4:
        raise ValueError(f"stylegan needs image_size >= 4 (got {size}); set data.image_size to 4 or more")
    best = None
    for start in range(4, 8):
        levels = 1 + max(0, math.ceil(math.log2(size / start)))
        if best is None or start * 2 ** (levels - 1) < best[0] * 2 ** (best[1] - 1):
            best = (start, levels)
    return best


def wavelets() -> torch.Tensor:
    """float32 [40, 3, 3]: Baradad's oriented filter bank (edges, lines, sparse patterns, and negatives).

    An edge (+1 | 0 | -1 halves) and a line (+1 with a -1 centre column) on an 11 x 11 grid, rotated by
    k * 180 / 8 degrees (bilinear), centre 3 x 3 cropped, mean removed; then a delta, a centre-surround, a
    plus and a signed plus.
    """
    edge = torch.ones(11, 11)
    edge[:, 5] = 0
    edge[:, 6:] = -1
    line = torch.ones(11, 11)
    line[:, 5] = -1
    bank = []
    for base in (edge, line):
        for k in range(ORIENTATIONS):
            rotated = TF.rotate(base[None], k * 180.0 / ORIENTATIONS, TF.InterpolationMode.BILINEAR)[0, 4:7, 4:7]
            bank.append(rotated - rotated.mean())
    delta = torch.zeros(3, 3)
    delta[1, 1] = 1
    surround = -torch.ones(3, 3)
    surround[1, 1] = 1
    plus = torch.tensor([[0.0, 1, 0], [1, 1, 1], [0, 1, 0]])
    bank += [delta, surround, plus, torch.sign(plus - 0.5)]
    bank = torch.stack(bank)
    return torch.cat([bank, -bank])


def modulated_conv(x: torch.Tensor, styles: torch.Tensor, filters: torch.Tensor, gains: torch.Tensor,
                   up: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """StyleGAN2's demodulated convolution for per-sample weights weight[n, o, i] = gains[n, o] * filters[n, i].

    x [N, Cin, H, W], styles [N, Cin], filters [N, Cin, k, k], gains [N, Cout] -> (y [N, 1, H', W'],
    scale [N, Cout]); the output is ``y * scale[:, :, None, None]``, kept factored because with a rank-one
    weight every output channel is a multiple of the one map y = sum_i styles[i] filters[i] (*) x_i.
    Demodulation divides output o by sqrt(gains[o]^2 * sum_i styles[i]^2 |filters[i]|^2 + 1e-8).
    ``up``: a stride-2 transposed convolution of the input with its border replicated by one pixel
    (H' = 2H + 4: StyleGAN's upsampling convolution, before its low-pass filter :func:`blur`); otherwise a 'same' correlation (F.conv2d). Computed as one batched
    matrix product [k*k, Cin] x [Cin, H*W] per image and a col2im (F.fold): BLAS-fast, and Cout times
    cheaper than the dense form (tests/test_baselines.py checks both against torch's convolutions).
    """
    n, cin, h, w = x.shape
    k = filters.shape[-1]
    taps = filters * styles[:, :, None, None]  # modulated weight of the single map, [N, Cin, k, k]
    energy = taps.square().sum(dim=(1, 2, 3))[:, None]  # [N, 1]
    scale = gains * torch.rsqrt(gains.square() * energy + 1e-8)
    if not up:  # col2im adds kernel offsets in the transposed direction: flip for a correlation
        columns = torch.bmm(taps.flip(-1, -2).flatten(2).transpose(1, 2), x.flatten(2))  # [N, k*k, H*W]
        return F.fold(columns, (h, w), k, padding=k // 2), scale
    # Borders: a stride-2 transposed convolution gives even rows one tap and odd rows two, so zero padding
    # leaves seams that compound over levels. One replicated input pixel on every side supplies the
    # missing taps; :func:`blur` then filters and crops back to 2H x 2W.
    x = F.pad(x, (1, 1, 1, 1), mode="replicate")
    columns = torch.bmm(taps.flatten(2).transpose(1, 2), x.flatten(2))
    return F.fold(columns, (2 * h + 4, 2 * w + 4), k, padding=k // 2, stride=2), scale


def blur(y: torch.Tensor) -> torch.Tensor:
    """StyleGAN's [1, 3, 3, 1] low-pass filter (gain 4) after :func:`modulated_conv` with ``up``:
    [N, 1, 2H + 4, 2W + 4] (a 2-pixel margin) -> [N, 1, 2H, 2W]."""
    f = torch.tensor([1.0, 3.0, 3.0, 1.0])
    kernel = (torch.outer(f, f) * (4 / f.sum() ** 2))[None, None]
    return F.conv2d(y, kernel)[..., 1:, 1:]


def pink_noise(draws: SampleDraws, size: int) -> torch.Tensor:
    """float32 [N, size, size]: per-image 1/f^alpha noise with random phases and a Laplace envelope, std 1."""
    alpha = PINK_ALPHA[0] + (PINK_ALPHA[1] - PINK_ALPHA[0]) * draws.uniform(1)
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.rfftfreq(size)[None, :]
    radius = (2 * torch.sqrt(fx**2 + fy**2)).clamp_min(1e-5)  # 1 at the Nyquist frequency
    magnitude = radius[None] ** -alpha[:, :, None]
    magnitude[:, 0, 0] = 0  # zero mean
    phase = 2 * math.pi * draws.uniform(size, size // 2 + 1)
    noise = torch.fft.irfft2(torch.polar(magnitude, phase), s=(size, size))
    u = draws.uniform(1, ENVELOPE_GRID, ENVELOPE_GRID).clamp(1e-6, 1 - 1e-6)
    laplace = -torch.sign(u - 0.5) * torch.log1p(-2 * (u - 0.5).abs())  # inverse CDF of Laplace(0, 1)
    envelope = F.interpolate(laplace, size=(size, size), mode="bicubic", align_corners=False)[:, 0]
    noise = (noise - noise.mean(dim=(1, 2), keepdim=True)) * envelope
    return noise / noise.std(dim=(1, 2), keepdim=True).clamp_min(1e-8)


class RandomStyleGAN:
    """The persistent random weights of one seed, and :meth:`generate` for images of given sample indices."""

    def __init__(self, seed: int, size: int, shape: StyleGANSize = StyleGANSize()):
        self.size, self.shape, self.seed = size, shape, seed
        self.start, self.levels = synthesis_plan(size)
        self.resolutions = [self.start * 2**level for level in range(self.levels)]
        self.channels = [max(shape.channel_min, min(shape.channel_base // r, shape.channel_max)) for r in self.resolutions]
        g = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, PURPOSE]).generate_state(1)[0]))
        self.const = torch.randn(self.channels[0], self.start, self.start, generator=g)
        # Style affines: one per convolution (inputs of that layer) and per ToRGB, in StyleGAN's w order.
        self.affines = [self._affine(c, g) for c in self.layer_inputs()]
        self.mapping = [torch.randn(shape.w_dim, shape.w_dim, generator=g) / math.sqrt(shape.w_dim)
                        for _ in range(shape.mapping_layers)]
        self.bank = wavelets()

    def _affine(self, features: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(self.shape.w_dim, features, generator=g) / math.sqrt(self.shape.w_dim), torch.ones(features)

    def layer_inputs(self) -> list[int]:
        """Input channels of each styled layer, in order: level 0 (conv, torgb), level l (conv up, conv, torgb)."""
        c = self.channels
        inputs = [c[0], c[0]]
        for level in range(1, self.levels):
            inputs += [c[level - 1], c[level], c[level]]
        return inputs

    @property
    def num_ws(self) -> int:
        """Latents per image: StyleGAN2 shares a w between a ToRGB and the next level's first convolution."""
        return 2 * self.levels

    def w_index(self) -> list[int]:
        """The latent each styled layer reads (the order of :meth:`layer_inputs`)."""
        index = [0, 1]
        for level in range(1, self.levels):
            index += [2 * level - 1, 2 * level, 2 * level + 1]
        return index

    def latents(self, draws: SampleDraws) -> torch.Tensor:
        """[N, num_ws, w_dim]: oriented latents, or a mapping network's w broadcast when mapping_layers > 0."""
        if not self.mapping:
            return F.leaky_relu(draws.normal(self.num_ws, self.shape.w_dim), LEAK)
        x = draws.normal(self.shape.w_dim)
        x = x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)
        for weight in self.mapping:
            x = F.leaky_relu(x @ weight, LEAK) * math.sqrt(2)
        return x[:, None].expand(-1, self.num_ws, -1)

    def _conv(self, x, style, draws, noise, cout, up):
        """One oriented synthesis layer: [N, Cin, H, W] -> [N, cout, H', W'] (H' = 2H when ``up``)."""
        n, cin = x.shape[:2]
        bank = len(self.bank)
        subset_size = draws.integers(MIN_WAVELETS, bank + 1)  # [N]
        subset = draws.uniform(bank).argsort(dim=1)  # a random permutation; its first subset_size entries
        choice = draws.integers(0, subset_size, cin)  # [N, Cin] positions in the subset
        filters = self.bank[torch.gather(subset, 1, choice)]  # [N, Cin, 3, 3]
        gains = draws.normal(cout)
        bias = BIAS_RANGE * (2 * draws.uniform(cout) - 1)
        strength = NOISE_STRENGTH * draws.uniform(1)
        y, scale = modulated_conv(x, style, filters, gains, up)
        if up:
            y = blur(y)
        size = y.shape[-1]
        # relu(sqrt2 * (scale_o * y + strength * noise + bias_o)) as one batched product [Cout, 3] x [3, H*W].
        basis = torch.cat([y, F.adaptive_avg_pool2d(noise, size), torch.ones_like(y)], dim=1).flatten(2)
        coefficients = torch.stack([scale, strength.expand(-1, cout), bias], dim=2) * math.sqrt(2)
        return torch.bmm(coefficients, basis).relu_().reshape(n, cout, size, size)

    def _torgb(self, x, style, draws):
        n, c = x.shape[:2]
        weight = draws.normal(3, c) * (style / math.sqrt(c))[:, None, :]  # modulated, not demodulated
        return torch.einsum("nchw,noc->nohw", x, weight)

    def generate(self, indices) -> torch.Tensor:
        """uint8 [len(indices), 3, size, size]: the images of sample ``indices`` of this seed."""
        draws = SampleDraws(self.seed, indices, PURPOSE)
        ws = self.latents(draws)
        generated = self.resolutions[-1]
        noise = pink_noise(draws, generated)[:, None]
        styles = [ws[:, i] @ weight + bias for i, (weight, bias) in zip(self.w_index(), self.affines, strict=True)]
        x = self.const.expand(len(draws), -1, -1, -1)
        x = self._conv(x, styles[0], draws, noise, self.channels[0], up=False)
        image = self._torgb(x, styles[1], draws)
        k = 2
        for level in range(1, self.levels):
            x = self._conv(x, styles[k], draws, noise, self.channels[level], up=True)
            x = self._conv(x, styles[k + 1], draws, noise, self.channels[level], up=False)
            image = F.interpolate(image, scale_factor=2, mode="bilinear", align_corners=False)
            image = image + self._torgb(x, styles[k + 2], draws)
            k += 3
        if generated != self.size:
            image = F.interpolate(image, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        return to_uint8(image, draws)


def to_uint8(image: torch.Tensor, draws: SampleDraws) -> torch.Tensor:
    """[N, 3, H, W] float -> uint8: each channel standardised, given a drawn mean and std, clipped to [0, 1]."""
    mean = torch.tensor(CHANNEL_MEAN)
    std = torch.tensor(CHANNEL_STD)
    target_mean = mean[:, 0] + mean[:, 1] * draws.normal(3)
    target_std = std[:, 0] + std[:, 1] * draws.normal(3)
    centred = image - image.mean(dim=(2, 3), keepdim=True)
    unit = centred / centred.std(dim=(2, 3), keepdim=True).clamp_min(1e-8)
    out = unit * target_std[:, :, None, None] + target_mean[:, :, None, None]
    return out.clamp_(0, 1).mul_(255).round_().to(torch.uint8)


@lru_cache(maxsize=4)
def stylegan_for(seed: int, size: int) -> RandomStyleGAN:
    """The generator of (seed, size), built once per process."""
    return RandomStyleGAN(seed, size)


def generate_block(config, block: int, chunk: int = 32) -> torch.Tensor:
    """uint8 [block_size, 3, H, W]: samples block * block_size + j of ``config`` (a BlockConfig)."""
    model = stylegan_for(config.seed, config.image_size)
    first = block * config.block_size
    return torch.cat([model.generate(range(first + s, first + min(s + chunk, config.block_size)))
                      for s in range(0, config.block_size, chunk)])
