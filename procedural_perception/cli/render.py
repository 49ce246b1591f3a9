"""Render procedural samples to disk: ``make render DATA=kml_mixup N=10000 OUT=dir``.

Writes samples 0..N-1 of the (process, seed) stream as ``OUT/<shard>/<index>.<ext>`` (``--shard-size``
files per folder) and ``OUT/contact_sheet.png`` (the first 64 samples on an 8 x 8 grid), with a
progress bar. The images are exactly those training sees for the same process, seed and size.
"""

from __future__ import annotations

import argparse
import io
import math
from pathlib import Path

import torch
from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch.utils.data import DataLoader

from datamodules.procedural.processes import PROCESSES
from datamodules.procedural.programs import family_weights
from datamodules.shaders import ShaderDataModule
from procedural_perception.core.atomic import atomic_path, atomic_write_bytes


def contact_sheet(images: torch.Tensor, columns: int = 8, cell: int | None = None) -> Image.Image:
    """uint8 images [N, 3, H, W] -> one grid image (``cell`` px per image, default their size)."""
    n, _, h, w = images.shape
    rows = math.ceil(n / columns)
    cell_h, cell_w = (h, w) if cell is None else (cell, cell)
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h))
    for i, image in enumerate(images):
        tile = Image.fromarray(image.permute(1, 2, 0).numpy())
        if cell is not None:
            tile = tile.resize((cell_w, cell_h), Image.Resampling.LANCZOS)
        sheet.paste(tile, ((i % columns) * cell_w, (i // columns) * cell_h))
    return sheet


def save_contact_sheet(images: torch.Tensor, path: str | Path, cell: int | None = None, colours: int | None = None) -> None:
    """Write a contact sheet PNG atomically; ``colours`` (<= 256) quantises it to keep the file small."""
    sheet = contact_sheet(images, cell=cell)
    if colours is not None:
        sheet = sheet.quantize(colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG", optimize=True)


def encode(image: torch.Tensor, fmt: str, quality: int) -> bytes:
    buffer = io.BytesIO()
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    if fmt == "jpg":
        pil.save(buffer, format="JPEG", quality=quality)
    else:
        pil.save(buffer, format="PNG")
    return buffer.getvalue()


def render(data: str, n: int, out: Path, seed: int = 0, size: int = 224, fmt: str = "jpg", quality: int = 95,
           shard_size: int = 1000, workers: int = 2, shader_dir: str | None = None, sheet_cell: int | None = 128,
           sheet_colours: int | None = None, **engine) -> Path:
    """Write samples 0..n-1 of (data, seed) under ``out``; return the contact sheet's path."""
    dm = ShaderDataModule(process=data, seed=seed, image_size=size, num_workers=workers, shader_dir=shader_dir,
                          batch_size=32, **engine)
    slots = max(workers, 1)
    per_round = dm.config.block_size * slots
    dm.dataset.samples_per_epoch = math.ceil(n / per_round) * per_round  # blocks covering samples 0..n-1
    dm.dataset.indexed = True
    loader = DataLoader(dm.dataset, batch_size=32, num_workers=workers)
    first: dict[int, torch.Tensor] = {}
    written = 0
    columns = [TextColumn(f"rendering {data}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns) as progress:
        task = progress.add_task("render", total=n)
        for indices, images in loader:
            for index, image in zip(indices.tolist(), images, strict=True):
                if index >= n:
                    continue
                atomic_write_bytes(out / f"{index // shard_size:05d}" / f"{index:09d}.{fmt}", encode(image, fmt, quality))
                if index < 64:
                    first[index] = image
                written += 1
                progress.advance(task)
            if written >= n:
                break
    sheet = out / "contact_sheet.png"
    save_contact_sheet(torch.stack([first[i] for i in sorted(first)]), sheet, cell=sheet_cell, colours=sheet_colours)
    return sheet


def parse_families(text: str | None) -> dict[str, float] | None:
    """``"patterns=1,raymarch=0.5"`` (or ``name:weight``, braces allowed) -> {name: weight}; None stays None."""
    if text is None:
        return None
    out = {}
    for item in text.strip().strip("{}").split(","):
        name, sep, weight = item.replace(":", "=").partition("=")
        try:
            out[name.strip()] = float(weight) if sep else 1.0
        except ValueError:
            raise ValueError(f"--families: weight {weight!r} of {name.strip()!r} is not a number; "
                             "write e.g. --families patterns=1,raymarch=0.5") from None
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="kml_mixup", choices=sorted(PROCESSES), help="process to render")
    parser.add_argument("-n", type=int, default=10_000, help="number of samples (0..n-1 of the stream)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--format", default="jpg", choices=["jpg", "png"])
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality")
    parser.add_argument("--shard-size", type=int, default=1000, help="files per folder")
    parser.add_argument("--workers", type=int, default=2, help="rendering processes (DataLoader workers)")
    parser.add_argument("--shader-dir", default=None, help="folder of Shadertoy programs instead of the grammar")
    parser.add_argument("--sheet-cell", type=int, default=128, help="pixels per image on the contact sheet")
    parser.add_argument("--families", default=None,
                        help="program families and weights, e.g. patterns=1,raymarch=1 (default: patterns only)")
    parser.add_argument("--sheet-colours", type=int, default=None, help="quantise the sheet to this many colours (smaller file)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("-n must be at least 1")
    try:
        families = parse_families(args.families)
        if families is not None:
            family_weights(families)
    except ValueError as error:
        parser.error(str(error))
    sheet = render(args.data, args.n, args.out, seed=args.seed, size=args.size, fmt=args.format,
                   quality=args.quality, shard_size=args.shard_size, workers=args.workers,
                   shader_dir=args.shader_dir, sheet_cell=args.sheet_cell, sheet_colours=args.sheet_colours,
                   families=families)
    print(f"wrote {args.n} images under {args.out} and the contact sheet {sheet}")


if __name__ == "__main__":
    main()
