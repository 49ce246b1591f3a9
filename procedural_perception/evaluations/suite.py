"""An evaluation suite: a set of tasks run over encoder rows, with one table of headline numbers.

Used by ``make eval`` (``procedural_perception/cli/eval.py``) and the experiment
(``benchmarks/experiment.py``), so both build tasks, encoders and their random-initialisation twins
the same way, and compute every number with the task the training callbacks run.

Rows are encoders: the given specs (DINO checkpoints or reference names) followed by the reference
rows. Given a DINO checkpoint, the ``random_vit`` row is a fresh random initialisation of that
checkpoint's own architecture (the paper's "random init" row for that model). Each encoder is
evaluated at its own input size unless a size is given.

A task's settings come, in order of precedence, from a flag that is set, from the training run's
own callback settings (``<run>/config.yaml`` beside the first checkpoint), then from the task's
constructor defaults.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from lightning_modules.encoders import REFERENCE_ENCODERS, Encoder, build_encoder, random_twin
from procedural_perception.core.run_config import read_run_config, run_dir_of
from procedural_perception.evaluations.figures import save_figure
from procedural_perception.evaluations.registry import TASKS, target_of, task_class
from procedural_perception.evaluations.task import EvaluationTask, optional_int

# Evaluations of `make eval --evals all`, in table order.
ALL = tuple(TASKS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The suite's flags: data shared by several tasks, then each task's own flags."""
    shared = parser.add_argument_group("data shared by several evaluations (default: the training run's own, "
                                       "else each evaluation's default)")
    shared.add_argument("--memory", default=None, help="labelled source of the kNN memory and the probe's training "
                        "set (default fashion_mnist:train)")
    shared.add_argument("--query", default=None, help="labelled source of the kNN queries and the probe's test set "
                        "(default fashion_mnist:test)")
    shared.add_argument("--limit-memory", type=optional_int, default=None,
                        help="seeded random N memory / probe-training images ('none' = all; default kNN 10000, probe 400)")
    shared.add_argument("--limit-query", type=optional_int, default=None,
                        help="seeded random N query / probe-test images ('none' = all; default kNN 2000, probe 200)")
    shared.add_argument("--image-size", type=int, default=None,
                        help="encoder input side (default: each encoder's own, the size a checkpoint was trained at; "
                        "224 for reference rows; PCA R^2 uses the paper's 448)")
    shared.add_argument("--seg-limit", type=optional_int, default=None, help="in-context / kNN-seg images ('none' = all)")
    shared.add_argument("--batch-size", type=int, default=None, help="images per forward pass")
    for name in ALL:
        task_class(name).add_arguments(parser.add_argument_group(f"{name}"))


def run_settings(checkpoint: str | None) -> dict[str, dict[str, Any]]:
    """``{evaluation name: task arguments}`` of the training run a checkpoint belongs to (its
    ``config.yaml``: the callbacks' tasks), empty when there is none."""
    if checkpoint is None:
        return {}
    cfg = read_run_config(run_dir_of(checkpoint))
    if cfg is None or "callbacks" not in cfg:
        return {}
    targets = {target_of(name): name for name in ALL}
    out: dict[str, dict[str, Any]] = {}
    for node in OmegaConf.to_container(cfg.callbacks).values():
        task = node.get("task") if isinstance(node, dict) else None
        if isinstance(task, dict) and task.get("_target_") in targets:
            out[targets[task["_target_"]]] = {k: v for k, v in task.items() if not k.startswith("_")}
    return out


def build_tasks(names: Sequence[str], args: argparse.Namespace | None = None,
                base: dict[str, dict[str, Any]] | None = None, progress: bool = True) -> dict[str, EvaluationTask]:
    """One task per name; ``args`` (parsed flags) win over ``base`` (a run's settings) over defaults."""
    args = args or argparse.Namespace()
    tasks = {}
    for name in names:
        task = task_class(name).from_args(args, (base or {}).get(name))
        task.progress = progress
        tasks[name] = task
    return tasks


def encoder_rows(specs: Sequence[str], references: str | Sequence[str]) -> list[str]:
    """The encoder specs followed by the reference rows not already given."""
    rows = list(dict.fromkeys(specs))
    if isinstance(references, str):
        references = [] if references.lower() in ("none", "") else references.split(",")
    return rows + [r for r in references if r not in rows]


def make_encoder(spec: str, checkpoints: Sequence[str]) -> Encoder:
    """``spec``'s encoder; ``random_vit`` beside a checkpoint is that checkpoint's random twin."""
    if spec == "random_vit" and checkpoints:
        return random_twin(checkpoints[0])
    return build_encoder(spec)


