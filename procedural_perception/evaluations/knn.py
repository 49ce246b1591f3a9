"""kNN classification of frozen embeddings with a labelled memory, plus the exact privacy audit.

One search for the top-K neighbours (K = the largest k needed, or the audit's k + 1) serves every
voting rule, every k and the audit. Under DDP each rank embeds a shard (``embed_dataset`` gathers
them), then every rank runs the same search on the same gathered features, so the numbers equal
one process's on every rank.

:class:`KNNClassification` is the task (``evaluate(encoder) -> metrics``) that the training callback,
``make eval`` and the experiment all run: one code path for every kNN number. k values larger than
the memory are dropped with one warning line (a memory smaller than every k uses k = its size), so
few-shot memories evaluate too; per-class accuracy is reported at the headline setting.
"""

from __future__ import annotations

import argparse
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF
from torchvision.utils import make_grid

from lightning_modules.encoders import Encoder
from procedural_perception.datasets.labelled import LabelledImages
from procedural_perception.evaluations.embedding import embed_dataset, labelled_subset, query_seed
from procedural_perception.evaluations.embedding_geometry import anisotropy_metrics
from procedural_perception.evaluations.feature_norm import DEFAULT_SAMPLES, MODES, with_feature_norm
from procedural_perception.evaluations.task import EvaluationTask, default_help
from procedural_perception.visual_memory.index import FlatIndex
from procedural_perception.visual_memory.privacy import AuditReport, exact_audit
from procedural_perception.visual_memory.voting import (
    DEFAULT_TEMPERATURE,
    PAPER_K,
    PAPER_RULE,
    RULES,
    accuracy_for_ks,
    predict,
)

# The paper's (DINO eval_knn) k values; reporting all of them avoids picking the best k on test data.
DEFAULT_KS = (10, 20, 100, 200)
# Paper section 6: privacy at k = 20 with the DINO vote.
AUDIT_K = PAPER_K
AUDIT_RULE = PAPER_RULE


@dataclass
class Neighbours:
    """Top-``K`` neighbours of ``Q`` queries in a memory of ``memory_size`` samples.

    ``similarities [Q, K]`` cosine, ``ids [Q, K]`` positions in the memory data set, ``labels [Q, K]``
    their labels, ``query_labels [Q]``; order: similarity descending, position ascending.
    """

    similarities: torch.Tensor
    ids: torch.Tensor
    labels: torch.Tensor
    query_labels: torch.Tensor
    num_classes: int
    memory_size: int


def search_neighbours(
    memory_features: torch.Tensor,
    memory_labels: torch.Tensor,
    query_features: torch.Tensor,
    query_labels: torch.Tensor,
    k: int,
    num_classes: int | None = None,
    device: str = "auto",
) -> Neighbours:
    """Exact top-``k`` search of ``query_features [Q, D]`` in ``memory_features [N, D]`` (L2-normalised)."""
    if k > len(memory_labels):
        raise ValueError(f"k = {k} needs a memory of at least {k} samples, this one has {len(memory_labels)}; "
                         "lower ks / audit_k or use a larger memory.")
    index = FlatIndex(memory_features.shape[1], device)
    index.add(memory_features.float().numpy(), torch.arange(len(memory_labels)).numpy())
    sims, ids = index.search(query_features.float().numpy(), k)
    ids_t = torch.from_numpy(ids)
    classes = num_classes or int(max(memory_labels.max(), query_labels.max())) + 1
    return Neighbours(torch.from_numpy(sims), ids_t, memory_labels[ids_t], query_labels, classes, len(memory_labels))


def accuracy_metrics(
    neighbours: Neighbours,
    ks: Sequence[int] = DEFAULT_KS,
    rules: Sequence[str] = RULES,
    temperature: float = DEFAULT_TEMPERATURE,
    prefix: str = "knn",
) -> dict[str, float]:
    """``{prefix}/{rule}/k{k}/top1`` and ``.../top5`` (percent) for every rule and k."""
    out = {}
    for rule in rules:
        accuracy = accuracy_for_ks(neighbours.similarities, neighbours.labels, neighbours.query_labels,
                                   neighbours.num_classes, rule, ks, temperature)
        for k, (top1, top5) in accuracy.items():
            out[f"{prefix}/{rule}/k{k}/top1"] = top1
            out[f"{prefix}/{rule}/k{k}/top5"] = top5
    return out


