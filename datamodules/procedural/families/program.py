"""A generated fragment program and the ranges of its uniform parameters."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Program:
    """A fragment program and the ranges of its uniforms.

    ``kind`` is ``"grammar"`` (``source`` defines ``vec3 image(vec2 p)``, possibly after helper functions of
    its own) or ``"shadertoy"`` (``source`` defines ``mainImage``). ``low``/``high``: float32 [K] ranges of
    the K uniform parameters ``P(0..K-1)``. ``family``: the generator family that wrote it (see
    :data:`datamodules.procedural.families.FAMILIES`), ``"shadertoy"`` for loaded files. ``structure``: None for
    a program compiled on its own; for the interpreted engine, the int32 vector uploaded as ``u_struct`` that
    selects what the shared ``source`` (the interpreter, :mod:`.pattern_interpreter`) computes.
    """

    name: str
    source: str
    kind: str
    low: np.ndarray = field(repr=False)
    high: np.ndarray = field(repr=False)
    family: str = "patterns"
    structure: np.ndarray | None = field(default=None, repr=False)

    @property
    def compile_key(self) -> str:
        """What a compiled GL program is cached under: the program itself, or the shared interpreter (variant)."""
        return self.name if self.structure is None else f"{self.family}-interpreter-{zlib.crc32(self.source.encode()):08x}"

    @property
    def num_params(self) -> int:
        return len(self.low)

    def sample_params(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n parameter vectors, float32 [n, K], uniform within the ranges."""
        u = rng.random((n, self.num_params), dtype=np.float32)
        return (self.low + u * (self.high - self.low)).astype(np.float32)