@dataclass
class EvaluationSuite:
    """``tasks`` run in order over encoders; ``figures_dir`` (optional) receives each task's pictures
    as ``<figures_dir>/<encoder label>/<task>_<figure>.png``."""

    tasks: dict[str, EvaluationTask]
    figures_dir: Path | None = None
    errors: dict[str, str] = field(default_factory=dict)

    def evaluate(self, encoder: Encoder, label: str, console: Console | None = None) -> dict[str, Any]:
        """Every task's metrics for one encoder; a task that fails records ``<task>/error`` and the
        others still run. Tasks registered as ``<evaluation>@<data set>`` (the paper suite runs one
        kNN task per data set) get their metrics prefixed with ``<data set>/``."""
        row: dict[str, Any] = {}
        start = time.perf_counter()
        for name, task in self.tasks.items():
            try:
                with torch.no_grad():
                    row.update({f"{_dataset(name)}{k}": v for k, v in task.evaluate(encoder).items()})
            except (ImportError, OSError, ValueError, RuntimeError, KeyError) as err:
                if console is not None:
                    console.print(f"[red]{name} failed for {label}: {err}")
                row[f"{name}/error"] = str(err)
                continue
            if self.figures_dir is not None:
                for figure, image in task.figures().items():
                    save_figure(image, self.figures_dir / _safe(label) / f"{name}_{figure}.png")
        row["seconds"] = round(time.perf_counter() - start, 1)
        return row

    def run(self, specs: Sequence[str], device: torch.device, console: Console) -> dict[str, dict[str, Any]]:
        """``{spec: metrics}`` for every encoder row (``spec`` as given; see :func:`make_encoder`)."""
        checkpoints = [s for s in specs if s.endswith(".ckpt")]
        results: dict[str, dict[str, Any]] = {}
        for spec in specs:
            console.rule(f"[bold]{spec}")
            try:
                encoder = make_encoder(spec, checkpoints).to(device)
            except (ImportError, OSError, ValueError, KeyError) as err:
                console.print(f"[red]cannot build encoder {spec}: {err}")
                results[spec] = {"error": str(err)}
                continue
            results[spec] = self.evaluate(encoder, spec, console)
        return results

    def headline_columns(self) -> list[tuple[str, str]]:
        return [(f"{_dataset(name).rstrip('/')} {title}".strip(), f"{_dataset(name)}{key}")
                for name, task in self.tasks.items() for title, key in task.headlines()]


def _dataset(name: str) -> str:
    """``"flowers102/"`` for a task named ``knn@flowers102``, ``""`` for a plain one."""
    return f"{name.partition('@')[2]}/" if "@" in name else ""


def paper_suite(root: str | Path, args: argparse.Namespace | None = None,
                progress: bool = True) -> tuple[dict[str, EvaluationTask], list[str]]:
    """The paper's evaluations on whichever of its data sets lie under ``root``, and one line per absent one.

    Tables 1 and 3: kNN classification with the whole training split as memory and the whole test
    split as queries (``procedural_perception.datasets.paper``); Table 2: PCA R^2 on COCO val2017
    (``<root>/coco``); Fig. 5: 2AFC on NIGHTS val (``<root>/nights``), each when present.
    """
    from procedural_perception.datasets.paper import TABLES, survey

    root = Path(root)
    found, absent = survey(root)
    tasks: dict[str, EvaluationTask] = {}
    base = {"memory_size": None, "query_size": None}
    for name, memory, query in found:
        tasks[f"knn@{name}"] = task_class("knn").from_args(args or argparse.Namespace(),
                                                            {**base, "memory": memory, "query": query})
    lines = [f"{name} ({TABLES.get(name, '')}): {reason}" for name, reason in absent]
    coco = root / "coco"
    if (coco / "annotations" / "instances_val2017.json").is_file():
        tasks["pca_r2@coco"] = task_class("pca_r2")(data=f"coco:{coco}", limit=None)
    else:
        lines.append(f"coco (Table 2): no {coco}/annotations/instances_val2017.json")
    nights = root / "nights"
    if (nights / "data.csv").is_file():
        tasks["twoafc@nights"] = task_class("twoafc")(data=f"nights:{nights}:val", limit=None)
    else:
        lines.append(f"nights (Fig. 5): no {nights}/data.csv")
    for task in tasks.values():
        task.progress = progress
    return tasks, lines


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in Path(label).stem if label) or "encoder"


def cell(row: dict, key: str) -> str:
    """A table cell: percentages with 2 decimals, fractions as percent, '-' when missing."""
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if key == "seconds":
        return f"{value:.0f}"
    if key.endswith("fraction"):
        return f"{100 * value:.2f}"
    if key.endswith("top1"):
        return f"{value:.2f}"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def render(results: dict[str, dict], columns: Sequence[tuple[str, str]]) -> tuple[Table, str]:
    """A Rich table and the same table as Markdown (rows: encoders; columns: headlines, seconds)."""
    table = Table(title="Evaluation (rows: encoders)")
    table.add_column("encoder", style="bold")
    for title, _ in columns:
        table.add_column(title, justify="right")
    table.add_column("s", justify="right")
    lines = ["| encoder | " + " | ".join(t for t, _ in columns) + " | s |",
             "|---|" + "---:|" * (len(columns) + 1)]
    for spec, row in results.items():
        cells = [cell(row, key) for _, key in columns] + [cell(row, "seconds")]
        table.add_row(spec, *cells)
        lines.append(f"| {spec} | " + " | ".join(cells) + " |")
    return table, "\n".join(lines) + "\n"


__all__ = ["ALL", "REFERENCE_ENCODERS", "EvaluationSuite", "add_arguments", "build_tasks", "encoder_rows",
           "make_encoder", "render", "run_settings"]
