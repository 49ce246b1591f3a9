"""The four processes against their definitions (no EGL needed: synthetic program images)."""

import numpy as np
import pytest
import torch

from datamodules.procedural.kml import MASK_LEVELS, kmeans2_mask, kml, kml_mask, soften_mask
from datamodules.procedural.mixup import MIXUP_IMAGES, convex_mix, dirichlet_weights
from datamodules.procedural.processes import PROCESSES, get_process, pool_masks

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _pool(n=8, size=48, seed=0):
    """Smooth random images with large regions (so the 2-means masks are non-trivial)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 6, 6, generator=g)
    return (torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
            .clamp(0, 1).mul(255).round().to(torch.uint8))


def test_kmeans_mask_is_binary_and_finds_two_colour_regions():
    image = torch.zeros(1, 3, 40, 40)
    image[:, 0, :, :20] = 1.0  # left half red (255, 0, 0)
    image[:, 2, :, 20:] = 1.0  # right half blue (0, 0, 255), lexicographically first: cluster 0
    mask = kmeans2_mask(image, size=64)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert mask[0, 0, :, 36:].eq(1).all() and mask[0, 0, :, :28].eq(0).all()
    masks = kmeans2_mask(_pool().float() / 255)
    assert set(masks.unique().tolist()) == {0.0, 1.0}, "binary before blurring"


def test_kmeans_matches_plain_lloyd_reference():
    """Same centres as a straightforward numpy 2-means with the same initialisation, on all pixels."""
    pool = _pool(4, 64, seed=3)
    ours = kmeans2_mask(pool, size=64, fit_stride=1)
    for i in range(len(pool)):
        px = pool[i].permute(1, 2, 0).reshape(-1, 3).numpy().astype(np.float64)
        unique = np.unique(px, axis=0)
        c = np.stack([unique[0], unique[-1]])
        for _ in range(3):
            label0 = ((px - c[0]) ** 2).sum(1) <= ((px - c[1]) ** 2).sum(1)
            c = np.stack([px[label0].mean(0) if label0.any() else c[0], px[~label0].mean(0) if (~label0).any() else c[1]])
        label0 = ((px - c[0]) ** 2).sum(1) <= ((px - c[1]) ** 2).sum(1)
        assert np.array_equal(ours[i, 0].reshape(-1).numpy() == 1, label0)


def test_soft_mask_is_blurred_and_resized():
    mask = kmeans2_mask(_pool(2, 48).float() / 255)
    soft = soften_mask(mask, (48, 48))
    assert soft.shape == (2, 1, 48, 48) and soft.min() >= 0 and soft.max() <= 1
    assert ((soft > 0) & (soft < 1)).any(), "edges are soft after the box blurs"


def test_kml_composite_matches_the_formula_for_the_mask_used():
    pool = _pool(6, 48)
    s1, s2, s3 = (pool[i : i + 1].float() / 255 for i in range(3))
    out, m = kml(s1, s2, s3)
    assert torch.allclose(out, s2 * m + s3 * (1 - m))
    # The stream's integer path: the same composite with the quantised mask, to within one 8-bit level.
    cache = {}
    indices = torch.tensor([[0, 1, 2], [3, 4, 5], [2, 0, 1]])
    got = get_process("kml").combine(pool, indices, torch.Generator(), cache).float()
    mq = pool_masks(pool, cache).float() / MASK_LEVELS
    assert torch.equal(pool_masks(pool, {}), (kml_mask(pool) * MASK_LEVELS).round().short())
    for row, (a, b, c) in enumerate(indices.tolist()):
        want = pool[b].float() * mq[a] + pool[c].float() * (1 - mq[a])
        assert (got[row] - want).abs().max() <= 1.0


def test_kml_mixup_is_the_mean_of_two_kml_images():
    pool = _pool(8, 48)
    indices = torch.tensor([[0, 1, 2, 3, 4, 5], [7, 6, 5, 4, 3, 2]])
    both = get_process("kml_mixup").combine(pool, indices, torch.Generator(), {}).float()
    first = get_process("kml").combine(pool, indices[:, :3], torch.Generator(), {}).float()
    second = get_process("kml").combine(pool, indices[:, 3:], torch.Generator(), {}).float()
    assert (both - (first + second) / 2).abs().max() <= 1.0


def test_dirichlet_weights_and_convex_mix():
    g = torch.Generator().manual_seed(0)
    w = dirichlet_weights(20000, MIXUP_IMAGES, g)
    assert w.shape == (20000, 6) and (w > 0).all()
    assert torch.allclose(w.sum(1), torch.ones(20000), atol=1e-6)
    # Dirichlet(1,...,1) over 6: each weight ~ Beta(1, 5): mean 1/6, variance 5 / (36 * 7).
    assert abs(w.mean().item() - 1 / 6) < 0.005
    assert abs(w[:, 0].var().item() - 5 / 252) < 0.002
    pool = _pool(8, 16).float()
    indices = torch.tensor([[0, 1, 2, 3, 4, 5]])
    want = sum(w[0, j] * pool[j] for j in range(6))
    assert torch.allclose(convex_mix(pool, indices, w[:1]), want[None], atol=1e-3)
    mixed = PROCESSES["mixup"].combine(pool.to(torch.uint8), indices, torch.Generator().manual_seed(5), {})
    w5 = dirichlet_weights(1, 6, torch.Generator().manual_seed(5))
    assert (mixed[0].float() - sum(w5[0, j] * pool[j] for j in range(6))).abs().max() <= 0.5 + 1e-3


def test_shaders_process_is_the_image_itself():
    pool = _pool(4, 16)
    assert torch.equal(PROCESSES["shaders"].combine(pool, torch.tensor([[2], [0]]), torch.Generator(), {}), pool[[2, 0]])


def test_processes_are_deterministic_and_thread_count_independent():
    pool = _pool(12, 48)
    indices = torch.randint(0, 12, (8, 6), generator=torch.Generator().manual_seed(1))
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append({name: p.combine(pool, indices[:, : p.ingredients], torch.Generator().manual_seed(3), {})
                            for name, p in PROCESSES.items() if p.combine is not None})
    finally:
        torch.set_num_threads(threads)
    for name in results[0]:  # processes that generate their samples: tests/test_baselines.py
        assert torch.equal(results[0][name], results[1][name]), name
        levels = results[0][name].float()
        assert levels.shape == (8, 3, 48, 48) and levels.min() >= 0 and levels.max() <= 255
        assert torch.equal(levels, levels.round()), "samples are whole 8-bit levels"


def test_box_blur_equals_avg_pool_without_padding_counts():
    """The separable blur is the paper's 3x3 box blur: avg_pool2d(count_include_pad=False)."""
    from datamodules.procedural.kml import box_blur3

    g = torch.Generator().manual_seed(0)
    for shape in [(2, 1, 1, 1), (2, 1, 2, 5), (3, 1, 17, 9)]:
        binary = (torch.rand(shape, generator=g) > 0.5).float()
        want = torch.nn.functional.avg_pool2d(binary, 3, stride=1, padding=1, count_include_pad=False)
        assert torch.equal(box_blur3(binary), want), "exact on binary masks"
        soft = torch.rand(shape, generator=g)
        want = torch.nn.functional.avg_pool2d(soft, 3, stride=1, padding=1, count_include_pad=False)
        assert torch.allclose(box_blur3(soft), want, atol=1e-6)
