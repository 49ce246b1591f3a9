"""The stream: pure blocks, the same samples whatever the layout, disjoint shards, exact resume."""

import hashlib

import pytest
import torch

from datamodules.procedural.blocks import BlockConfig, BlockMaker
from datamodules.procedural.stream import Layout, ProceduralStream, blocks_per_epoch, slot_blocks

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = BlockConfig(process="kml_mixup", seed=3, image_size=48, block_size=8, programs_per_block=2, reuse=4.0)
EPOCH = 8 * 12  # 12 blocks: a multiple of 1, 2, 3, 4 and 6 slots


def _digest(image: torch.Tensor) -> str:  # also used on float batches
    return hashlib.sha1(image.numpy().tobytes()).hexdigest()


def _stream(**kw) -> ProceduralStream:
    return ProceduralStream(SMALL, EPOCH, shuffle_blocks=2, **kw)


def test_blocks_are_disjoint_and_cover_the_epoch():
    for slots in (1, 2, 3, 4, 6):
        blocks = blocks_per_epoch(EPOCH, 8, slots)
        assert blocks == 12
        seen = [b for s in range(slots) for b in slot_blocks(1, blocks, Layout(s // 2 if slots % 2 == 0 else s,
                                                                                   slots // 2 if slots % 2 == 0 else slots,
                                                                                   s % 2 if slots % 2 == 0 else 0,
                                                                                   2 if slots % 2 == 0 else 1))]
        assert sorted(seen) == list(range(12, 24)), f"{slots} slots: blocks overlap or are missing"
    # Rounded down to a multiple of the slot count, so every rank yields the same number of batches.
    assert blocks_per_epoch(8 * 13, 8, 4) == 12


@pytest.mark.egl
def test_block_is_a_pure_function_of_seed_and_index():
    a, b = BlockMaker(SMALL), BlockMaker(SMALL)
    first = a(5)
    assert first.shape == (8, 3, 48, 48) and first.dtype == torch.uint8
    assert torch.equal(first, b(5)), "same (seed, block) must be byte-identical"
    assert not torch.equal(first, a(6))
    other_seed = BlockMaker(BlockConfig(**{**SMALL.__dict__, "seed": 4}))
    assert not torch.equal(first, other_seed(5))
    assert a.stats.reuse_factor == pytest.approx(SMALL.reuse_factor) and SMALL.reuse_factor >= 4


@pytest.mark.egl
def test_same_samples_whatever_workers_and_world_size():
    reference = {}
    for index, image in _stream().indexed_samples(Layout(), epoch=0):
        reference[index] = _digest(image)
    assert sorted(reference) == list(range(EPOCH))
    for world, workers in ((2, 1), (1, 3), (2, 2)):
        got = {}
        for rank in range(world):
            stream = _stream(rank=rank, world_size=world)
            for worker in range(workers):
                for index, image in stream.indexed_samples(Layout(rank, world, worker, workers), epoch=0):
                    assert index not in got, "a sample was produced twice"
                    got[index] = _digest(image)
        assert got == reference, f"world {world} x workers {workers} changed the samples"


@pytest.mark.egl
def test_resume_reproduces_the_stream():
    stream = _stream()
    layout = Layout(0, 1, 1, 2)  # worker 1 of 2
    full = [(i, _digest(x)) for i, x in stream.indexed_samples(layout, epoch=1)]
    for start in (0, 5, 16, 23, len(full)):  # inside a window, at a window edge, at the end
        resumed = [(i, _digest(x)) for i, x in _stream().indexed_samples(layout, epoch=1, start=start)]
        assert resumed == full[start:]
    # The loader's batch count maps to each worker's position (workers take turns batch by batch).
    stream.batch_size = 4
    stream.batches_done = 5  # batches 0, 2, 4 came from worker 0 and 1, 3 from worker 1
    assert stream.slot_start(Layout(0, 1, 0, 2)) == 12 and stream.slot_start(Layout(0, 1, 1, 2)) == 8


