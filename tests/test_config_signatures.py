"""Configs cannot drift from the code: every YAML node with a ``_target_`` names only real arguments
of its target and only values that differ from the target's defaults (a copied default is how the
SlotVAE ``d_model`` / ``alpha_warmup_steps`` drift happened), and every profile key exists somewhere.

``compose`` fills in the defaults from the signatures, so nothing is lost by leaving them out.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml

from procedural_perception.core.config import CONFIG_DIR, compose, signature_defaults, target_factory

# Keys a node may carry besides its target's arguments (read by the composer or by cli/train.py).
CONFIG_KEYS = {"_target_", "_choices", "defaults", "enabled"}


def yaml_files() -> list[Path]:
    return sorted(p for p in CONFIG_DIR.rglob("*.yaml") if p.parent.name != "profile")


def target_nodes(node, path: str = ""):
    """(dotted path, node) of every mapping with a ``_target_`` inside a raw YAML tree."""
    if isinstance(node, dict):
        if "_target_" in node:
            yield path, node
        for key, value in node.items():
            yield from target_nodes(value, f"{path}.{key}" if path else str(key))


def problems(node: dict, where: str) -> list[str]:
    """What is wrong with one node: unknown keys and values equal to the constructor default."""
    factory = target_factory(node["_target_"])
    parameters = inspect.signature(factory).parameters
    takes_any = any(p.kind == p.VAR_KEYWORD for p in parameters.values())
    defaults = signature_defaults(factory)
    out, deviations = [], []
    for key, value in node.items():
        if key in CONFIG_KEYS:
            continue
        if key not in parameters and not takes_any:
            out.append(f"{where}.{key}: not an argument of {node['_target_']} (arguments: {', '.join(parameters)})")
        elif key in defaults and not isinstance(value, dict) and _same(value, defaults[key]):
            out.append(f"{where}.{key}: {value!r} repeats the default of {node['_target_']}; leave it out")
        elif key in defaults and not isinstance(value, dict) and not str(value).startswith("${"):
            deviations.append(f"{key}: {value!r} (default {defaults[key]!r})")
    if out and deviations:  # a node that copies defaults: its other values may be copies that drifted
        out.append(f"{where}: the values that differ from the defaults (drifted copies, or meant?): "
                   + "; ".join(deviations))
    return out


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_yaml_keys_are_arguments_and_values_are_not_copied_defaults(path):
    raw = yaml.safe_load(path.read_text()) or {}
    found = [p for where, node in target_nodes(raw) for p in problems(node, f"{path.name}:{where or '<root>'}")]
    assert not found, "\n".join(found)


def test_the_check_catches_a_copied_default_and_an_unknown_key():
    node = {"_target_": "procedural_perception.evaluations.knn.KNNClassification", "memory_size": 10000,
            "memroy": "digits", "query_size": 7}
    found = problems(node, "x")
    assert any("memory_size: 10000 repeats the default" in p for p in found)
    assert any("memroy: not an argument" in p for p in found)
    assert not any(p.startswith("x.query_size") for p in found)  # a real override is not a problem...
    assert "query_size: 7 (default 2000)" in found[-1]  # ...but beside copies it is shown as a possible drift


def test_composed_nodes_hold_every_default_so_every_argument_can_be_overridden():
    cfg = compose(["data=kml_mixup", "profile=none", "model.teacher_temp=0.05", "callbacks.knn.task.ks=[5,10]"])
    assert cfg.model.teacher_temp == 0.05 and cfg.model.student_temp == 0.1  # filled from DINO's signature
    assert list(cfg.callbacks.knn.task.ks) == [5, 10]
    assert cfg.callbacks.knn.task.memory_size == 10000


@pytest.mark.parametrize("profile", sorted(p.stem for p in (CONFIG_DIR / "profile").glob("*.yaml")))
def test_every_profile_key_exists_in_some_group_choice(profile):
    """A profile sets keys of whichever groups are chosen; a key no choice has would be silently ignored."""
    raw = yaml.safe_load((CONFIG_DIR / "profile" / f"{profile}.yaml").read_text()) or {}
    raw.pop("defaults", None)  # included profiles (cpu_long includes cpu) are checked as themselves
    missing = []
    for group, tree in raw.items():
        choices = sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))
        composed = [compose([f"{group}={c}", "profile=none"])[group] for c in choices]
        for key in _leaf_keys(tree):
            if not any(_has(node, key) for node in composed):
                missing.append(f"{group}.{key}")
    assert not missing, f"profile/{profile}.yaml sets keys no {', '.join(raw)} choice has: {missing}"


def _leaf_keys(tree, prefix: str = "") -> list[str]:
    if isinstance(tree, dict) and tree:
        return [k for key, value in tree.items() for k in _leaf_keys(value, f"{prefix}{key}.")]
    return [prefix.rstrip(".")]


def _has(node, dotted: str) -> bool:
    for part in dotted.split("."):
        if not hasattr(node, "keys") or part not in node:
            return False
        node = node[part]
    return True
