"""The real-data controls of the experiment: the wallpaper tiles and labelled specs as DINO training data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from datamodules.images import ImageFolderDataModule, is_folder
from procedural_perception.datasets import wallpapers


def _photo(path, size):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def test_tiles_of_counts_every_scale_without_upsampling():
    image = Image.new("RGB", (1600, 1000))
    tiles = wallpapers.tiles_of(image, tile=256, sides=(256, 512, 1024, 2048))
    # shorter side 256: 1 x 1 (width 410); 512: 3 x 2 (820 x 512); 1024 > 1000: skipped; 2048 skipped
    assert len(tiles) == 1 + 3 * 2
    assert all(t.size == (256, 256) for t in tiles)


def test_cut_tiles_once_and_reuse(tmp_path, monkeypatch):
    monkeypatch.setattr(wallpapers, "BACKGROUNDS", tmp_path / "bg")
    _photo(tmp_path / "bg" / "mate/nature/Aqua.jpg", (700, 520))
    _photo(tmp_path / "bg" / "Wine_by_Jakkub_Mede.jpg", (520, 800))
    files = wallpapers.photograph_files()
    assert [f.name for f in files] == ["Aqua.jpg", "Wine_by_Jakkub_Mede.jpg"]
    out = wallpapers.cut_tiles(tmp_path / "tiles")
    manifest = json.loads((out / "tiles.json").read_text())
    # Aqua 700 x 520: side 256 -> 1 tile, 512 -> 689 x 512 = 2 x 2; Wine 520 x 800: 256 -> 1, 512 -> 512 x 788 = 2 x 3
    assert manifest["tiles"] == len(list(out.glob("*.jpg"))) == 1 + 2 * 2 + 1 + 2 * 3
    stamp = (out / "tiles.json").stat().st_mtime_ns
    assert wallpapers.cut_tiles(tmp_path / "tiles") == out
    assert (out / "tiles.json").stat().st_mtime_ns == stamp  # reused, not cut again
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tiles")]  # no temporary folder left


def test_missing_photographs_name_the_packages(tmp_path, monkeypatch):
    monkeypatch.setattr(wallpapers, "BACKGROUNDS", tmp_path / "none")
    with pytest.raises(FileNotFoundError, match="apt-get install mate-backgrounds"):
        wallpapers.photograph_files()


def test_data_module_reads_the_tiles_and_labelled_specs(tmp_path, monkeypatch):
    monkeypatch.setattr(wallpapers, "BACKGROUNDS", tmp_path / "bg")
    monkeypatch.setattr(wallpapers, "default_cache", lambda: tmp_path / "cache")
    _photo(tmp_path / "bg" / "mate/nature/Dune.jpg", (600, 520))
    assert not is_folder("wallpapers") and not is_folder("fashion_mnist:train") and is_folder(str(tmp_path))
    dm = ImageFolderDataModule(root="wallpapers", batch_size=2, num_workers=0)
    dm.setup()
    assert len(dm.dataset) == 1 + 2 * 2 and dm.dataset[0].shape == (3, 256, 256)
    dm = ImageFolderDataModule(root="fashion_mnist:train", resize=64, batch_size=2, num_workers=0)
    dm.setup()
    image = dm.dataset[0]
    assert len(dm.dataset) == 60000 and image.shape == (3, 64, 64) and 0 <= image.min() <= image.max() <= 1
