"""Compose a run configuration from YAML groups and check every override against it.

``configs/<root>.yaml`` names one file per group in ``defaults`` (``data: kml_mixup``); each group
file is the subtree of that group. A ``profile`` file then overrides keys across groups (the
``cpu`` profile shrinks the model, the ``paper`` profile holds the paper's recipe), and command-line
``key=value`` overrides come last. An unknown key or a value of the wrong type is an error that
names the valid keys, so a typo never silently trains the wrong thing. ``+key=value`` adds a new key.

Defaults live in the code: a node with ``_target_`` names only what differs from its constructor's
defaults, and :func:`compose` fills in every other argument from the signature (so every key can be
overridden, typos name the valid keys, and the run's ``config.yaml`` shows every value). A test keeps
the YAML files honest: every key is an argument of its ``_target_`` and no value repeats a default.

Two small composition rules keep configs free of copies: a group file may list other files of its
own group under ``defaults`` (merged first, so ``callbacks/default.yaml`` is ``basic`` + ``knn`` +
``evals``), and a group file may name the choices that fit it for other groups under ``_choices``
(``model/slot_vae.yaml`` picks ``callbacks: compositional``); a choice typed on the command line wins.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
AUTO = "auto"


class ConfigError(ValueError):
    """A configuration or override that cannot be applied; the message says how to fix it."""


def compose(overrides: Sequence[str] = (), root: str = "train", config_dir: Path = CONFIG_DIR) -> DictConfig:
    """Return the configuration for ``root`` with group choices, profile and overrides applied."""
    base = OmegaConf.load(config_dir / f"{root}.yaml")
    choices = dict(base.pop("defaults", {}))
    explicit: set[str] = set()
    values: list[tuple[str, str]] = []
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep:
            raise ConfigError(f"Override {override!r} is not of the form key=value.")
        if key in choices:
            choices[key] = value
            explicit.add(key)
        else:
            values.append((key, value))
    nodes = {g: _load_group(config_dir, g, c) for g, c in choices.items() if g != "profile"}
    for group in list(nodes):
        for other, choice in nodes[group].pop("_choices", {}).items():
            if other not in choices:
                raise ConfigError(f"{group}/{choices[group]}.yaml chooses unknown group {other!r}.")
            if other not in explicit and choices[other] != choice:
                choices[other] = choice
                if other != "profile":
                    nodes[other] = _load_group(config_dir, other, choice)
    if choices.get("profile") == AUTO:
        choices["profile"] = auto_profile()

    cfg = OmegaConf.create({g: fill_defaults(node) for g, node in nodes.items()})
    cfg = OmegaConf.merge(cfg, base)
    profile_keys: set[str] = set()
    if "profile" in choices:
        profile_keys = _apply_profile(cfg, _load_group(config_dir, "profile", choices["profile"]))
    cfg.choices = choices  # before the overrides: run_name interpolates the choices
    for key, value in values:
        set_checked(cfg, key, parse_value(value))
    _reset_unused_profile_values(cfg, profile_keys - {key for key, _ in values})
    OmegaConf.set_struct(cfg, True)
    return cfg


def auto_profile() -> str:
    """``paper`` where a GPU is present, ``cpu`` otherwise."""
    import torch

    return "paper" if torch.cuda.is_available() else "cpu"


def _load_group(config_dir: Path, group: str, choice: str) -> DictConfig:
    path = config_dir / group / f"{choice}.yaml"
    if not path.exists():
        options = sorted(p.stem for p in (config_dir / group).glob("*.yaml"))
        hint = _did_you_mean(choice, options)
        raise ConfigError(f"Unknown {group} {choice!r}.{hint} Options: {', '.join(options)}.")
    node = OmegaConf.load(path)
    includes = node.pop("defaults", [])
    return OmegaConf.merge(*(_load_group(config_dir, group, c) for c in includes), node) if includes else node


def _apply_profile(cfg: DictConfig, profile: DictConfig) -> set[str]:
    """Set each profile leaf that the chosen groups define (profiles span several models); return the
    dotted keys it set."""
    applied = set()
    for key, value in _leaves(profile):
        if OmegaConf.select(cfg, key, default=_MISSING) is not _MISSING:
            set_checked(cfg, key, value)
            applied.add(key)
    return applied


def _reset_unused_profile_values(cfg: DictConfig, profile_keys: set[str]) -> None:
    """Give back its constructor default to each value the profile set (not the command line) that the
    group's ``_target_`` says it does not use with the other values: a target may define
    ``unused_arguments(arguments) -> names`` (DINO: the ViT-only shape keys when ``arch`` is a convnet,
    so ``profile=cpu model.arch=resnet18`` drops the profile's ViT depth instead of refusing it)."""
    for group in cfg:
        node = cfg[group]
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        factory = target_factory(node._target_)
        unused = getattr(factory, "unused_arguments", None)
        if unused is None:
            continue
        defaults = signature_defaults(factory)
        for name in unused(OmegaConf.to_container(node, resolve=True)):
            if f"{group}.{name}" in profile_keys and name in defaults:
                node[name] = defaults[name]


_MISSING = object()


def _leaves(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, DictConfig) and len(node) > 0:
        out = []
        for key in node:
            out += _leaves(node[key], f"{prefix}{key}.")
        return out
    return [(prefix.rstrip("."), OmegaConf.to_object(node) if isinstance(node, (DictConfig, ListConfig)) else node)]


def parse_value(text: str) -> Any:
    """YAML scalar parsing, plus the float forms YAML 1.1 misses (``1e-3``)."""
    value = yaml.safe_load(text) if text != "" else ""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def set_checked(cfg: DictConfig, key: str, value: Any) -> None:
    """Set ``key`` (dotted) to ``value``; unknown keys and wrong types raise :class:`ConfigError`."""
    add = key.startswith("+")
    key = key.lstrip("+")
    old = OmegaConf.select(cfg, key, default=_MISSING)
    if old is _MISSING and not add:
        raise ConfigError(_unknown_key_message(cfg, key))
    if old is not _MISSING and not add:
        value = _coerce(key, old, value)
    OmegaConf.update(cfg, key, value, force_add=add, merge=False)


def _coerce(key: str, old: Any, value: Any) -> Any:
    if old is None or value is None:
        return value
    if isinstance(old, bool) or isinstance(value, bool):
        if isinstance(old, bool) and isinstance(value, bool):
            return value
    elif isinstance(old, float) and isinstance(value, (int, float)):
        return float(value)
    elif isinstance(old, int) and isinstance(value, int):
        return value
    elif isinstance(old, int) and isinstance(value, float) and value.is_integer():
        return int(value)
    elif isinstance(old, str):
        return str(value)
    elif isinstance(old, (ListConfig, list)) and isinstance(value, list):
        return value
    elif isinstance(old, (DictConfig, dict)) and isinstance(value, dict):
        return value
    raise ConfigError(
        f"{key} expects a {_type_name(old)} (currently {old!r}), got {value!r} ({_type_name(value)})."
    )


def _type_name(value: Any) -> str:
    if isinstance(value, (ListConfig, list)):
        return "list"
    if isinstance(value, (DictConfig, dict)):
        return "mapping"
    return type(value).__name__


def _unknown_key_message(cfg: DictConfig, key: str) -> str:
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    while not isinstance(node, DictConfig) and parent:
        parent, _, leaf = parent.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
    valid = sorted(str(k) for k in node.keys()) if isinstance(node, DictConfig) else []
    where = f"under '{parent}'" if parent else "at the top level"
    hint = _did_you_mean(leaf, valid)
    return (
        f"Unknown config key '{key}'.{hint} Valid keys {where}: {', '.join(valid)}. "
        "Prefix with '+' to add a new key."
    )


def _did_you_mean(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def target_factory(target: str) -> Any:
    """The class or function a ``_target_`` string (``package.module.Name``) names."""
    import importlib

    module_name, _, attr = str(target).rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise ConfigError(f"_target_ {target!r} cannot be imported: {err}") from err


# Constructor defaults that fit in a config file (anything else stays a code-only default).
_PLAIN = (bool, int, float, str, type(None))


def signature_defaults(factory: Any) -> dict[str, Any]:
    """The keyword defaults of ``factory`` that a config can hold (scalars, None, lists of scalars)."""
    import inspect

    out = {}
    for name, param in inspect.signature(factory).parameters.items():
        default = param.default
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or default is inspect.Parameter.empty:
            continue
        if isinstance(default, (list, tuple)) and all(isinstance(v, _PLAIN) for v in default):
            out[name] = list(default)
        elif isinstance(default, int) and not isinstance(default, bool) and "float" in str(param.annotation):
            out[name] = float(default)  # `x: float = 1`: the config holds a float, so 0.5 is a valid override
        elif isinstance(default, _PLAIN):
            out[name] = default
    return out


def fill_defaults(node: Any) -> Any:
    """``node`` with every node that has a ``_target_`` completed by its constructor's defaults
    (recursively; keys already given win)."""
    if isinstance(node, DictConfig):
        filled = {k: fill_defaults(v) for k, v in node.items_ex(resolve=False)}
        if "_target_" in filled:
            filled = {**signature_defaults(target_factory(filled["_target_"])), **filled}
        return OmegaConf.create(filled)
    if isinstance(node, ListConfig):
        return OmegaConf.create([fill_defaults(v) for v in node._iter_ex(resolve=False)])
    return node


def instantiate(node: DictConfig | dict, **kwargs: Any) -> Any:
    """Build the object a config node describes: ``_target_`` is ``package.module.Name``, the
    other keys (plus ``kwargs``) are its arguments; a value that is itself a node with ``_target_``
    is built first. Keys starting with ``_`` are not passed."""
    params = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    target = params.pop("_target_", None)
    if not target:
        raise ConfigError(f"Config node has no _target_ naming what to build: {params}")
    factory = target_factory(target)
    params = {k: _built(v) for k, v in params.items() if not k.startswith("_")}
    params.update(kwargs)
    return factory(**params)


def _built(value: Any) -> Any:
    if isinstance(value, dict) and "_target_" in value:
        return instantiate(value)
    if isinstance(value, list):
        return [_built(v) for v in value]
    return value


def check_minimums(prefix: str, **values: tuple[Any, int | float]) -> None:
    """Raise :class:`ConfigError` naming ``<prefix>.<name>`` for each ``name=(value, minimum)`` below its minimum
    (``None`` values are allowed: they mean "the default")."""
    for name, (value, minimum) in values.items():
        if value is not None and value < minimum:
            raise ConfigError(f"{prefix}.{name} must be at least {minimum}, got {value}.")
