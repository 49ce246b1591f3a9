"""The source builder every family writes with: GLSL statements, fresh names, uniform parameter ranges."""

from __future__ import annotations

import numpy as np

from .program import Program


class Builder:
    """Accumulates GLSL statements, fresh variable names and uniform parameter ranges.

    ``budget``: per-pixel cost budget in the family's own unit (``afford`` / ``cost``); families that bound
    their cost by construction (fixed loop counts) leave it at infinity.
    """

    def __init__(self, rng: np.random.Generator, budget: float = float("inf")):
        self.rng = rng
        self.budget = budget
        self.lines: list[str] = []
        self.low: list[float] = []
        self.high: list[float] = []
        self.cost = 0.0
        self._n = 0

    def param(self, low: float, high: float) -> str:
        self.low.append(low)
        self.high.append(high)
        return f"P({len(self.low) - 1})"

    def vec2(self, low: float, high: float) -> str:
        return f"vec2({self.param(low, high)}, {self.param(low, high)})"

    def vec3(self, low: float, high: float) -> str:
        return f"vec3({self.param(low, high)}, {self.param(low, high)}, {self.param(low, high)})"

    def let(self, glsl_type: str, expr: str) -> str:
        self._n += 1
        name = f"v{self._n}"
        self.lines.append(f"    {glsl_type} {name} = {expr};")
        return name

    def choice(self, options: list, weights: list[float] | None = None):
        w = None if weights is None else np.asarray(weights, dtype=float) / sum(weights)
        return options[self.rng.choice(len(options), p=w)]

    def afford(self, cost: float) -> bool:
        return self.cost + cost <= self.budget

    def program(self, name: str, family: str, result: str, helpers: str = "") -> Program:
        """The finished program: ``helpers`` (GLSL functions), then ``vec3 image(vec2 p)`` returning ``result``."""
        body = helpers + "vec3 image(vec2 p) {\n" + "\n".join(self.lines) + f"\n    return {result};\n}}\n"
        return Program(name=name, source=body, kind="grammar", family=family,
                       low=np.asarray(self.low, dtype=np.float32), high=np.asarray(self.high, dtype=np.float32))
