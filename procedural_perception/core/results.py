"""Evaluation results files: one JSON object per line, appended atomically (rewrite + rename)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from procedural_perception.core.atomic import _json_default, atomic_write_text


def append_results(path: str | os.PathLike, rows: list[dict[str, Any]]) -> Path:
    """Append ``rows`` to a JSON-lines file; a crash mid-write leaves the previous file intact."""
    path = Path(path)
    old = path.read_text() if path.exists() else ""
    new = "".join(json.dumps(r, default=_json_default) + "\n" for r in rows)
    atomic_write_text(path, old + new)
    return path


def read_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