@pytest.mark.egl
def test_datamodule_state_dict_resumes_exactly():
    from datamodules.shaders import ShaderDataModule

    def make():
        return ShaderDataModule("kml", seed=1, image_size=48, batch_size=4, num_workers=0, samples_per_epoch=64,
                                block_size=8, programs_per_block=2, reuse=4.0, shuffle_blocks=2)

    full = [b.clone() for b in make().train_dataloader()]
    assert len(full) == 16 and full[0].shape == (4, 3, 48, 48) and full[0].dtype == torch.float32
    dm = make()
    it = iter(dm.train_dataloader())
    head = [next(it) for _ in range(6)]
    state = dm.state_dict()
    assert state["batches_consumed"] == 6 and state["epoch"] == 0
    resumed = make()
    resumed.load_state_dict(state)
    tail = list(resumed.train_dataloader())
    assert all(torch.equal(a, b) for a, b in zip(head + tail, full, strict=True)) and len(head + tail) == len(full)
    assert resumed.state_dict()["epoch"] == 1  # the next epoch starts with fresh blocks
    second_epoch = next(iter(resumed.train_dataloader()))
    assert not any(torch.equal(second_epoch, b) for b in full)


@pytest.mark.egl
def test_transform_receives_float_images():
    from datamodules.shaders import ShaderDataModule

    seen = []

    def transform(x):
        seen.append((x.dtype, tuple(x.shape), float(x.min()), float(x.max())))
        return [x, x[:, :16, :16]]

    dm = ShaderDataModule("shaders", image_size=32, batch_size=4, num_workers=0, samples_per_epoch=8, block_size=8,
                          programs_per_block=2, transform=transform)
    batch = next(iter(dm.train_dataloader()))
    assert batch[0].shape == (4, 3, 32, 32) and batch[1].shape == (4, 3, 16, 16)
    assert all(d == torch.float32 and s == (3, 32, 32) and 0 <= lo <= hi <= 1 for d, s, lo, hi in seen)


def _rank_digests(config_args):
    stream = ProceduralStream(BlockConfig(**config_args), EPOCH, shuffle_blocks=2)
    layout = stream.layout()  # rank and world size from the gloo process group
    return layout.world_size, {i: _digest(x) for i, x in stream.indexed_samples(layout, epoch=0)}


@pytest.mark.egl
@pytest.mark.ddp
@pytest.mark.slow
def test_two_real_ranks_split_the_same_samples():
    from distributed import run_distributed

    results = run_distributed(_rank_digests, world=2, args=(SMALL.__dict__,))
    assert [w for w, _ in results] == [2, 2]
    a, b = results[0][1], results[1][1]
    assert not set(a) & set(b), "ranks must get disjoint samples"
    single = {i: _digest(x) for i, x in _stream().indexed_samples(Layout(), epoch=0)}
    assert {**a, **b} == single


@pytest.mark.egl
@pytest.mark.slow
def test_real_dataloader_workers_give_the_same_samples():
    from torch.utils.data import DataLoader

    single = {i: _digest(x) for i, x in _stream().indexed_samples(Layout(), epoch=0)}
    stream = _stream()
    stream.indexed = True
    got = {}
    for indices, images in DataLoader(stream, batch_size=8, num_workers=2, multiprocessing_context="spawn"):
        got.update({int(i): _digest(x) for i, x in zip(indices, images, strict=True)})
    assert got == single


