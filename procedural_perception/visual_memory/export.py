"""A memory's contents as one file other tools read: ``.npz`` (numpy) or ``.safetensors``.

Why: a memory folder is SQLite + faiss, read through this project's code; a user who wants the
embeddings in scikit-learn, another kNN library or a notebook needs plain arrays. Both formats hold

* ``embeddings`` float32 ``[N, D]``: the stored L2-normalised vectors, ordered by id;
* ``labels`` int64 ``[N]`` and ``ids`` int64 ``[N]`` (the memory's ids, so ``forget --ids`` matches);
* the class names (index = label) and every sample's source, plus how the memory was built (encoder,
  image size). In ``.npz`` these are arrays (``class_names``, ``sources``; ``info`` a JSON string);
  safetensors holds only tensors, so there they are JSON strings in the file's metadata
  (``class_names``, ``sources``, ``info``).

Both load without pickle: ``numpy.load(path)``; ``safetensors.safe_open(path, "pt")`` (``.metadata()``).
The file is written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from procedural_perception.core.atomic import atomic_path
from procedural_perception.visual_memory.memory import VisualMemory

FORMATS = (".npz", ".safetensors")


def memory_arrays(memory: VisualMemory) -> dict[str, object]:
    """``{embeddings [N, D], labels [N], ids [N], class_names [C], sources [N], info}`` of ``memory``."""
    ids, labels, vectors = memory.store.all_samples()
    names = memory.class_names()
    count = max([*names, int(labels.max(initial=-1))], default=-1) + 1
    class_names = [str(names.get(c, c)) for c in range(count)]
    rows = {row["id"]: row for row in memory.metadata(ids.tolist())}
    sources = [str(rows[int(i)]["source"] or "") for i in ids]
    return {"embeddings": np.ascontiguousarray(vectors, dtype=np.float32), "labels": labels, "ids": ids,
            "class_names": class_names, "sources": sources, "info": memory.info()}


def check_format(path: str | Path) -> Path:
    """``path`` when its suffix names a format, else a ValueError that says which suffixes do."""
    path = Path(path)
    if path.suffix not in FORMATS:
        raise ValueError(f"Cannot export to {path}: the file name must end in {' or '.join(FORMATS)}, "
                         "which chooses the format.")
    return path


def export_memory(memory: VisualMemory, path: str | Path) -> int:
    """Write ``memory`` to ``path`` (``.npz`` or ``.safetensors``, chosen by the suffix); the sample count."""
    path = check_format(path)
    data = memory_arrays(memory)
    with atomic_path(path) as tmp:
        if path.suffix == ".npz":
            with open(tmp, "wb") as handle:  # a handle: np.savez would append .npz to a bare path
                np.savez(handle, embeddings=data["embeddings"], labels=data["labels"], ids=data["ids"],
                         class_names=np.array(data["class_names"], dtype=str),
                         sources=np.array(data["sources"], dtype=str), info=np.array(json.dumps(data["info"])))
        else:
            import torch
            from safetensors.torch import save_file

            # np.array: writable copies (torch warns on the read-only arrays SQLite bytes give)
            tensors = {k: torch.from_numpy(np.array(data[k])) for k in ("embeddings", "labels", "ids")}
            save_file(tensors, str(tmp), metadata={k: json.dumps(data[k]) for k in ("class_names", "sources", "info")})
    return len(data["ids"])