def privacy_audit(neighbours: Neighbours, k: int = AUDIT_K, rule: str = AUDIT_RULE,
                  temperature: float = DEFAULT_TEMPERATURE) -> AuditReport:
    """Exact audit (memory samples whose removal flips a query) from neighbours with ``K >= k + 1``."""
    width = min(k + 1, neighbours.memory_size)
    if neighbours.ids.shape[1] < width:
        raise ValueError(f"the audit at k = {k} needs {width} neighbours per query, got {neighbours.ids.shape[1]}")
    return exact_audit(neighbours.similarities[:, :width], neighbours.ids[:, :width], neighbours.labels[:, :width],
                       neighbours.num_classes, k, rule, neighbours.memory_size, temperature)


def neighbours_needed(ks: Sequence[int], audit_k: int | None, memory_size: int) -> int:
    return min(max([*ks, (audit_k + 1) if audit_k else 0]), memory_size)


def fit_ks(ks: Sequence[int], audit_k: int | None, memory_size: int) -> tuple[list[int], int | None, str | None]:
    """The k values a memory of ``memory_size`` samples can serve, the audit's k, and one warning line
    (None when nothing changed). A k above the memory size becomes the memory size (every sample
    votes), so a memory smaller than every k is evaluated at k = its size; the audit's k is capped
    the same way."""
    kept = sorted({min(k, memory_size) for k in ks if k >= 1}) or [memory_size]
    audit = None if not audit_k else min(audit_k, memory_size)
    dropped = [k for k in ks if k > memory_size]
    if not dropped and audit == audit_k:
        return list(ks), audit, None
    note = (f"the memory holds {memory_size} samples: k = {', '.join(map(str, dropped))} "
            f"{'exceeds' if len(dropped) == 1 else 'exceed'} it and {'is' if len(dropped) == 1 else 'are'} "
            f"evaluated at k = {memory_size}; kept k = {', '.join(map(str, kept))}") if dropped else \
        f"the memory holds {memory_size} samples"
    if audit != audit_k:
        note += f"; privacy audit at k = {audit} instead of {audit_k}"
    return kept, audit, note


def headline_k(ks: Sequence[int]) -> int:
    """The k of the headline accuracy: the paper's k when evaluated, else the largest k below it, else the smallest."""
    below = [k for k in ks if k <= PAPER_K]
    return PAPER_K if PAPER_K in ks else max(below) if below else min(ks)


def per_class_accuracy(neighbours: Neighbours, k: int, rule: str, temperature: float,
                       class_names: Sequence[str], prefix: str = "knn") -> dict[str, float]:
    """``{prefix}/per_class/<name>``: top-1 % of each class that has queries, at ``rule`` and ``k``."""
    width = min(k, neighbours.ids.shape[1])
    predicted = predict(neighbours.similarities[:, :width], neighbours.labels[:, :width], neighbours.num_classes,
                        rule, width, temperature)
    out = {}
    for c in torch.unique(neighbours.query_labels).tolist():
        mask = neighbours.query_labels == c
        name = class_names[c] if c < len(class_names) else str(c)
        out[f"{prefix}/per_class/{_tag(name)}"] = 100.0 * float((predicted[mask] == c).float().mean())
    return out


def _tag(name: str) -> str:
    """A class name as one TensorBoard tag component (no slashes or spaces)."""
    return re.sub(r"[^\w.-]+", "_", str(name)).strip("_") or "class"


