"""Atomic writes: a full disk while saving a checkpoint, a visual memory or a results file gives a clear
error and leaves the previous file intact (no truncated file, no temporary left behind)."""

import errno
import os

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from procedural_perception.core.atomic import DiskFullError, atomic_write_json
from procedural_perception.core.benchmark_rows import row, write_rows
from procedural_perception.core.results import append_results, read_results
from procedural_perception.training.checkpoint_io import AtomicCheckpointIO
from procedural_perception.training.launch import trainer_arguments


def disk_full(monkeypatch):
    """From now on, flushing a file to disk fails as a full disk does (ENOSPC)."""

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_checkpoint_io_keeps_previous_checkpoint_when_disk_fills_mid_write(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, path)
    before = path.read_bytes()

    real_save = torch.save

    def half_then_enospc(obj, f, *args, **kwargs):  # the disk fills up halfway through the file
        real_save(obj, f, *args, **kwargs)
        with open(f, "r+b") as handle:
            handle.truncate(len(before) // 2)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", half_then_enospc)
    with pytest.raises(DiskFullError, match=r"No space left.*last\.ckpt.*previous file is intact"):
        io.save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before and io.load_checkpoint(path)["step"] == 1
    assert leftovers(tmp_path) == []


class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        return self.net(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class FillDiskAtStep(L.Callback):
    """Makes the disk 'full' once training reaches ``step`` (before that step's checkpoint)."""

    def __init__(self, monkeypatch, step):
        self.monkeypatch, self.step = monkeypatch, step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            disk_full(self.monkeypatch)


def test_training_with_a_full_disk_stops_with_a_clear_error_and_keeps_last_ckpt(tmp_path, monkeypatch):
    ckpt_dir = tmp_path / "checkpoints"
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, save_last=True, every_n_train_steps=2, save_top_k=-1)
    args = trainer_arguments(
        {"max_steps": 8, "accelerator": "cpu", "devices": 1, "logger": False, "enable_progress_bar": False,
         "enable_model_summary": False},
        [FillDiskAtStep(monkeypatch, step=4), checkpoint],
    )
    assert any(isinstance(p, AtomicCheckpointIO) for p in args["plugins"])
    trainer = L.Trainer(default_root_dir=tmp_path, **args)
    data = DataLoader(TensorDataset(torch.randn(64, 4)), batch_size=4)
    with pytest.raises(DiskFullError, match="previous file is intact"):
        trainer.fit(Tiny(), data)
    monkeypatch.undo()
    last = torch.load(ckpt_dir / "last.ckpt", weights_only=False)
    assert last["global_step"] == 2  # the checkpoint before the disk filled, complete and loadable
    assert leftovers(ckpt_dir) == []


def test_memory_save_on_a_full_disk_keeps_the_previous_snapshot(tmp_path, monkeypatch):
    from procedural_perception.visual_memory import VisualMemory

    g = torch.Generator().manual_seed(0)
    memory = VisualMemory(8)
    memory.add(torch.randn(20, 8, generator=g), torch.randint(0, 3, (20,), generator=g), dataset="toy", reason="test")
    folder = memory.save(tmp_path / "memory")
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    memory.add(torch.randn(5, 8, generator=g), torch.zeros(5, dtype=torch.long), dataset="toy", reason="more")
    disk_full(monkeypatch)
    with pytest.raises(DiskFullError, match="previous file is intact"):
        memory.save(folder)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == files
    assert len(VisualMemory.load(folder)) == 20


def test_results_and_benchmark_rows_on_a_full_disk_keep_previous_content(tmp_path, monkeypatch):
    results = tmp_path / "results.jsonl"
    append_results(results, [{"metric": "knn/top1", "value": 0.5}])
    write_rows("ddp", [row("x", 1.0, "images/s")], results_dir=tmp_path)
    atomic_write_json(tmp_path / "summary.json", {"a": 1})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    disk_full(monkeypatch)
    with pytest.raises(DiskFullError):
        append_results(results, [{"metric": "knn/top1", "value": 0.6}])
    with pytest.raises(DiskFullError):
        write_rows("ddp", [row("x", 2.0, "images/s")], results_dir=tmp_path)
    with pytest.raises(DiskFullError, match="summary.json"):
        atomic_write_json(tmp_path / "summary.json", {"a": 2})
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert read_results(results) == [{"metric": "knn/top1", "value": 0.5}]


def test_a_results_file_with_a_torn_last_line_reads_and_appends_cleanly(tmp_path):
    from procedural_perception.core.results import append_results, read_results

    path = tmp_path / "results.jsonl"
    append_results(path, [{"step": 1, "knn": 50.0}, {"step": 2, "knn": 51.0}])
    path.write_text(path.read_text() + '{"step": 3, "kn')  # a copy taken mid-write
    with pytest.warns(UserWarning, match="skipped 1 line"):
        assert [r["step"] for r in read_results(path)] == [1, 2]
    with pytest.warns(UserWarning, match="dropped 1 line"):
        append_results(path, [{"step": 4}])
    assert [r["step"] for r in read_results(path)] == [1, 2, 4]  # valid again: no warning, nothing else lost
