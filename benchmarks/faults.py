"""``make bench-faults``: every fault scenario with its trials, what survived, what was lost and the time to recover.

Runs the parts in turn, each writing its own ``benchmarks/results/faults_<part>.json``: hostile files
(``faults_files``), training faults (``faults_training``), hostile programs (``faults_programs``) and, when
the module exists, the visual-memory faults (``faults_memory``, skipped with a line when absent). All rows
go to ``benchmarks/results/faults.json`` and one table: scenario, trials, survived, lost, recover time and
the message a user sees. ``QUICK=1``: fewer trials, no training processes (under a minute).
``--parts faults_files ...`` runs only those parts (the others are read from their results files);
``--saved`` runs nothing and rebuilds the table from the results files.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
import traceback

from rich.console import Console
from rich.table import Table

from procedural_perception.core.atomic import atomic_write_json
from procedural_perception.core.benchmark_rows import RESULTS_DIR, quick

# (module under benchmarks/, how its scenarios are called). faults_memory takes the QUICK flag itself.
PARTS = [("faults_files", None), ("faults_training", None), ("faults_programs", None), ("faults_memory", "quick")]


def lost(row: dict) -> str:
    """The row's loss count with its unit (samples, steps, rows, batches...), '-' when it has none."""
    for key, value in row.items():
        if key.endswith("lost") and value is not None:
            return f"{value} {key.removesuffix('_lost').replace('_', ' ') or 'lost'}".strip()
    return "-"


def run_part(module_name: str, argument: str | None) -> tuple[list[dict], str]:
    """(rows, note) of one part; an absent module is skipped with a note, not an error."""
    try:
        module = importlib.import_module(f"benchmarks.{module_name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"benchmarks.{module_name}":
            raise
        return [], f"{module_name}: skipped (benchmarks/{module_name}.py is not in this checkout)"
    start = time.perf_counter()
    try:
        rows = module.scenarios(quick()) if argument == "quick" else module.scenarios()
    except Exception as exc:  # one broken part must not hide the others' results
        traceback.print_exc()
        return [], f"{module_name}: FAILED after {time.perf_counter() - start:.0f} s: {type(exc).__name__}: {exc}"
    atomic_write_json(RESULTS_DIR / f"{module_name}.json", rows)
    for r in rows:
        r.setdefault("part", module_name)
    return rows, f"{module_name}: {len(rows)} scenarios in {time.perf_counter() - start:.0f} s"


def print_summary(rows: list[dict]) -> None:
    table = Table(title="bench-faults: what survived", show_lines=True)
    for column in ("scenario", "trials", "survived", "lost", "recover s", "user message"):
        table.add_column(column, justify="right" if column in ("trials", "survived", "recover s") else "left",
                         overflow="fold")
    for r in rows:
        table.add_row(r["name"], str(r.get("trials", "-")), str(r.get("survived", "-")), lost(r),
                      f"{r['recover_s']:.3g}" if r.get("recover_s") is not None else "-",
                      str(r.get("user_message") or r.get("detail") or "-")[:220])
    Console(width=200).print(table)


TABLE_START, TABLE_END = "<!-- bench-faults table: start -->", "<!-- bench-faults table: end -->"


def markdown_table(rows: list[dict]) -> str:
    """The scenario table of docs/faults.md: trials, survived, lost and recover time per row."""
    lines = ["| scenario | trials | survived | lost | recover (s) |", "|---|---:|---:|---|---:|"]
    for r in rows:
        recover = f"{r['recover_s']:.3g}" if r.get("recover_s") is not None else "-"
        lines.append(f"| {r['name']} | {r.get('trials', '-')} | {r.get('survived', '-')} | {lost(r)} | {recover} |")
    return "\n".join(lines)


def write_docs_table(rows: list[dict], page) -> bool:
    """Replace the table between the markers of ``page`` (docs/faults.md) with ``rows``; False without markers."""
    from procedural_perception.core.atomic import atomic_write_text

    text = page.read_text()
    start, end = text.find(TABLE_START), text.find(TABLE_END)
    if start < 0 or end < start:
        return False
    atomic_write_text(page, text[:start + len(TABLE_START)] + "\n" + markdown_table(rows) + "\n" + text[end:])
    return True


def saved_part(module_name: str) -> tuple[list[dict], str]:
    """(rows, note) of one part as its last run wrote them, without running it."""
    path = RESULTS_DIR / f"{module_name}.json"
    if not path.exists():
        return [], f"{module_name}: no results file ({path})"
    rows = json.loads(path.read_text())
    for r in rows:
        r.setdefault("part", module_name)
    return rows, f"{module_name}: {len(rows)} scenarios from {path.name}"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saved", action="store_true",
                        help="no runs: rebuild faults.json and the table from the parts' last results files")
    parser.add_argument("--parts", nargs="+", choices=[p for p, _ in PARTS], default=[p for p, _ in PARTS],
                        help="run only these parts (the others are read from their last results files)")
    args = parser.parse_args(argv)
    rows, notes = [], []
    for module_name, argument in PARTS:
        run = module_name in args.parts and not args.saved
        part_rows, note = run_part(module_name, argument) if run else saved_part(module_name)
        rows += part_rows
        notes.append(note)
    atomic_write_json(RESULTS_DIR / "faults.json", rows)
    page = RESULTS_DIR.parents[1] / "docs" / "faults.md"
    if page.exists() and not write_docs_table(rows, page):
        print(f"{page}: no table markers ({TABLE_START}); its table was not updated")
    print_summary(rows)
    for note in notes:
        print(note)
    failed = [r["name"] for r in rows if r.get("trials") is not None and r.get("survived") != r.get("trials")]
    print(f"{len(rows) - len(failed)} of {len(rows)} scenarios survived every trial"
          + (f"; not: {'; '.join(failed)}" if failed else ""))
    return rows


if __name__ == "__main__":
    main()
