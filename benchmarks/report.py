"""`make bench`'s last step: one report of every benchmark's rows, their baselines and ratios.

Reads ``benchmarks/results/*.json`` (the shared row format) and writes
``benchmarks/results/REPORT.md`` plus ``benchmarks/results/ratios.png``, a bar chart of every row
that has a baseline (ratio > 1 means better than the baseline measured in the same run).
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from procedural_perception.core.atomic import atomic_path, atomic_write_text  # noqa: E402
from procedural_perception.core.benchmark_rows import RESULTS_DIR, _fmt  # noqa: E402


def load_results(results_dir: Path = RESULTS_DIR) -> dict[str, list[dict]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(results_dir.glob("*.json"))}


def markdown(results: dict[str, list[dict]]) -> str:
    lines = ["# Benchmark report", "", f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
             f"Python {platform.python_version()}. Ratio = times better than the baseline of the same run.", ""]
    for name, rows in results.items():
        lines += [f"## {name}", "", "| name | value | unit | baseline | baseline value | ratio |",
                  "|---|---:|---|---|---:|---:|"]
        for r in rows:
            lines.append(f"| {r['name']} | {_fmt(r['value'])} | {r['unit']} | {r.get('baseline') or '-'} | "
                         f"{_fmt(r.get('baseline_value'))} | {_fmt(r.get('ratio'), 'x')} |")
        lines.append("")
    return "\n".join(lines)


def ratio_plot(results: dict[str, list[dict]], path: Path) -> None:
    rated = [(f"{name}: {r['name']}", r["ratio"]) for name, rs in results.items() for r in rs if r.get("ratio")]
    rows = [(label, ratio) for label, ratio in rated if ratio > 0]  # a log axis cannot show ratios <= 0
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(rows) + 1.2))
    labels, ratios = zip(*rows, strict=True)
    ax.barh(labels, ratios, color=["tab:green" if r >= 1 else "tab:red" for r in ratios])
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    left_out = len(rated) - len(rows)
    ax.set_xlabel("ratio against the baseline (log scale, > 1 is better)"
                  + (f"; {left_out} rows with ratio <= 0 in REPORT.md only" if left_out else ""))
    ax.invert_yaxis()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def main() -> None:
    results = load_results()
    atomic_write_text(RESULTS_DIR / "REPORT.md", markdown(results))
    ratio_plot(results, RESULTS_DIR / "ratios.png")
    print(f"wrote {RESULTS_DIR / 'REPORT.md'} and {RESULTS_DIR / 'ratios.png'} ({len(results)} benchmarks)")


if __name__ == "__main__":
    main()
