"""Real photographs that install offline: the out-of-domain real-data training row (the paper's Places row).

No Debian or PyPI package found here holds a few hundred real photographs; the largest offline set is the
photographic wallpapers of three Debian packages, 28 photographs of nature, landscapes, animals and objects
(the abstract and illustrated wallpapers of the same packages are left out by name):

- ``mate-backgrounds``: ``/usr/share/backgrounds/mate/nature/`` (12, GPL-2+);
- ``lomiri-wallpapers-16.04``: 13 photographs in ``/usr/share/backgrounds/`` (CC-BY-4.0 / CC-BY-SA-4.0);
- ``lomiri-wallpapers-20.04``: 3 (CC-BY-SA-4.0 / CC-BY-4.0).

DINO trains on random crops of its images, so the photographs are cut into square tiles at several
scales (:func:`cut_tiles`): each photograph is resized so that its shorter side is 256, 512, 1024 and
2048 px (never upsampled) and cut into non-overlapping 256 px tiles, about 3,000 tiles in all: coarse
scales give whole scenes, fine ones textures and object parts, as the crops of a large photo collection
would. ``make train DATA=images ARGS="data.root=wallpapers"`` cuts them once into a cache folder.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from PIL import Image

BACKGROUNDS = Path(os.environ.get("WALLPAPERS_DIR", "/usr/share/backgrounds"))
PACKAGES = ("mate-backgrounds", "lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04")
# (package, file under BACKGROUNDS): the photographs only.
PHOTOGRAPHS: tuple[tuple[str, str], ...] = (
    *(("mate-backgrounds", f"mate/nature/{name}.jpg") for name in (
        "Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird", "RainDrops", "Storm",
        "TwoWings", "Wood", "YellowFlower")),
    *(("lomiri-wallpapers-16.04", f"{name}.jpg") for name in (
        "Bridge_by_Sander_Klootwijk", "Dragonfly_by_Bolly", "Picture_0B_by_freespace", "Picture_1A_by_freespace",
        "Wine_by_Jakkub_Mede", "aitzgorri_by_Aitzol_Berasategi", "analogpattern_by_Peter_Nerlich",
        "free_by_Peter_Nerlich", "friends_by_Aitzol_Berasategi", "greentock_by_Peter_Nerlich",
        "life_by_Aitzol_Berasategi", "picosdeeuropa_by_Aitzol_Berasategi", "sunset_by_Aitzol_Berasategi")),
    *(("lomiri-wallpapers-20.04", f"{name}.jpg") for name in (
        "Infinite-Sea_by_Aury88", "Kleiber_by_Lukas_Baubkus", "seeding_by_Clements_Engelhardt")),
)
TILE = 256  # px: the side of a tile (DINO's crops are then taken from it)
SIDES = (256, 512, 1024, 2048)  # shorter side of each rescaled copy of a photograph
QUALITY = 95  # JPEG quality of the tiles
NAME = "wallpapers"  # the data.root value that names this set


def photograph_files() -> list[Path]:
    """The installed photographs; a clear error naming the packages when none is there."""
    files = [BACKGROUNDS / rel for _, rel in PHOTOGRAPHS if (BACKGROUNDS / rel).is_file()]
    if not files:
        raise FileNotFoundError(
            f"No wallpaper photographs under {BACKGROUNDS}: install them with "
            f"`apt-get install {' '.join(PACKAGES)}` (or `make photos`), or set WALLPAPERS_DIR.")
    return files


def default_cache() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "procedural_perception" / f"{NAME}_tiles"


def tiles_of(image: Image.Image, tile: int = TILE, sides: tuple[int, ...] = SIDES) -> list[Image.Image]:
    """Non-overlapping ``tile`` x ``tile`` crops of ``image`` rescaled to each shorter side in ``sides``
    (sides above the image's own are skipped: no upsampling), centred in each rescaled copy."""
    out = []
    for side in sides:
        if side > min(image.size) or side < tile:
            continue
        scale = side / min(image.size)
        w, h = round(image.width * scale), round(image.height * scale)
        copy = image.resize((w, h), Image.Resampling.LANCZOS, reducing_gap=3.0)
        nx, ny = w // tile, h // tile
        x0, y0 = (w - nx * tile) // 2, (h - ny * tile) // 2
        out += [copy.crop((x0 + i * tile, y0 + j * tile, x0 + (i + 1) * tile, y0 + (j + 1) * tile))
                for j in range(ny) for i in range(nx)]
    return out


def cut_tiles(out: Path | None = None, files: list[Path] | None = None, tile: int = TILE,
              sides: tuple[int, ...] = SIDES) -> Path:
    """The tile folder (``out``, default :func:`default_cache`), cut once: a finished folder carries
    ``tiles.json`` (what it holds) and is reused when it matches; it is built in a temporary folder and
    renamed, so an interrupted cut never leaves a partial set behind."""
    out = Path(out) if out is not None else default_cache()
    files = files if files is not None else photograph_files()
    recipe = {"tile": tile, "sides": list(sides), "photographs": [f.name for f in files]}
    manifest = out / "tiles.json"
    if manifest.is_file() and json.loads(manifest.read_text()).get("recipe") == recipe:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        count = 0
        for path in files:
            with Image.open(path) as im:
                for i, crop in enumerate(tiles_of(im.convert("RGB"), tile, sides)):
                    crop.save(tmp / f"{path.stem}_{i:04d}.jpg", quality=QUALITY)
                    count += 1
        (tmp / "tiles.json").write_text(json.dumps({"recipe": recipe, "tiles": count}, indent=1))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out
