"""Evaluate frozen encoders and print one table: ``make eval CKPT=... MEMORY=... QUERY=... EVALS=all``.

    python -m procedural_perception.cli.eval --encoder runs/x/checkpoints/last.ckpt \\
        [--memory fashion_mnist:train --query fashion_mnist:test] [--evals all] [--out runs/eval/results.json]

Rows are encoders: the ``--encoder`` specs (repeat the flag or separate with commas) followed by
the reference rows of ``--references`` (random initialisation, raw pixels, ImageNet EfficientNet-Lite0;
``--references none`` to skip). Given a DINO checkpoint, the ``random_vit`` row is a fresh random
initialisation of that checkpoint's own architecture. Columns are each evaluation's headline metric;
the JSON file holds every metric, the Markdown file beside it the table, and ``figures/`` beside it
each evaluation's pictures (the kNN neighbour grid, feature maps).

Every evaluation is the task the training callbacks run (same data, same code). With default flags
its settings are the training run's own (read from ``<run>/config.yaml`` beside the first checkpoint:
data, subset sizes, k values) and each encoder is embedded at its own input size, so a number printed
here equals the one logged during training for the same weights. Under ``torchrun`` every
evaluation is sharded over the processes and rank 0 prints and writes.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from rich.console import Console

from lightning_modules.encoders import REFERENCE_ENCODERS
from procedural_perception.core.atomic import atomic_write_json, atomic_write_text
from procedural_perception.core.distributed import rank_and_world
from procedural_perception.evaluations import suite


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m procedural_perception.cli.eval", description=__doc__.split("\n\n")[0],
                                epilog="Flags left unset take the training run's own settings, else each "
                                       "evaluation's default (shown).",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", action="append", default=[], help="checkpoint path or reference name; repeatable, "
                   "comma-separated allowed")
    p.add_argument("--references", default=",".join(REFERENCE_ENCODERS),
                   help="reference rows added after the encoders ('none' for none)")
    p.add_argument("--evals", default="all", help=f"comma-separated subset of {', '.join(suite.ALL)} or 'all'")
    p.add_argument("--suite", choices=("custom", "paper"), default="custom",
                   help="paper: the paper's Tables 1-3 on the data sets found under --root (ignores --evals)")
    p.add_argument("--root", default=None, help="the folder holding the paper's data sets (with --suite paper)")
    p.add_argument("--out", default="runs/eval/results.json", help="results JSON (a .md table is written beside it)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    suite.add_arguments(p)
    args = p.parse_args(argv)
    args.encoders = [s for group in args.encoder for s in group.split(",") if s]
    if not args.encoders:
        p.error("give at least one --encoder (a DINO .ckpt, random_vit, rgb or efficientnet_lite0)")
    if args.suite == "paper" and not args.root:
        p.error("--suite paper needs --root: the folder holding flowers-102/, CUB_200_2011/, food-101/, imagenet/, "
                "medmnist/, coco/, nights/ (whichever you have)")
    args.evals = list(suite.ALL) if args.evals == "all" else [e for e in args.evals.split(",") if e]
    unknown = sorted(set(args.evals) - set(suite.ALL))
    if unknown:
        p.error(f"unknown evaluation(s) {', '.join(unknown)}; choose from {', '.join(suite.ALL)} or all")
    return args


def build_suite(args: argparse.Namespace, progress: bool = True, console: Console | None = None) -> suite.EvaluationSuite:
    """The tasks of ``args.evals`` (flags that are set, then the first checkpoint's run settings, then
    defaults), or of the paper suite on the data sets under ``args.root``."""
    if args.suite == "paper":
        tasks, absent = suite.paper_suite(args.root, args, progress)
        for line in absent:
            if console is not None:
                console.print(f"[dim]skipped {line}[/dim]")
        if not tasks:
            raise SystemExit(f"None of the paper's data sets is under {args.root}; see the lines above.")
        return suite.EvaluationSuite(tasks, figures_dir=Path(args.out).parent / "figures")
    checkpoints = [s for s in args.encoders if s.endswith(".ckpt")]
    base = suite.run_settings(checkpoints[0] if checkpoints else None)
    tasks = suite.build_tasks(args.evals, args, base, progress)
    return suite.EvaluationSuite(tasks, figures_dir=Path(args.out).parent / "figures")


def _init_distributed() -> None:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


# Columns of the results table when the output is not a terminal (wide enough for a checkpoint path).
LOG_WIDTH = 200


def main(argv: Sequence[str] | None = None) -> dict[str, dict]:
    args = parse_args(argv)
    _init_distributed()
    rank, _ = rank_and_world()
    # Not a terminal (a batch job's log, a pipe): Rich would draw the table 80 columns wide and cut the
    # encoder names and headers short; a log has room, so give it LOG_WIDTH.
    console = Console(quiet=rank != 0, width=None if sys.stdout.isatty() else LOG_WIDTH)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    evaluation = build_suite(args, progress=rank == 0, console=console)
    if rank != 0:
        evaluation.figures_dir = None
    results = evaluation.run(suite.encoder_rows(args.encoders, args.references), device, console)
    table, markdown = suite.render(results, evaluation.headline_columns())
    console.print(table)
    twoafc = evaluation.tasks.get("twoafc")
    if twoafc is not None and str(twoafc.data).startswith("distortion_2afc"):
        console.print("[dim]2AFC on distortion_2afc orders synthetic distortions of real photos; it is not "
                      "a human-judgment (NIGHTS) score.")
    if rank == 0:
        out = Path(args.out)
        config = {"args": {k: v for k, v in vars(args).items() if k != "encoder"},
                  "tasks": {name: vars(task) for name, task in evaluation.tasks.items()}}
        atomic_write_json(out, {"config": _plain(config), "results": results})
        atomic_write_text(out.with_suffix(".md"), markdown)
        console.print(f"results: {out} and {out.with_suffix('.md')}")
    failed = any("error" in k for row in results.values() for k in row)
    if failed:
        raise SystemExit(1)
    return results


def _plain(value):
    """Settings as JSON: private attributes (cached data) dropped, tuples as lists."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


if __name__ == "__main__":
    main()
