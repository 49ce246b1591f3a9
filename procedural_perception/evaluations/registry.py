"""Every evaluation task, by name. Adding an evaluation is its module plus one line here.

Names are what ``make eval EVALS=...`` and the experiment accept; the order is the order of the
columns in the eval table. Entries are ``module:Class`` strings, imported on first use, so listing
the names costs nothing.
"""

from __future__ import annotations

import importlib

from procedural_perception.evaluations.task import EvaluationTask

TASKS: dict[str, str] = {
    "knn": "procedural_perception.evaluations.knn:KNNClassification",
    "pca_r2": "procedural_perception.evaluations.pca_r2:PCAR2",
    "in_context": "procedural_perception.evaluations.in_context:InContextSegmentation",
    "knn_seg": "procedural_perception.evaluations.knn_segmentation:KnnSegmentation",
    "twoafc": "procedural_perception.evaluations.twoafc:TwoAFC",
    "linear_probe": "procedural_perception.evaluations.linear_probe:LinearProbe",
    "feature_maps": "procedural_perception.evaluations.feature_maps:FeatureMaps",
}


def task_class(name: str) -> type[EvaluationTask]:
    """The task class registered as ``name``."""
    if name not in TASKS:
        raise ValueError(f"Unknown evaluation {name!r}; choose from {', '.join(TASKS)}.")
    module, _, attr = TASKS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def target_of(name: str) -> str:
    """The ``_target_`` path of the task class (``package.module.Class``), as configs spell it."""
    return TASKS[name].replace(":", ".")
