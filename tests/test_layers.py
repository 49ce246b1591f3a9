"""The import graph runs one way: a module imports only from its own layer or below, and no cycle.

Layers, lowest first (README "Architecture"): 1 core; 2 the engines (procedural engine, real-image
data sets, visual memory); 3 models (DINO and encoders; the compositional study, a slice of its own);
4 evaluation tasks and suite; 5 Lightning adapters (callbacks, training data modules); 6 training;
7 entry points and benchmarks. Every import is read from the source (also imports inside functions).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Longest prefix wins. (package prefix, layer)
LAYERS = [
    ("procedural_perception", 1),  # the package itself holds only its docstring
    ("procedural_perception.core", 1),
    ("datamodules.procedural", 2),
    ("procedural_perception.datasets", 2),
    ("procedural_perception.visual_memory", 2),
    ("lightning_modules", 3),
    ("procedural_perception.compositional", 3),
    ("procedural_perception.evaluations", 4),
    ("callbacks", 5),
    ("datamodules", 5),
    ("procedural_perception.training", 6),
    ("procedural_perception.cli", 7),
    ("benchmarks", 7),
]
PACKAGES = ("procedural_perception", "datamodules", "lightning_modules", "callbacks", "benchmarks")


def unit_of(module: str) -> tuple[str, int] | None:
    """The (prefix, layer) a module belongs to, or None for modules outside the project."""
    best = None
    for prefix, layer in LAYERS:
        if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, layer)
    return best


def project_modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """Project modules ``module`` imports (``from a import b`` counts as a.b when that is a module)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from a import b`: the module a.b when it is one, else (a name defined in a) the module a
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    return {m: imports_of(m, p, known) for m, p in modules.items()}


def test_no_import_runs_upward():
    upward = []
    for module, targets in graph().items():
        here = unit_of(module)
        for target in targets:
            there = unit_of(target)
            if here and there and there[1] > here[1]:
                upward.append(f"{module} (layer {here[1]}) imports {target} (layer {there[1]})")
    assert not upward, "\n".join(sorted(upward))


def test_every_project_module_has_a_layer():
    assert not [m for m in project_modules() if unit_of(m) is None]


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_between_modules_or_packages():
    edges = graph()
    assert not _cycles(edges), _cycles(edges)
    units: dict[str, set[str]] = defaultdict(set)
    for module, targets in edges.items():
        for target in targets:
            a, b = unit_of(module), unit_of(target)
            if a and b and a[0] != b[0]:
                units[a[0]].add(b[0])
    assert not _cycles(units), _cycles(units)


def test_the_checker_sees_an_upward_import(tmp_path):
    path = tmp_path / "x.py"
    path.write_text("def f():\n    from callbacks.evaluation import PeriodicEvaluation\n")
    assert imports_of("procedural_perception.core.x", path, {"callbacks.evaluation"}) == {"callbacks.evaluation"}
    assert unit_of("callbacks.evaluation")[1] > unit_of("procedural_perception.core.x")[1]


def test_the_readme_states_the_same_layers():
    """README "Architecture" lists the layers (`| n | \\`package/\\`, ... | holds |`); they are the ones checked here."""
    import re

    stated = set()
    for line in (ROOT / "README.md").read_text().splitlines():
        row = re.match(r"\| (\d) \| ([^|]+)\|", line)
        if row:
            for package in re.findall(r"`([\w/]+)/`", row.group(2)):
                stated.add((package.replace("/", "."), int(row.group(1))))
    assert stated == {(prefix, layer) for prefix, layer in LAYERS if prefix != "procedural_perception"}
