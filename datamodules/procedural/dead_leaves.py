"""Dead leaves (Baradad et al., NeurIPS 2021): occluding random shapes with a power-law size distribution.

Baradad's "mixed" model (the best of their untextured dead-leaves sets): each leaf is a circle, square,
oriented square, axis-aligned rectangle, triangle or quadrilateral (uniformly), with a uniform random RGB
colour, a centre uniform over the image, and a radius r (relative to the image side) on [R_MIN, R_MAX]
with density

    p(r)  proportional to  r^-SIGMA - R_MAX^-SIGMA       (SIGMA = 3; zero at r = R_MAX)

Squares are inscribed in the circle of radius r (side r * sqrt 2), rectangles have corners
(+-r cos a, +-r sin a) with a ~ U(0, pi/2), triangles and quadrilaterals have 3 or 4 sorted random angles
on that circle. Leaves are placed until the image is covered (at most MAX_LEAVES), uncovered pixels stay
black.

Baradad paints back to front; here leaves are drawn front to back (each pixel keeps the first leaf that
covers it) and stop when every pixel is covered, the exact simulation of the dead-leaves model (Kendall &
Thonnes 1999). Every leaf is four linear
inequalities in the features (x, y, 1, x^2 + y^2) of a pixel (a circle one quadratic inequality, a convex
polygon its edges), so testing a leaf is a few array operations over the pixels of its bounding square (:func:`covered_pixels`).
"""

from __future__ import annotations

import math

import torch

from .sample_draws import SampleDraws

SIGMA = 3.0  # power-law exponent of the radius density
R_MIN, R_MAX = 0.03, 1.0  # radius range, relative to the image side
MAX_LEAVES = 5000  # per image (Baradad's max_iters)
ROUND = 256  # leaves drawn per image per round (a 64 px image needs ~1000 to be covered, 224 px ~1500)
SHAPES = ("circle", "square", "oriented_square", "rectangle", "triangle", "quadrilateral")
DRAWS_PER_LEAF = 12  # shape, 3 colour, radius, 2 centre, 4 angles, rotation
CDF_GRID = 4096  # points of the tabulated radius CDF (inverted by linear interpolation)
PURPOSE = 0xDEAD


def radius_cdf(r: torch.Tensor) -> torch.Tensor:
    """CDF of the radius density p(r) ~ r^-SIGMA - R_MAX^-SIGMA on [R_MIN, R_MAX] (float64 in, same shape out)."""
    def integral(x):  # antiderivative of the unnormalised density, from R_MIN
        return (R_MIN ** (1 - SIGMA) - x ** (1 - SIGMA)) / (SIGMA - 1) - (x - R_MIN) * R_MAX**-SIGMA

    return integral(r.clamp(R_MIN, R_MAX)) / integral(torch.tensor(R_MAX, dtype=torch.float64))


_GRID = torch.logspace(math.log10(R_MIN), math.log10(R_MAX), CDF_GRID, dtype=torch.float64)
_GRID_CDF = radius_cdf(_GRID)


def sample_radius(u: torch.Tensor) -> torch.Tensor:
    """Radii from uniforms u (any shape) by inverting the tabulated CDF (log-spaced grid, linear in between)."""
    u = u.double()
    i = torch.searchsorted(_GRID_CDF, u).clamp(1, CDF_GRID - 1)
    c0, c1 = _GRID_CDF[i - 1], _GRID_CDF[i]
    t = ((u - c0) / (c1 - c0).clamp_min(1e-300)).clamp(0, 1)
    return (_GRID[i - 1] + t * (_GRID[i] - _GRID[i - 1])).float()


