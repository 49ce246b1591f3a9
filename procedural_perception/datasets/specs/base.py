"""What a labelled data-set spec is: a prefix (or a test on the whole spec), a usage line and a loader.

A data set is added with one file in this folder that defines ``SPEC = LabelledSpec(...)`` and one
entry in ``SPECS`` of ``specs/__init__.py``; ``load_labelled`` dispatches on the prefix before the
first ``:`` (``flowers102:/data/flowers:train``), then asks the forms without a prefix (a
``.npz`` file, a folder) whether they recognise the spec.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from procedural_perception.datasets.labelled_images import LabelledImages

# loader(argument, transform, strict, report) -> LabelledImages. ``argument`` is the text after
# "<prefix>:" for prefixed forms and the whole spec for recognised ones.
Loader = Callable[[str, Callable | None, bool, Path | None], LabelledImages]


@dataclass(frozen=True)
class LabelledSpec:
    """One registered form: ``prefix`` (None for forms found by ``recognises``), the ``usage`` line
    shown in help and errors, and the ``load`` function."""

    prefix: str | None
    usage: str
    load: Loader
    recognises: Callable[[str], bool] | None = None


def parts(argument: str, usage: str, required: int, optional: int = 0) -> list[str]:
    """Split ``root:split[:option]`` into ``required`` + up to ``optional`` fields (missing optional
    fields are ""); a wrong count is an error that shows ``usage``."""
    fields = argument.split(":") if argument else []
    if not required <= len(fields) <= required + optional or any(not f for f in fields[:required]):
        raise ValueError(f"{usage.split(':')[0]}: expected {usage}, got {argument!r} after the prefix.")
    return fields + [""] * (required + optional - len(fields))


def choose(value: str, allowed: tuple[str, ...], what: str, usage: str, aliases: dict[str, str] | None = None) -> str:
    """``value`` (or its alias) if it is one of ``allowed``; otherwise an error listing them."""
    value = (aliases or {}).get(value, value)
    if value not in allowed:
        raise ValueError(f"{what} {value!r} is not one of {', '.join(allowed)} ({usage}).")
    return value


def existing_folder(root: str, names: tuple[str, ...], what: str, layout: str) -> Path:
    """``root/<name>`` for the first of ``names`` that is a folder, else ``root`` itself when it
    holds the layout (checked by the caller); a missing ``root`` is an error describing ``layout``."""
    base = Path(root).expanduser()
    if not base.is_dir():
        raise FileNotFoundError(f"{what}: {base} is not a folder; expected {layout}.")
    for name in names:
        if (base / name).is_dir():
            return base / name
    return base