def evaluate_knn(
    encoder: torch.nn.Module,
    memory: Dataset,
    query: Dataset,
    ks: Sequence[int] = DEFAULT_KS,
    rules: Sequence[str] = RULES,
    temperature: float = DEFAULT_TEMPERATURE,
    audit_k: int | None = AUDIT_K,
    audit_rule: str = AUDIT_RULE,
    batch_size: int = 256,
    num_workers: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Embed ``memory`` and ``query`` (``(image, label)`` data sets) with ``encoder`` and return flat
    metrics: ``knn/{rule}/k{k}/top1|top5`` (percent), ``knn/per_class/<class>`` (top-1 % at the
    audit rule and the headline k) and, unless ``audit_k`` is None,
    ``privacy/{audit_rule}/k{audit_k}/non_private_count|non_private_fraction``, and the memory's
    anisotropy ``knn/anisotropy/mean_cosine|effective_rank`` (``embedding_geometry``)."""
    neighbours, ks, audit_k, geometry = _knn_neighbours(encoder, memory, query, ks, audit_k, batch_size, num_workers,
                                                        device, progress)
    return {**_knn_metrics(neighbours, ks, audit_k, memory, rules, temperature, audit_rule)[0], **geometry}


def _knn_neighbours(encoder, memory, query, ks, audit_k, batch_size, num_workers, device, progress):
    ks, audit_k, note = fit_ks(ks, audit_k, len(memory))
    if note:  # one line per distinct message (Python shows a repeated warning once)
        warnings.warn(f"kNN: {note}", stacklevel=3)
    memory_features, memory_labels = embed_dataset(encoder, memory, batch_size, num_workers, device, progress=progress)
    query_features, query_labels = embed_dataset(encoder, query, batch_size, num_workers, device, progress=progress)
    num_classes = max(len(getattr(memory, "classes", [])), int(memory_labels.max()) + 1, int(query_labels.max()) + 1)
    neighbours = search_neighbours(memory_features, memory_labels, query_features, query_labels,
                                   neighbours_needed(ks, audit_k, len(memory_labels)), num_classes)
    return neighbours, ks, audit_k, anisotropy_metrics(memory_features)


def _knn_metrics(neighbours: Neighbours, ks: Sequence[int], audit_k: int | None, memory: Dataset,
                 rules: Sequence[str], temperature: float, audit_rule: str) -> tuple[dict[str, float], int]:
    metrics = accuracy_metrics(neighbours, ks, rules, temperature)
    k = headline_k(ks)
    metrics.update(per_class_accuracy(neighbours, k, audit_rule, temperature, getattr(memory, "classes", [])))
    if audit_k:
        metrics.update(privacy_audit(neighbours, audit_k, audit_rule, temperature).metrics())
    return metrics, k


GRID_TILE = 64  # pixels per image in the neighbour grid


class KNNClassification(EvaluationTask):
    """kNN classification with a labelled memory, every voting rule and k, plus the exact privacy audit.

    Args:
        memory / query: labelled data specs (``procedural_perception.datasets.labelled.load_labelled``).
        memory_size / query_size: seeded random subsets (``None``: the whole set); the memory is drawn
            with ``seed``, the queries with ``seed + 1``.
        seed: the subsets' seed.
        image_size / resize: evaluation preprocessing (``None``: the encoder's own size; resize the
            shorter side to ``resize``, default ``image_size * 256 / 224``, then centre-crop).
        ks / rules / temperature: neighbour counts and voting rules reported (the paper: DINO's four k).
        audit_k / audit_rule: the privacy audit's vote (the paper: k = 20, DINO vote); None: no audit.
        batch_size / num_workers: embedding data loader.
        grid_queries / grid_neighbours: the neighbour grid drawn after each evaluation (0 queries: none).
        feature_norm: ``centre`` or ``whiten`` the embeddings with statistics of procedural images of
            the encoder's own training process (``feature_norm.py``; no real image is used); None: raw.
        feature_norm_samples: procedural images those statistics are estimated from.
    """

    name = "knn"
    SHARED_FLAGS = {"memory": "memory", "query": "query", "limit_memory": "memory_size", "limit_query": "query_size",
                    "image_size": "image_size", "batch_size": "batch_size"}

    def __init__(
        self,
        memory: str = "fashion_mnist:train",
        query: str = "fashion_mnist:test",
        memory_size: int | None = 10000,
        query_size: int | None = 2000,
        seed: int = 0,
        image_size: int | None = None,
        resize: int | None = None,
        ks: Sequence[int] = DEFAULT_KS,
        rules: Sequence[str] = RULES,
        temperature: float = DEFAULT_TEMPERATURE,
        audit_k: int | None = AUDIT_K,
        audit_rule: str = AUDIT_RULE,
        batch_size: int = 256,
        num_workers: int = 0,
        grid_queries: int = 8,
        grid_neighbours: int = 8,
        feature_norm: str | None = None,
        feature_norm_samples: int = DEFAULT_SAMPLES,
    ) -> None:
        if feature_norm is not None and feature_norm not in MODES:
            raise ValueError(f"feature_norm must be one of {', '.join(MODES)} or None, got {feature_norm!r}")
        self.memory, self.query, self.memory_size, self.query_size, self.seed = memory, query, memory_size, query_size, seed
        self.image_size, self.resize = image_size, resize
        self.ks, self.rules, self.temperature = tuple(ks), tuple(rules), temperature
        self.audit_k, self.audit_rule = audit_k, audit_rule
        self.batch_size, self.num_workers = batch_size, num_workers
        self.grid_queries, self.grid_neighbours = grid_queries, grid_neighbours
        self.feature_norm, self.feature_norm_samples = feature_norm, feature_norm_samples
        self._data: dict[int, tuple[LabelledImages, LabelledImages]] = {}
        self._last: tuple[Neighbours, LabelledImages, LabelledImages] | None = None
        self._headline = (PAPER_K, audit_k)

    def datasets(self, size: int) -> tuple[LabelledImages, LabelledImages]:
        """Memory and query sets at input ``size`` (loaded once per size)."""
        if size not in self._data:
            self._data[size] = (labelled_subset(self.memory, size, self.memory_size, self.seed, self.resize),
                                labelled_subset(self.query, size, self.query_size, query_seed(self.seed), self.resize))
        return self._data[size]

    def evaluate(self, encoder: Encoder) -> dict[str, float]:
        size = self.size_for(encoder, self.image_size)
        memory, query = self.datasets(size)
        device = next(encoder.parameters(), torch.empty(0)).device
        encoder = with_feature_norm(encoder, self.feature_norm, size, self.feature_norm_samples).to(device)
        neighbours, ks, audit_k, geometry = _knn_neighbours(encoder, memory, query, self.ks, self.audit_k,
                                                            self.batch_size, self.num_workers, device, self.progress)
        metrics, k = _knn_metrics(neighbours, ks, audit_k, memory, self.rules, self.temperature, self.audit_rule)
        metrics.update(geometry)
        unreadable = sum(len(d.read_failures()) for d in (memory, query) if hasattr(d, "read_failures"))
        if unreadable:  # files that passed the scan but failed to decode: embedded as black images, counted
            warnings.warn(f"kNN: {unreadable} image(s) of {self.memory} / {self.query} could not be decoded and were "
                          "embedded as black images with their labels; remove or replace them "
                          "(datasets report them with their paths).", stacklevel=2)
            metrics["knn/unreadable_images"] = unreadable
        self._last, self._headline = (neighbours, memory, query), (k, audit_k)
        return metrics

    def headlines(self) -> list[tuple[str, str]]:
        k, audit_k = self._headline
        columns = [(f"kNN top-1 % ({self.audit_rule}, k={k})", f"knn/{self.audit_rule}/k{k}/top1")]
        if audit_k:
            columns.append(("non-private %", f"privacy/{self.audit_rule}/k{audit_k}/non_private_fraction"))
        return columns

    def figures(self) -> dict[str, torch.Tensor]:
        if self._last is None or self.grid_queries <= 0:
            return {}
        return {"queries_and_neighbours": neighbour_grid(*self._last, self.grid_queries, self.grid_neighbours)}

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--k", type=_int_list, default=None, metavar="K[,K...]",
                            help=default_help(cls, "ks", "kNN neighbour counts; those above the memory size are dropped"))
        parser.add_argument("--audit-k", type=int, default=None, help=default_help(cls, "audit_k", "privacy audit k"))
        parser.add_argument("--feature-norm", choices=MODES, default=None,
                            help="centre or whiten the embeddings with statistics of procedural images of the "
                            "encoder's training process (no real image used; default: none)")

    @classmethod
    def own_flags(cls) -> dict[str, str]:
        return {"k": "ks", "audit_k": "audit_k", "feature_norm": "feature_norm"}


def _int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def neighbour_grid(neighbours: Neighbours, memory: LabelledImages, query: LabelledImages, queries: int,
                   columns: int) -> torch.Tensor:
    """``[3, H, W]`` grid: one row per query, the query then its nearest neighbours, each framed
    green when its label equals the query's and red otherwise (the query is framed white)."""
    rows = min(queries, len(query))
    cols = min(columns, neighbours.ids.shape[1])
    tiles = []
    for q in range(rows):
        tiles.append(_tile(query.image(q), (1.0, 1.0, 1.0)))
        for j in range(cols):
            same = int(neighbours.labels[q, j]) == int(neighbours.query_labels[q])
            tiles.append(_tile(memory.image(int(neighbours.ids[q, j])), (0.1, 0.8, 0.1) if same else (0.9, 0.1, 0.1)))
    return make_grid(torch.stack(tiles), nrow=cols + 1, padding=2, pad_value=0.0)


def _tile(image, colour: tuple[float, float, float], border: int = 3) -> torch.Tensor:
    pixels = TF.to_dtype(TF.to_image(image), torch.float32, scale=True)
    pixels = F.interpolate(pixels[None], size=(GRID_TILE - 2 * border,) * 2, mode="bilinear", antialias=True)[0]
    framed = torch.tensor(colour).view(3, 1, 1).expand(3, GRID_TILE, GRID_TILE).clone()
    framed[:, border:-border, border:-border] = pixels.clamp(0, 1)
    return framed
