"""Program families: a registry of seeded generators of GLSL ``vec3 image(vec2 p)`` programs.

Each family is one module with ``generate(seed) -> Program``; :data:`FAMILIES` maps its name to it.
:func:`generate_program` picks a family for a seed by the given weights, then asks that family for the
program of the same seed, so a program is a pure function of (seed, weights).

- ``patterns``: the 2D pattern grammar (transforms, noises, cells, shapes, palettes); the default.
- ``raymarch``: 3D signed-distance scenes under a perspective camera, lit, shadowed and fogged.
- ``leaves``: dead leaves, textured shapes with power-law sizes occluding each other.
- ``ifs``: escape-time and iterated-function-system fractals.
- ``spectral``: coloured noise with a 1/f^alpha power spectrum, as natural images have.
- ``flat``: flat-coloured polygons and Voronoi regions with clean edges.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from . import flat, ifs, leaves, pattern_interpreter, patterns, raymarch, spectral
from .program import Program

FAMILIES: dict[str, Callable[[int], Program]] = {
    "patterns": patterns.generate,
    "raymarch": raymarch.generate,
    "leaves": leaves.generate,
    "ifs": ifs.generate,
    "spectral": spectral.generate,
    "flat": flat.generate,
}


# How a program reaches the GPU: ``compiled`` (its own GLSL program) or ``interpreted`` (the shared interpreter
# of :mod:`.pattern_interpreter` with the program's structure as uniforms: no compile per program). Only
# ``patterns`` has an interpreter; the other families stay compiled under either engine.
ENGINES = ("compiled", "interpreted")
INTERPRETED_FAMILIES = {"patterns": pattern_interpreter.interpreted}


def check_engine(engine: str) -> str:
    """``engine`` if valid, else a ValueError naming the valid ones."""
    if engine not in ENGINES:
        raise ValueError(f"unknown program engine {engine!r}; choose one of {', '.join(ENGINES)} "
                         "(data.program_engine=interpreted renders patterns programs without compiling each)")
    return engine


def family_weights(families: Mapping[str, float] | None) -> tuple[tuple[str, float], ...]:
    """Validated ``(name, weight)`` pairs sorted by name (so the mapping's order never matters).

    None means ``patterns`` only. Raises ValueError on an unknown name, a negative weight or no positive one.
    """
    if families is None:
        return (("patterns", 1.0),)
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        raise ValueError(f"unknown program famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; "
                         f"valid families: {', '.join(FAMILIES)} (e.g. families={{patterns: 1, raymarch: 1}})")
    pairs = tuple(sorted((str(name), float(weight)) for name, weight in families.items()))
    bad = [f"{name}={weight}" for name, weight in pairs if not weight >= 0.0]
    if bad or not any(weight > 0 for _, weight in pairs):
        raise ValueError(f"family weights must be >= 0 with at least one > 0; got {dict(pairs)}")
    return pairs


def choose_family(seed: int, families: Mapping[str, float] | None = None) -> str:
    """The family of program ``seed`` under ``families`` weights (a draw keyed by the seed alone)."""
    pairs = [(name, weight) for name, weight in family_weights(families) if weight > 0]
    if len(pairs) == 1:
        return pairs[0][0]
    weights = np.array([weight for _, weight in pairs])
    u = np.random.default_rng([int(seed), 0xFA4117]).random()
    index = int(np.searchsorted(np.cumsum(weights) / weights.sum(), u, side="right"))
    return pairs[min(index, len(pairs) - 1)][0]  # min: the cumulative sum may end a rounding below 1


def generate_program(seed: int, families: Mapping[str, float] | None = None, engine: str = "compiled") -> Program:
    """The program of ``seed`` (any non-negative int) drawn from ``families`` (name -> weight; None: patterns).

    Same (seed, families), same source and ranges. A family's program of a seed does not depend on the
    weights: only which family is asked does. ``engine="interpreted"``: a family with an interpreter
    (``patterns``) returns the same program as a structure for the shared interpreter (same name and
    parameter ranges, the same images); the others return their compiled program.
    """
    family = choose_family(seed, families)
    if check_engine(engine) == "interpreted" and family in INTERPRETED_FAMILIES:
        return INTERPRETED_FAMILIES[family](seed)
    return FAMILIES[family](seed)
