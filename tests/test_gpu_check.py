"""`make gpu-check` on a machine without a GPU: it says so, checks the fallbacks and exits 0."""

import json

import pytest

from procedural_perception.cli.gpu_check import check_faiss, main


@pytest.mark.egl
def test_without_a_gpu_the_fallbacks_are_checked_and_it_exits_0(tmp_path, capsys):
    assert main(["--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["gpus"] == 0
    fallbacks = report["checks"]["fallbacks"]
    assert "error" not in fallbacks, fallbacks
    assert fallbacks["precision"] == "32-true" and fallbacks["faiss_index_on_gpu"] is False
    assert "llvmpipe" in fallbacks["egl_device"] or "surfaceless" in fallbacks["egl_device"]
    assert "No GPU visible" in capsys.readouterr().err
    assert (tmp_path / "report.md").read_text().startswith("# GPU readiness")


def test_the_faiss_check_compares_search_before_and_after_removal():
    result = check_faiss(n=3000, dim=16, queries=32, k=5)  # on the CPU both sides are CPU indexes
    assert result["equal_before_removal"] and result["equal_after_removal"] and result["removed_absent"]
