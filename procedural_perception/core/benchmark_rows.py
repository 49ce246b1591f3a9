"""The shared benchmark row format, written to ``benchmarks/results/<name>.json`` and printed as a table.

A row is ``{"name", "value", "unit", "baseline", "baseline_value", "ratio"}``. ``ratio`` says how
many times better than the baseline measured in the same run the value is (so > 1 is a win whether
the unit is images/s or seconds), ``None`` where a row has no baseline.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from procedural_perception.core.atomic import atomic_write_json

# The repository's benchmarks/results folder (benchmarks/ holds the scripts; it is not an installed package).
RESULTS_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def quick() -> bool:
    """``QUICK=1`` asks for a reduced run that finishes in under 60 seconds on 2 cores."""
    return os.environ.get("QUICK", "0") not in ("", "0", "false", "False")


def row(
    name: str,
    value: float,
    unit: str,
    baseline: str | None = None,
    baseline_value: float | None = None,
    higher_is_better: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """One result row; ``ratio`` = value/baseline (or baseline/value when lower is better)."""
    ratio = None
    if baseline_value is not None and value is not None and baseline_value != 0 and value != 0:
        ratio = value / baseline_value if higher_is_better else baseline_value / value
    return {
        "name": name,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "baseline_value": baseline_value,
        "ratio": ratio,
        **extra,
    }


def write_rows(name: str, rows: list[dict[str, Any]], results_dir: Path = RESULTS_DIR) -> Path:
    """Write rows atomically to ``<results_dir>/<name>.json`` and print them as a table."""
    path = Path(results_dir) / f"{name}.json"
    atomic_write_json(path, rows)
    print_rows(name, rows)
    return path


def print_rows(title: str, rows: list[dict[str, Any]]) -> None:
    table = Table(title=title)
    for column in ("name", "value", "unit", "baseline", "baseline_value", "ratio"):
        table.add_column(column, justify="left" if column in ("name", "unit", "baseline") else "right")
    for r in rows:
        table.add_row(
            r["name"], _fmt(r["value"]), r["unit"], r["baseline"] or "-", _fmt(r["baseline_value"]), _fmt(r["ratio"], "x")
        )
    Console(width=160).print(table)


def _fmt(value: Any, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}{suffix}"
    return f"{value}{suffix}"
