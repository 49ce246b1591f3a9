"""Seeded GLSL program generator: ``generate_program(seed, families=None)`` -> a valid fragment program.

The generators live in :mod:`datamodules.procedural.families` (one module per family; ``patterns`` is the
original 2D grammar and the default). This module keeps the names the engine imports.
"""

from __future__ import annotations

from .families import ENGINES, FAMILIES, check_engine, family_weights, generate_program
from .families.program import Program

__all__ = ["ENGINES", "FAMILIES", "Program", "check_engine", "family_weights", "generate_program"]
