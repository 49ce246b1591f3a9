"""An evaluation task: one object holding an evaluation's data and parameters, with
``evaluate(encoder) -> metrics``.

The same task object is what a training callback runs every N epochs (``callbacks/evaluation.py``),
what ``make eval`` runs over each encoder row (:mod:`.suite`) and what the experiment runs, so a
number logged during training is computed by the same function as the number ``make eval`` prints.

A task loads its data lazily on first use and keeps it (per input size), so evaluating many encoders
or many epochs loads the data once. ``image_size=None`` means "the encoder's own size"
(``Encoder.image_size``: the size a DINO checkpoint was trained at, 224 for the reference rows).

Adding an evaluation is one file with an :class:`EvaluationTask` subclass plus one line in
:mod:`.registry`; its command-line flags are declared by :meth:`EvaluationTask.add_arguments`.
"""

from __future__ import annotations

import argparse
import inspect
from typing import Any, ClassVar

import torch

from lightning_modules.encoders import Encoder


class EvaluationTask:
    """Base class. Subclasses set ``name`` and implement :meth:`evaluate`.

    ``progress``: Rich progress bars while embedding (off inside a fit, whose bar owns the console;
    the eval command turns it on).
    """

    name: ClassVar[str] = "evaluation"
    # (column title, metric key) of the headline numbers in the eval table; see :meth:`headlines`.
    HEADLINES: ClassVar[tuple[tuple[str, str], ...]] = ()
    # Flags of `make eval` (argparse dest) -> constructor argument, for flags shared by several tasks.
    SHARED_FLAGS: ClassVar[dict[str, str]] = {}

    progress: bool = False

    def evaluate(self, encoder: Encoder) -> dict[str, float]:
        """Metrics of ``encoder`` (flat ``{key: number}``); equal on every DDP rank."""
        raise NotImplementedError(f"{type(self).__name__} must implement evaluate(encoder)")

    def headlines(self) -> list[tuple[str, str]]:
        """The headline columns after the last evaluation (a task may adapt keys to its data, e.g. k)."""
        return list(self.HEADLINES)

    def figures(self) -> dict[str, torch.Tensor]:
        """Pictures of the last evaluation, ``{name: float [3, H, W] in [0, 1]}`` (none by default)."""
        return {}

    @staticmethod
    def size_for(encoder: Encoder, image_size: int | None) -> int:
        """``image_size``, or the encoder's own input size when it is None."""
        return int(image_size) if image_size is not None else int(getattr(encoder, "image_size", 224))

    # --- command line ------------------------------------------------------------------------------
    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Declare this task's own flags (default None = the task's default, shown in the help)."""

    @classmethod
    def own_flags(cls) -> dict[str, str]:
        """Flags declared by :meth:`add_arguments` (argparse dest) -> constructor argument."""
        return {}

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The constructor's default arguments (what an unset flag or config key means)."""
        return {name: p.default for name, p in inspect.signature(cls).parameters.items()
                if p.default is not inspect.Parameter.empty}

    @classmethod
    def from_args(cls, args: argparse.Namespace, base: dict[str, Any] | None = None) -> EvaluationTask:
        """The task for parsed flags: a flag that is set wins over ``base`` (e.g. the training run's own
        callback settings, so `make eval` with default flags repeats what training logged), which
        wins over the constructor's defaults."""
        params = dict(base or {})
        for dest, param in {**cls.SHARED_FLAGS, **cls.own_flags()}.items():
            value = getattr(args, dest, None)
            if value is not None:
                params[param] = value
        return cls(**params)


def default_help(cls: type[EvaluationTask], param: str, text: str) -> str:
    """``text`` plus the task's default for ``param``, for a flag's help."""
    value = cls.defaults().get(param)
    shown = "the encoder's own size" if param == "image_size" and value is None else (
        "all" if value is None else ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value)
    return f"{text} (default: {shown}, or the training run's own setting)"


def optional_int(text: str) -> int | None:
    """An argparse type: an integer, or ``none`` / ``all`` for no limit."""
    return None if text.lower() in ("none", "null", "all") else int(text)
