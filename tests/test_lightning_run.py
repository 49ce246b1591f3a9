"""`lightning run` (the design card's command) is Lightning's `fabric run` under another name."""

import subprocess
import sys
from pathlib import Path

from procedural_perception.cli.lightning_run import main

LIGHTNING = Path(sys.executable).with_name("lightning")


def test_the_lightning_command_is_installed_and_shows_fabric_runs_options():
    assert LIGHTNING.exists(), "run `make setup`: it installs the `lightning` command"
    out = subprocess.run([str(LIGHTNING), "run", "--help"], capture_output=True, text=True, check=True).stdout
    fabric = subprocess.run([str(Path(sys.executable).with_name("fabric")), "run", "--help"], capture_output=True,
                            text=True, check=True).stdout
    assert out.startswith("Usage: lightning run [OPTIONS] SCRIPT")
    assert out.replace("lightning run", "fabric run") == fabric  # the same options, word for word


def test_the_lightning_2_0_spelling_run_model_is_accepted(capsys):
    assert main(["run", "model", "--help"]) == 0
    assert "Usage: lightning run [OPTIONS] SCRIPT" in capsys.readouterr().out


def test_a_script_runs_through_it(tmp_path):
    script = tmp_path / "hello.py"
    # Each rank writes its own file: two processes printing to one pipe may interleave their words.
    script.write_text("import os, pathlib\nrank, world = os.environ['RANK'], os.environ['WORLD_SIZE']\n"
                      f"pathlib.Path({str(tmp_path)!r}, 'rank' + rank).write_text(f'rank {{rank}} of {{world}}')\n")
    out = subprocess.run([str(LIGHTNING), "run", "--accelerator", "cpu", "--devices", "2", str(script)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert [(tmp_path / f"rank{r}").read_text() for r in (0, 1)] == ["rank 0 of 2", "rank 1 of 2"]
