"""Hostile files in every reader of real images: skipped and counted, or refused with a clear message;
never a crash in a DataLoader worker, every bad file named in the report."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks import faults_files as ff
from datamodules.images import MAX_CONSECUTIVE_FAILURES, ImageFiles, ImageFolderDataModule
from procedural_perception.datasets.image_files import header_problem, open_rgb, printable
from procedural_perception.datasets.labelled import load_labelled
from procedural_perception.datasets.scan import walk_files
from procedural_perception.datasets.segmentation import load_coco
from procedural_perception.evaluations.embedding import eval_transform


@pytest.mark.parametrize("reader", list(ff.READERS))
@pytest.mark.parametrize("case", list(ff.CASES))
def test_every_case_against_every_reader(case, reader, tmp_path):
    """Through a DataLoader with one worker: no exception, every readable file delivered, every bad one reported."""
    survived, lost, _, why = ff.trial(case, reader, 0, tmp_path, timed=False)
    assert survived and lost == 0, why


def hostile_class_folder(root):
    folder = root / "class_a"
    ff.good_images(folder)
    for write in ff.CASES.values():
        write(folder)
    return folder


def test_each_hostile_file_gets_its_own_reason_and_the_report_names_all(tmp_path, capsys):
    hostile_class_folder(tmp_path / "data")
    data = load_labelled(str(tmp_path / "data"), report=tmp_path / "skipped.txt")
    reasons = {Path(p).name: r for p, r in data.skipped}
    expect = {"bomb_huge.png": "decompression bomb", "bomb_large.png": "decompression bomb: declares 10000 x 10000",
              "strip.png": "absurd aspect ratio 400 x 2", "cut.png": "truncated", "cut.jpg": "truncated",
              "cut.tif": "truncated", "notes.jpg": "not an image", "zero.png": "0 bytes", "self.jpg": "symlink loop",
              "broken.png": "broken symlink", "fifo.jpg": "not a regular file (a FIFO)", "inner.txt": "extension .txt"}
    for name, reason in expect.items():
        assert reason in reasons[name], (name, reasons[name])
    assert any("already listed" in r for p, r in data.skipped if "/loop" in p)  # entered once, not again
    report = (tmp_path / "skipped.txt").read_text(encoding="utf-8")
    assert all(name in report for name in expect) and len(report.splitlines()) == len(data.skipped) + 1
    assert "every one is listed in" in capsys.readouterr().err  # the console names the first only
    kept = sorted(Path(s).name for s in data.sources)
    assert kept == sorted([*(f"good_0_{i}.png" for i in range(ff.GOOD)), "caf\\xe9.png", "damaged.jpg", "png_inside.jpg"])


def test_non_utf8_names_are_kept_with_an_escaped_source_that_a_memory_can_store(tmp_path):
    from procedural_perception.visual_memory import VisualMemory

    folder = tmp_path / "data" / "c"
    folder.mkdir(parents=True)
    raw = os.fsdecode(b"caf\xe9.png")
    Image.new("RGB", (8, 8), (200, 0, 0)).save(folder / raw)
    data = load_labelled(str(tmp_path / "data"))
    assert data.sources == [f"{folder}/caf\\xe9.png"] and printable(folder / raw) == data.sources[0]
    assert data[0][0][0, 0, 0] > 0.7  # the file itself is read, through its real (undecodable) name
    memory = VisualMemory(4, path=tmp_path / "memory")  # SQLite refuses surrogates; the escaped form is plain text
    memory.add(torch.randn(1, 4), data.targets, sources=data.sources, dataset="x")
    assert memory.forget_sources(data.sources, "test") and len(memory) == 0


def test_a_file_damaged_inside_becomes_a_counted_black_placeholder_across_workers(tmp_path):
    folder = tmp_path / "data" / "c"
    ff.good_images(folder, 3)
    (folder / "damaged.jpg").write_bytes(ff.damaged_inside())
    assert header_problem(folder / "damaged.jpg")[0] is None  # passes the scan ...
    with pytest.raises(OSError, match="damaged.jpg: cannot decode"):
        open_rgb(folder / "damaged.jpg")  # ... fails when decoded, naming the file
    data = load_labelled(str(tmp_path / "data"), eval_transform(16))
    index = [Path(s).name for s in data.sources].index("damaged.jpg")
    with pytest.warns(UserWarning, match="black image with its label"):
        image, label = data[index]
    assert label == 0 and image.shape == (3, 16, 16) and float(image.abs().max()) == 0.0
    fresh = load_labelled(str(tmp_path / "data"), eval_transform(16))
    loader = torch.utils.data.DataLoader(fresh, batch_size=2, num_workers=2)
    assert sum(len(b[1]) for b in loader) == 4  # every sample, in order, from worker processes
    failures = fresh.read_failures()  # recorded by a worker, read in this process
    assert [(i, Path(s).name) for i, s, _ in failures] == [(index, "damaged.jpg")]
    text = fresh.write_report(tmp_path / "r.txt").read_text()
    assert "read\t" in text and "damaged.jpg" in text and "black image" in text
    with pytest.raises(OSError, match="damaged.jpg"):
        load_labelled(str(tmp_path / "data"), eval_transform(16), strict=True)[index]


def test_memory_build_leaves_failed_reads_out_and_lists_everything(tmp_path):
    from procedural_perception.cli.memory import main
    from procedural_perception.visual_memory import VisualMemory

    folder = tmp_path / "data" / "c"
    ff.good_images(folder, 3)
    (folder / "damaged.jpg").write_bytes(ff.damaged_inside())
    (folder / "cut.png").write_bytes(ff.encoded("PNG")[:100])
    assert main(["build", "--encoder", "rgb", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "m"),
                 "--image-size", "16", "--device", "cpu"]) == 0
    memory = VisualMemory.load(tmp_path / "m")
    assert len(memory) == 3 and not any("damaged" in str(r["source"]) for r in memory.metadata(list(range(4))))
    report = (tmp_path / "m" / "skipped.txt").read_text()
    assert "scan\t" in report and "cut.png" in report and "read\t" in report and "damaged.jpg" in report


def test_training_worker_failures_are_replaced_counted_and_reported(tmp_path, capsys):
    folder = tmp_path / "imgs"
    ff.good_images(folder, 4)
    (folder / "damaged.jpg").write_bytes(ff.damaged_inside())
    module = ImageFolderDataModule(str(folder), batch_size=5, num_workers=1, report=str(tmp_path / "skipped.txt"))
    module.setup()
    batches = list(module.train_dataloader())
    assert len(batches) == 1 and batches[0].shape == (5, 3, ff.SIZE, ff.SIZE)  # the bad file replaced, not dropped
    module.teardown("fit")
    assert "1 reads failed during training" in capsys.readouterr().err
    assert "damaged.jpg" in (tmp_path / "skipped.txt").read_text()


def test_a_run_of_unreadable_files_stops_with_a_clear_error(tmp_path):
    files = []
    for i in range(MAX_CONSECUTIVE_FAILURES + 1):
        (tmp_path / f"{i:03d}.jpg").write_bytes(ff.damaged_inside())
        files.append(tmp_path / f"{i:03d}.jpg")
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match="in a row .* storage still mounted"):
        ImageFiles(files)[0]


def test_the_walk_lists_a_looped_or_twice_linked_folder_once(tmp_path):
    ff.good_images(tmp_path / "a", 2)
    os.symlink(tmp_path / "a", tmp_path / "b")  # a second link to a folder
    os.symlink("..", tmp_path / "a" / "up")  # a loop
    skipped = []
    files = walk_files(tmp_path, skipped)
    assert [p.name for p in files] == ["good_0_0.png", "good_0_1.png"]
    assert {Path(p).name for p, _ in skipped} == {"b", "up"}
    loop = tmp_path / "loop_only"
    ff.good_images(loop, 1)
    os.symlink(".", loop / "again")
    walked = [f for _, _, names in os.walk(loop, followlinks=True) for f in names]  # what ImageFolder walks
    assert len(walked) > 10 and len(walk_files(loop, [])) == 1  # os.walk lists the file at every level of the loop


def test_coco_with_broken_polygons_excludes_those_images_and_bad_json_is_refused(tmp_path):
    ok, detail = ff.coco_broken_polygons(tmp_path)
    assert ok, detail
    data = load_coco(tmp_path / "instances.json", tmp_path / "val2017", image_size=8, mask_size=8)
    reasons = dict(data.skipped)
    assert "even number (>= 6)" in reasons["good_1_0.png"] and "not a finite number" in reasons["good_2_0.png"]
    assert "not a finite number" in reasons["good_3_0.png"] and "category_id 42" in reasons["good_5_0.png"]
    (tmp_path / "torn.json").write_text(json.dumps({"images": [], "categories": []})[:-3])
    with pytest.raises(ValueError, match="torn.json is not valid JSON"):
        load_coco(tmp_path / "torn.json", tmp_path / "val2017")


def test_segmentation_masks_that_are_fifos_are_skipped_not_waited_on(tmp_path):
    from procedural_perception.datasets.segmentation import load_segmentation

    ff.good_images(tmp_path / "images", 2)
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.ones((ff.SIZE, ff.SIZE), np.uint8)).save(tmp_path / "masks" / "good_0_0.png")
    os.mkfifo(tmp_path / "masks" / "good_0_1.png")
    data = load_segmentation(str(tmp_path), image_size=8, mask_size=8)
    assert data.names == ["good_0_0.png"] and "FIFO" in dict(data.skipped)["good_0_1.png"]


PERMISSION_SCRIPT = """
import sys
from procedural_perception.datasets.labelled import load_labelled
data = load_labelled(sys.argv[1], report=sys.argv[2])
print(len(data), sorted(r for _, r in data.skipped))
"""


@pytest.mark.slow
def test_unreadable_permissions(tmp_path):
    """Root reads a mode-000 file, so as root the loader runs in a child process without the
    capabilities that bypass permissions (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH)."""
    root = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        os.chmod(root, 0o755)
        ff.good_images(root / "data" / "c", 2)
        (root / "data" / "locked").mkdir()
        Image.new("RGB", (8, 8)).save(root / "data" / "c" / "secret.png")
        os.chmod(root / "data" / "c" / "secret.png", 0)
        os.chmod(root / "data" / "locked", 0)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "HOME": str(root)}
        # as root, drop the two capabilities that let root ignore file permissions (util-linux setpriv)
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
        result = subprocess.run([*prefix, sys.executable, "-c", PERMISSION_SCRIPT, str(root / "data"), str(root / "r.txt")],
                                capture_output=True, text=True, env=env, timeout=300, check=False)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("2 ") and "permission denied" in result.stdout
        assert "cannot list folder: Permission denied" in result.stdout
    finally:
        os.chmod(root / "data" / "locked", 0o755)
        subprocess.run(["rm", "-rf", str(root)], check=False)