class _Recorder(__import__("lightning").LightningModule):
    """Records a digest of every training batch; one parameter so the optimiser has something to step."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen = []

    def training_step(self, batch, batch_idx):
        self.seen.append(_digest(batch))
        return (self.weight * batch.mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.egl
@pytest.mark.slow
def test_lightning_checkpoint_resumes_the_stream(tmp_path):
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from datamodules.shaders import ShaderDataModule

    def make():
        return ShaderDataModule("kml", seed=2, image_size=32, batch_size=4, num_workers=0, samples_per_epoch=64,
                                block_size=8, programs_per_block=2, reuse=4.0, shuffle_blocks=2)

    def trainer(steps, **kw):
        return L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, **kw)

    full = _Recorder()
    trainer(7, enable_checkpointing=False).fit(full, datamodule=make())
    first = _Recorder()
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1)
    trainer(3, callbacks=[checkpoint]).fit(first, datamodule=make())
    resumed = _Recorder()
    trainer(7, enable_checkpointing=False).fit(resumed, datamodule=make(), ckpt_path=checkpoint.best_model_path or
                                               str(next((tmp_path / "ckpt").glob("*.ckpt"))))
    assert first.seen == full.seen[:3]
    assert resumed.seen == full.seen[3:7]


@pytest.mark.egl
def test_batched_worker_items_equal_collated_samples():
    """Workers yielding whole float batches give exactly the batches the loader would collate itself."""
    from torch.utils.data import DataLoader

    from datamodules.shaders import ShaderDataModule

    dm = ShaderDataModule("kml", seed=3, image_size=32, batch_size=5, num_workers=2, samples_per_epoch=24, block_size=6,
                          programs_per_block=2, reuse=4.0, shuffle_blocks=1)
    batched = [b.clone() for b in dm.train_dataloader()]
    assert dm.dataset.batched and [len(b) for b in batched] == [5, 5, 5, 5, 2, 2]  # 12 samples per worker
    dm.dataset.batched = False
    from datamodules.procedural import egl

    # Forked workers hang at their first draw when this process already holds a context (earlier tests).
    collated = list(DataLoader(dm.dataset, batch_size=5, num_workers=2,
                               multiprocessing_context="spawn" if egl.context_exists() else None))
    assert all(torch.equal(a, b) for a, b in zip(batched, collated, strict=True))
    assert batched[0].dtype == torch.float32 and 0 <= float(batched[0].min()) and float(batched[0].max()) <= 1


def _crops(x):
    return [x, x[:, :16, :16]]


@pytest.mark.egl
@pytest.mark.slow
def test_kept_workers_give_the_per_epoch_batches_and_are_not_restarted():
    """keep_workers (the default): one worker iterator for the whole run gives exactly the batches that new
    workers each epoch give (crop lists collated in the worker, short last batches included), its worker
    process lives through the epochs, and a stop mid-epoch continues where it stopped."""
    from datamodules.shaders import ShaderDataModule

    def make(keep):
        return ShaderDataModule("kml", seed=3, image_size=32, batch_size=5, num_workers=1, samples_per_epoch=12,
                                block_size=6, programs_per_block=2, reuse=4.0, shuffle_blocks=1, keep_workers=keep,
                                transform=_crops, prefetch_batches=4)

    def flat(batch):
        return torch.cat([crop.flatten() for crop in batch])

    per_epoch = make(False)
    loader = per_epoch.train_dataloader()
    expected = [[flat(b) for b in loader] for _ in range(3)]
    assert [len(e) for e in expected] == [3, 3, 3]  # 12 samples: 5 + 5 + 2
    kept = make(True)
    loader = kept.train_dataloader()
    got, pids = [], []
    for _ in range(3):
        got.append([flat(b) for b in loader])
        pids.append([w.pid for w in loader._workers._workers])
    assert all(torch.equal(a, b) for ea, eb in zip(expected, got, strict=True) for a, b in zip(ea, eb, strict=True))
    assert pids[0] == pids[1] == pids[2]
    assert kept.epoch == 3 and kept.batches_consumed == 0
    partial = make(True)
    loader = partial.train_dataloader()
    it = iter(loader)
    head = [flat(next(it)) for _ in range(2)]
    del it  # a consumer that stops mid-epoch; the next epoch loop continues the same epoch
    rest = [flat(b) for b in loader] + [flat(b) for b in loader]
    assert all(torch.equal(a, b) for a, b in zip(head + rest, expected[0] + expected[1], strict=True))


def test_prefetch_batches_is_checked():
    from datamodules.shaders import ShaderDataModule
    from procedural_perception.core.config import ConfigError

    with pytest.raises(ConfigError, match="prefetch_batches"):
        ShaderDataModule("kml", prefetch_batches=0)


@pytest.mark.egl
def test_teardown_stops_kept_workers_and_a_later_epoch_restarts_them():
    from datamodules.shaders import ShaderDataModule

    dm = ShaderDataModule("kml", seed=3, image_size=32, batch_size=6, num_workers=1, samples_per_epoch=12,
                          block_size=6, programs_per_block=2, reuse=4.0, shuffle_blocks=1)
    loader = dm.train_dataloader()
    first = [b.clone() for b in loader]
    processes = list(loader._workers._workers)
    dm.teardown("fit")
    assert loader._workers is None and not any(p.is_alive() for p in processes)
    second = [b.clone() for b in loader]  # epoch 1, from new workers
    reference = ShaderDataModule("kml", seed=3, image_size=32, batch_size=6, num_workers=0, samples_per_epoch=12,
                                 block_size=6, programs_per_block=2, reuse=4.0, shuffle_blocks=1).train_dataloader()
    expected = [[b.clone() for b in reference] for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(first + second, expected[0] + expected[1], strict=True))
    dm.teardown("fit")
