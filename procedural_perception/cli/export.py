"""Export a trained model for use without this project: ``make export CKPT=... OUT=dir``.

    python -m procedural_perception.cli.export runs/<run>/checkpoints/last.ckpt exported/

writes into ``OUT``:

* ``config.json`` + ``model.safetensors``: the DINO teacher backbone as a timm model folder, loaded
  anywhere timm is installed with ``timm.create_model("local-dir:OUT", pretrained=True)`` (timm's own
  ``save_for_hf`` writes it, with the architecture arguments and ImageNet normalisation);
* ``teacher_backbone.pth``: a plain ``state_dict`` of the same backbone (what DINO's
  ``--checkpoint_key teacher`` extracts, without the ``backbone.`` prefix), for
  ``timm.create_model(arch, num_classes=0, ...).load_state_dict(torch.load(...))``.

Embeddings from the exported model equal the checkpoint's, as the evaluations and the visual memory
use them: for a ViT the CLS token after the final norm (``forward_features(x)[:, 0]``), for a convnet
(``model.arch=resnet18``, ...) the pooled feature ``model(x)`` (built with ``num_classes=0``). Files are written to a temporary folder and renamed,
so an interrupted export leaves no half folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from timm.models import save_for_hf

from lightning_modules.dino import DINO
from lightning_modules.encoders import IMAGENET_MEAN, IMAGENET_STD
from procedural_perception.core.checkpoints import read_checkpoint

STATE_DICT = "teacher_backbone.pth"


def export(checkpoint: str | Path, out: str | Path) -> Path:
    """Write the teacher backbone of ``checkpoint`` to the folder ``out`` (see the module docstring)."""
    checkpoint, out = Path(checkpoint), Path(out)
    read_checkpoint(checkpoint)  # a clear error for a missing or damaged file
    module = DINO.load_from_checkpoint(str(checkpoint), map_location="cpu")
    backbone = module.teacher_backbone.eval()
    kwargs = module.backbone_kwargs()
    size = int(module.hparams.global_crop_size)  # the training input side (a ViT's img_size too)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        save_for_hf(backbone, str(tmp), model_config={"architecture": module.hparams.arch},
                    model_args=kwargs, safe_serialization=True,
                    data_config={"input_size": (3, size, size), "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
                                 "interpolation": "bicubic", "crop_pct": 224 / 256})
        torch.save(backbone.state_dict(), tmp / STATE_DICT)
        (tmp / "export.json").write_text(json.dumps({"checkpoint": str(checkpoint.resolve()),
                                                     "global_step": int(module.global_step),
                                                     "architecture": module.hparams.arch, "model_args": kwargs,
                                                     "state_dict": STATE_DICT}, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m procedural_perception.cli.export", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a DINO checkpoint (runs/<run>/checkpoints/last.ckpt)")
    p.add_argument("out", help="folder to write (replaced if it exists)")
    args = p.parse_args(argv)
    path = export(args.checkpoint, args.out)
    print(f"exported {args.checkpoint} to {path}: timm.create_model('local-dir:{path}', pretrained=True), "
          f"or the plain state_dict {path / STATE_DICT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
