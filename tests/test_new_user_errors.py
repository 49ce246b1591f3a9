"""Errors a new user met (issue: hostile programs, files and state, item 8), tried as a new user would, through
the memory command: ``classify --image`` with a corrupt file among good ones, and a build's skip report."""

import numpy as np
from PIL import Image


def _folder(root, bad: int = 0):
    for c in "ab":
        (root / c).mkdir(parents=True)
        for i in range(3):
            pixels = np.random.default_rng(i + ord(c)).integers(0, 255, (20, 20, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / c / f"{i}.png")
    for i in range(bad):
        data = (root / "a" / "0.png").read_bytes()
        (root / "b" / f"cut{i}.png").write_bytes(data[: len(data) // 2])
    return root


def test_classify_names_a_corrupt_image_and_still_classifies_the_others(tmp_path, capsys):
    from procedural_perception.cli.memory import main

    data, memory = _folder(tmp_path / "data"), str(tmp_path / "mem")
    assert main(["build", "--encoder", "rgb", "--data", str(data), "--out", memory, "--image-size", "16",
                 "--device", "cpu"]) == 0
    good = data / "a" / "1.png"
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(good.read_bytes()[:60])
    capsys.readouterr()
    assert main(["classify", memory, "--image", str(corrupt), str(good), "--k", "3", "--device", "cpu"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"skipped: cannot read {corrupt}" in out and f"{good}: a" in out  # named, and the good one classified
    assert main(["classify", memory, "--image", str(corrupt), "--device", "cpu"]) == 2
    assert "none of the 1 images could be read" in " ".join(capsys.readouterr().out.split())


def test_a_build_lists_every_skipped_file_in_a_report(tmp_path, capsys):
    from procedural_perception.cli.memory import main

    data, memory = _folder(tmp_path / "data", bad=3), tmp_path / "mem"
    assert main(["build", "--encoder", "rgb", "--data", str(data), "--out", str(memory), "--image-size", "16",
                 "--device", "cpu"]) == 0
    assert "skipped.txt" in " ".join(capsys.readouterr().out.split())
    report = (memory / "skipped.txt").read_text()
    assert all(f"cut{i}.png" in report for i in range(3))  # every bad file, not only the first


def test_make_tensorboard_listens_on_this_machine_unless_told_otherwise():
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]

    def command(*extra: str) -> str:  # what `make tensorboard` would run (-n: print only; -o setup: skip setup)
        out = subprocess.run(["make", "-n", "-o", "setup", "tensorboard", *extra], cwd=root, capture_output=True,
                             text=True, check=True).stdout
        return next(line for line in out.splitlines() if "tensorboard --logdir" in line)

    assert "--host 127.0.0.1" in command() and "bind_all" not in command()
    assert "--host 0.0.0.0" in command("TB_HOST=0.0.0.0")  # exposure is an explicit choice
