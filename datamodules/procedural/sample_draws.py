"""Random draws owned by one sample: a generator per (seed, sample index, purpose).

Processes that make their samples themselves (``stylegan``, ``dead_leaves``) draw every random number
of sample ``i`` from its own generator, so sample ``i`` is a pure function of (seed, i): the same
whatever block size, worker count, rank or resume point produced it. :class:`SampleDraws` holds the
generators of a batch of samples and returns their draws stacked along a leading batch axis.
"""

from __future__ import annotations

import numpy as np
import torch

# Uniforms drawn per sample per refill: one generator call per sample serves many small requests
# (a call costs microseconds; a 64 px StyleGAN image makes ~100 requests).
REFILL = 8192


def sample_generator(seed: int, index: int, purpose: int) -> torch.Generator:
    """A torch generator keyed by (seed, sample index, purpose); SeedSequence mixes the key into 63 bits."""
    state = np.random.SeedSequence([seed, index, purpose]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & (2**63 - 1))


class SampleDraws:
    """Per-sample draws for samples ``indices`` of ``seed``: each method returns [len(indices), *shape].

    Row ``n`` comes from sample ``indices[n]``'s generator only, consumed in request order, so a sample's
    draws do not depend on which other samples share the batch. Uniforms are drawn ahead in buffers of
    ``REFILL`` per sample; normals are their inverse normal CDF.
    """

    def __init__(self, seed: int, indices, purpose: int):
        self.generators = [sample_generator(seed, int(i), purpose) for i in indices]
        self._buffer = torch.empty(len(self.generators), 0)
        self._used = 0

    def __len__(self) -> int:
        return len(self.generators)

    def uniform(self, *shape: int) -> torch.Tensor:
        """U(0, 1) draws (never exactly 0 or 1), float32 [N, *shape]."""
        count = int(np.prod(shape, dtype=np.int64))
        if self._used + count > self._buffer.shape[1]:
            more = max(REFILL, count)
            fresh = torch.stack([torch.rand(more, generator=g) for g in self.generators])
            self._buffer = torch.cat([self._buffer[:, self._used :], fresh], dim=1)
            self._used = 0
        out = self._buffer[:, self._used : self._used + count]
        self._used += count
        return out.clamp(1e-7, 1 - 1e-7).reshape(len(self), *shape)

    def normal(self, *shape: int) -> torch.Tensor:
        """N(0, 1) draws, float32 [N, *shape] (inverse CDF of uniforms)."""
        return torch.special.ndtri(self.uniform(*shape))

    def integers(self, low: int, high: torch.Tensor | int, *shape: int) -> torch.Tensor:
        """Integers in [low, high) (``high`` a scalar or a per-sample long [N]), long [N, *shape]."""
        high = torch.as_tensor(high).reshape(-1, *([1] * len(shape)))
        return low + (self.uniform(*shape) * (high - low)).long().clamp_max(high - low - 1)