def leaf_constraints(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Leaves from uniforms u [L, DRAWS_PER_LEAF] -> (constraints [L, 4, 4], colours uint8 [L, 3],
    centres [L, 2] (x, y), radii [L]), lengths in units of the image side.

    A pixel at (x, y) (units of the image side) is inside leaf l when for all four rows
    c = constraints[l, j]: c0 x + c1 y + c2 + c3 (x^2 + y^2) >= 0.
    """
    shape = (u[:, 0] * len(SHAPES)).long().clamp_max(len(SHAPES) - 1)
    colours = (u[:, 1:4] * 256).long().clamp_max(255).to(torch.uint8)
    r = sample_radius(u[:, 4])
    cx, cy = u[:, 5], u[:, 6]
    # Polygon vertex angles (counter-clockwise), one row of 4 per leaf; triangles repeat their first vertex.
    quarter = torch.arange(4) * (math.pi / 2) + math.pi / 4
    square = quarter.expand(len(u), 4)
    oriented = square + 2 * math.pi * u[:, 11:12]
    a = (math.pi / 2) * u[:, 7:8]
    rectangle = torch.cat([a, math.pi - a, math.pi + a, 2 * math.pi - a], dim=1)
    random_angles = (2 * math.pi * u[:, 7:11]).sort(dim=1).values
    triangle = torch.cat([random_angles[:, :3], random_angles[:, :1]], dim=1)
    angles = torch.stack([square, square, oriented, rectangle, triangle, random_angles], dim=1)
    angles = angles[torch.arange(len(u)), shape]  # [L, 4]
    vx, vy = cx[:, None] + r[:, None] * torch.cos(angles), cy[:, None] + r[:, None] * torch.sin(angles)
    dx, dy = vx.roll(-1, dims=1) - vx, vy.roll(-1, dims=1) - vy
    # Left of each counter-clockwise edge: cross(edge, p - v) = -dy x + dx y + (dy vx - dx vy) >= 0.
    polygon = torch.stack([-dy, dx, dy * vx - dx * vy, torch.zeros_like(dx)], dim=2)
    degenerate = (dx == 0) & (dy == 0)  # a repeated vertex (triangles): an always-true row
    polygon[degenerate] = torch.tensor([0.0, 0.0, 1.0, 0.0])
    # Circle: r^2 - (x - cx)^2 - (y - cy)^2 >= 0, then three always-true rows.
    circle = torch.zeros(len(u), 4, 4)
    circle[:, 0] = torch.stack([2 * cx, 2 * cy, r**2 - cx**2 - cy**2, -torch.ones_like(r)], dim=1)
    circle[:, 1:, 2] = 1.0
    is_circle = (shape == 0)[:, None, None]
    return torch.where(is_circle, circle, polygon), colours, torch.stack([cx, cy], dim=1), r


def covered_pixels(constraints: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, size: int):
    """(pixel [K], leaf [K]): every (pixel, leaf) pair with the pixel centre inside the leaf.

    Only the pixels of a leaf's bounding square are tested: leaves are grouped by half-width (2, 3, 4, 6, 8,
    11, ... pixels, growing by sqrt 2; the last group as wide as the image), each group on a grid of offsets
    around its centres.
    """
    half = (radii * size).ceil().long() + 1
    corner = (centres * size).floor().long()  # [L, 2] pixel holding the centre
    pixels, leaves = [], []
    low, width = -1, 2
    while low < size:
        width = min(width, size)
        group = torch.nonzero((half > low) & ((half <= width) | (width == size)))[:, 0]
        low, width = width, max(width + 1, round(width * math.sqrt(2)))
        if len(group) == 0:
            continue
        offsets = torch.arange(-low, low + 1)
        px = corner[group, 0:1] + offsets  # [G, S] columns
        py = corner[group, 1:2] + offsets  # [G, S] rows
        x, y = (px + 0.5) / size, (py + 0.5) / size
        c = constraints[group]  # [G, 4, 4]
        columns = c[:, :, 0, None] * x[:, None] + c[:, :, 3, None] * (x * x)[:, None]  # [G, 4, S]
        rows = c[:, :, 1, None] * y[:, None] + c[:, :, 3, None] * (y * y)[:, None] + c[:, :, 2, None]
        value = rows[:, :, :, None] + columns[:, :, None, :]  # [G, 4, S rows, S columns]
        inside = (value.amin(dim=1) >= 0) & ((px >= 0) & (px < size))[:, None, :] & ((py >= 0) & (py < size))[:, :, None]
        g, row, column = torch.nonzero(inside, as_tuple=True)
        pixels.append(py[g, row] * size + px[g, column])
        leaves.append(group[g])
    return torch.cat(pixels), torch.cat(leaves)


def dead_leaves_images(draws: SampleDraws, size: int) -> torch.Tensor:
    """uint8 [N, 3, size, size]: image n's leaves drawn from its own generator, front to back, in rounds.

    Each pixel keeps the smallest id among the leaves covering it; ids grow in drawing order within an
    image, so that is the frontmost leaf. An image stops drawing once every pixel is covered.
    """
    n, area = len(draws), size * size
    uncovered = torch.iinfo(torch.long).max
    front = torch.full((n * area,), uncovered, dtype=torch.long)  # frontmost leaf id per pixel
    colours = [torch.zeros(1, 3, dtype=torch.uint8)]  # leaf id 0: black, for pixels left uncovered
    next_id = 1
    active = torch.arange(n)
    for _ in range(0, MAX_LEAVES, ROUND):
        leaves = ROUND
        u = torch.cat([torch.rand(leaves, DRAWS_PER_LEAF, generator=draws.generators[i]) for i in active.tolist()])
        constraints, colour, centres, radii = leaf_constraints(u)
        pixel, leaf = covered_pixels(constraints, centres, radii, size)
        image = active.repeat_interleave(leaves)
        front.scatter_reduce_(0, image[leaf] * area + pixel, next_id + leaf, reduce="amin")
        colours.append(colour)
        next_id += len(u)
        done = (front.view(n, area)[active] != uncovered).all(dim=1)
        active = active[~done]
        if len(active) == 0:
            break
    front[front == uncovered] = 0
    return torch.cat(colours)[front].view(n, size, size, 3).permute(0, 3, 1, 2).contiguous()


def generate_block(config, block: int) -> torch.Tensor:
    """uint8 [block_size, 3, H, W]: samples block * block_size + j of ``config`` (a BlockConfig)."""
    first = block * config.block_size
    return dead_leaves_images(SampleDraws(config.seed, range(first, first + config.block_size), PURPOSE),
                              config.image_size)
