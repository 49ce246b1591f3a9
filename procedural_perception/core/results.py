"""Evaluation results files: one JSON object per line, appended atomically (rewrite + rename).

Files written here are never torn (every append replaces the whole file atomically), but a results
file copied while being written, or appended to by another tool, can end in half a line. Reading
skips a line that is not valid JSON and says so; appending drops it (with a warning) instead of
writing new rows after it, so the file is valid JSON lines again.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from procedural_perception.core.atomic import _json_default, atomic_write_text


def _valid_lines(path: Path) -> tuple[list[str], list[int]]:
    """The lines of ``path`` that parse as JSON, and the (1-based) numbers of those that do not."""
    good, bad = [], []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            json.loads(line)
        except json.JSONDecodeError:
            bad.append(number)
            continue
        good.append(line)
    return good, bad


def append_results(path: str | os.PathLike, rows: list[dict[str, Any]]) -> Path:
    """Append ``rows`` to a JSON-lines file; a crash mid-write leaves the previous file intact."""
    path = Path(path)
    old: list[str] = []
    if path.exists():
        old, bad = _valid_lines(path)
        if bad:
            warnings.warn(f"{path}: dropped {len(bad)} line(s) that are not valid JSON (line {', '.join(map(str, bad))}; "
                          "a torn write) before appending", stacklevel=2)
    new = [json.dumps(r, default=_json_default) for r in rows]
    atomic_write_text(path, "".join(line + "\n" for line in old + new))
    return path


def read_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every row of a JSON-lines file; a line that is not valid JSON (a torn write) is skipped with a warning."""
    path = Path(path)
    if not path.exists():
        return []
    good, bad = _valid_lines(path)
    if bad:
        warnings.warn(f"{path}: skipped {len(bad)} line(s) that are not valid JSON (line {', '.join(map(str, bad))})",
                      stacklevel=2)
    return [json.loads(line) for line in good]
