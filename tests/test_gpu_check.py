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


class _Clock:
    """A fake ``time`` for gpu_check: every check below hangs until its timeout."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self):
        return self.now

    perf_counter = monotonic


def test_hanging_checks_end_within_the_budget_and_the_rest_are_reported_skipped(tmp_path, monkeypatch):
    import subprocess

    import procedural_perception.cli.gpu_check as gpu_check

    clock, calls = _Clock(), []

    def hangs(name, rank=None, timeout=300):
        calls.append((name, rank, timeout))
        clock.now += timeout
        return {"error": f"timed out after {timeout:.0f} s"}

    def ddp_hangs(runs_dir, timeout=600):
        calls.append(("ddp", None, timeout))
        clock.now += timeout
        raise subprocess.TimeoutExpired("train", timeout)

    monkeypatch.setattr(gpu_check, "time", clock)
    monkeypatch.setattr(gpu_check, "run_child", hangs)
    monkeypatch.setattr(gpu_check, "check_ddp", ddp_hangs)
    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gpu_check.torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(gpu_check.torch.cuda, "get_device_name", lambda i: f"fake GPU {i}")
    assert gpu_check.main(["--out", str(tmp_path), "--budget-s", "300"]) == 1
    assert clock.now <= 300 and calls and all(timeout > 0 for _, _, timeout in calls)
    checks = json.loads((tmp_path / "report.json").read_text())["checks"]
    assert [c for c in checks["egl"] if "error" in c]  # the ones that ran are reported as failed
    skipped = [name for name, value in checks.items()
               for item in (value if isinstance(value, list) else [value]) if "skipped" in item]
    assert "ddp" in skipped and "budget" in checks["ddp"]["skipped"]
