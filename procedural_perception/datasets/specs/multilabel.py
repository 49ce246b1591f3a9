"""How a multi-label data set (ChestMNIST's 14 findings, CelebA's 40 attributes) enters a memory that
holds one class per sample.

A kNN vote needs one label per memory sample, so a multi-label set never loads silently as
something else. Without a choice it is refused with a message naming the two explicit modes:

* ``label=<name or index>`` (per-label): one binary task, classes ``["no <name>", "<name>"]``;
  every sample is kept. Run it once per label of interest (the multi-label benchmarks score each
  label on its own too).
* ``exclusive``: only samples with exactly one positive label, classed by it; samples with none or
  several are left out and listed in ``skipped`` with the count of their positive labels.
"""

from __future__ import annotations

import numpy as np

BINARY_HELP = "one binary task: has that label or not, every image kept"
EXCLUSIVE_HELP = "only the images with exactly one positive label, classed by it"


def refuse(what: str, names: list[str], choices: str) -> ValueError:
    """The error for a multi-label set loaded without a mode; ``choices`` names the specs to use."""
    shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
    return ValueError(f"{what} is multi-label ({len(names)} labels per image: {shown}); a kNN memory holds one "
                      f"class per image. Choose {choices}.")


def label_index(choice: str, names: list[str], what: str) -> int:
    """The column ``choice`` names (a label name, case-insensitive, or an index)."""
    lowered = [n.lower() for n in names]
    if choice.lower() in lowered:
        return lowered.index(choice.lower())
    if choice.isdigit() and int(choice) < len(names):
        return int(choice)
    raise ValueError(f"{what} has no label {choice!r}; its labels are: {', '.join(names)} (or an index 0..{len(names) - 1}).")


def binary(multi_hot: np.ndarray, names: list[str], choice: str, what: str) -> tuple[np.ndarray, list[str]]:
    """``label=<choice>`` mode: targets ``[N]`` (1 = the label is present) and the two class names."""
    column = label_index(choice, names, what)
    return (multi_hot[:, column] > 0).astype(np.int64), [f"no {names[column]}", names[column]]


def exclusive(multi_hot: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``exclusive`` mode: ``(kept row indices, their targets, positive count of every row)``."""
    positives = (multi_hot > 0).sum(axis=1)
    kept = np.flatnonzero(positives == 1)
    return kept, (multi_hot[kept] > 0).argmax(axis=1).astype(np.int64), positives
