"""The scan: parallel header checks agree with serial ones, progress lines in logs, errors that travel."""

import pickle

import pytest

from benchmarks import faults_files as ff
from procedural_perception.datasets import scan
from procedural_perception.datasets.image_files import UnreadableImage, header_problem
from procedural_perception.datasets.labelled import load_labelled


def test_parallel_checks_give_the_serial_verdicts_in_order(tmp_path, monkeypatch):
    ff.good_images(tmp_path, 5)
    ff.CASES["truncated PNG / JPEG / TIFF"](tmp_path)
    (tmp_path / "damaged.jpg").write_bytes(ff.damaged_inside())
    files = sorted(tmp_path.iterdir())
    serial = scan.check_files(files, processes=1)
    monkeypatch.setattr(scan, "CHUNK", 2)  # several chunks, so the worker pool is used
    parallel = scan.check_files(files, processes=2)
    assert parallel == serial == [header_problem(p) for p in files]
    assert [f.name for f, (reason, _) in zip(files, serial, strict=True) if reason] == ["cut.jpg", "cut.png", "cut.tif"]
    assert dict(zip([f.name for f in files], serial, strict=True))["good_0_0.png"] == (None, (ff.SIZE, ff.SIZE))


def test_progress_writes_plain_lines_without_a_terminal(capsys, monkeypatch):
    monkeypatch.setattr(scan, "LOG_EVERY_S", 0.0)
    assert list(scan.progress(range(3), 3, "checking things")) == [0, 1, 2]
    lines = capsys.readouterr().err.splitlines()
    assert lines[:2] == ["checking things: 1/3 (0 s)", "checking things: 2/3 (0 s)"] and "done in" in lines[-1]


def test_unreadable_image_errors_survive_the_trip_from_a_worker():
    err = pickle.loads(pickle.dumps(UnreadableImage("/data/x.jpg", "empty file (0 bytes)")))
    assert isinstance(err, OSError) and err.reason == "empty file (0 bytes)" and "x.jpg" in str(err)


def test_inat_folder_with_a_stray_file_is_a_clear_error(tmp_path):
    import dataset_fixtures as fx

    fx.inat21(tmp_path / "val")
    (tmp_path / "val" / ".DS_Store").write_bytes(b"\0")  # torchvision reads every entry as a species folder
    with pytest.raises(ValueError, match="not the iNat 2021 layout"):
        load_labelled(f"inat21:{tmp_path}:val")
