"""The bad-input sweep, for the cases no other test file covers (see the README's troubleshooting
table for where the others live): user shader programs that do not compile, odd files in a training
image folder, a non-finite loss through ``procedural_perception.cli.train``, ``forget`` of unknown ids through ``procedural_perception.cli.memory``,
and one DDP rank dying or hanging."""

import io
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from dino_helpers import TINY_OVERRIDES
from PIL import Image
from tiny_training import launch_two_ranks

ROOT = Path(__file__).resolve().parents[1]
VALID_SHADER = (
    "void mainImage(out vec4 fragColor, in vec2 fragCoord) {\n"
    "    vec2 uv = fragCoord / iResolution.xy;\n"
    "    fragColor = vec4(0.5 + 0.5 * cos(iTime + uv.xyx * 6.0 + vec3(0, 2, 4)), 1.0);\n}\n"
)
BROKEN_SHADER = "void mainImage(out vec4 fragColor, in vec2 fragCoord) { fragColor = vec4(undefined_thing); }\n"


def shader_module(folder: Path):
    from datamodules.shaders import ShaderDataModule

    return ShaderDataModule(process="shaders", image_size=32, batch_size=4, num_workers=0, samples_per_epoch=32,
                            block_size=8, programs_per_block=2, shader_dir=str(folder))


@pytest.mark.egl
def test_user_program_that_fails_to_compile_is_replaced_and_counted(tmp_path):
    (tmp_path / "good.glsl").write_text(VALID_SHADER)
    for i in range(3):
        (tmp_path / f"broken{i}.glsl").write_text(BROKEN_SHADER)
    module = shader_module(tmp_path)
    batches = list(module.train_dataloader())  # 4 blocks x 2 program slots, each drawn from the folder
    assert len(batches) == 8 and all(b.shape == (4, 3, 32, 32) and torch.isfinite(b).all() for b in batches)
    stats = module.dataset.maker().stats
    assert stats.compile_failures >= 1 and stats.programs == 8  # every broken draw replaced, none fatal


@pytest.mark.egl
def test_only_programs_that_fail_to_compile_is_a_clear_error(tmp_path):
    (tmp_path / "broken.glsl").write_text(BROKEN_SHADER)
    with pytest.raises(RuntimeError, match="failed to compile.*do its programs compile"):
        next(iter(shader_module(tmp_path).train_dataloader()))


def test_training_image_folder_skips_broken_files_and_converts_modes(tmp_path):
    """datamodules/images.py (training on a user's folder); procedural_perception/datasets/labelled.py has its own test."""
    from datamodules.images import ImageFolderDataModule

    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    (root / "empty_class").mkdir()
    Image.new("L", (20, 16), 128).save(root / "a" / "grey.png")
    Image.new("RGBA", (20, 16), (10, 200, 10, 128)).save(root / "a" / "rgba.png")
    Image.fromarray(np.full((16, 20), 65535, dtype=np.uint16)).save(root / "a" / "sixteen.png")
    Image.new("CMYK", (20, 16), (0, 255, 255, 0)).save(root / "a" / "cmyk.jpg")
    Image.new("RGB", (20, 16), (0, 0, 255)).save(root / "a" / "rgb.jpg")
    (root / "a" / "zero.png").write_bytes(b"")
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    (root / "a" / "truncated.jpg").write_bytes(buffer.getvalue()[:300])
    (root / "a" / "fake.png").write_text("not a png")
    module = ImageFolderDataModule(str(root), batch_size=2, num_workers=0)
    module.setup()
    assert sorted(Path(p).name for p, _ in module.skipped) == ["fake.png", "truncated.jpg", "zero.png"]
    images = {Path(str(f)).name: module.dataset[i] for i, f in enumerate(module.dataset.files)}
    assert set(images) == {"grey.png", "rgba.png", "sixteen.png", "cmyk.jpg", "rgb.jpg"}
    for image in images.values():
        assert image.shape == (3, 16, 20) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
    torch.testing.assert_close(images["sixteen.png"][:, 0, 0], torch.ones(3))
    assert images["cmyk.jpg"][0, 0, 0] > 0.9 and images["cmyk.jpg"][1, 0, 0] < 0.1  # CMYK red stays red
    only_bad = tmp_path / "bad"
    (only_bad / "x").mkdir(parents=True)
    (only_bad / "x" / "zero.jpg").write_bytes(b"")
    with pytest.raises((ValueError, FileNotFoundError), match=str(only_bad)):
        ImageFolderDataModule(str(only_bad), batch_size=2, num_workers=0).setup()


@pytest.mark.slow
def test_non_finite_loss_stops_training_with_a_message_and_keeps_the_checkpoint(tmp_path, capsys):
    from procedural_perception.cli.train import main

    folder = tmp_path / "imgs" / "c"
    folder.mkdir(parents=True)
    for i in range(8):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    runs = tmp_path / "runs"
    args = ["data=images", f"data.root={tmp_path / 'imgs'}", "data.batch_size=4", "data.num_workers=0", "profile=cpu",
            *TINY_OVERRIDES, f"runs_dir={runs}", "trainer.max_steps=6", "callbacks.checkpoint.every_n_train_steps=2",
            "callbacks.progress_bar.enabled=false",
            "+callbacks.poison={_target_: fault_injection.PoisonWeights, step: 3}"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "Training stopped" in err and "non-finite" in err and "base_lr" in err
    last = next(runs.glob("*/checkpoints/last.ckpt"))
    state = torch.load(last, weights_only=False)
    assert state["global_step"] == 2  # the last good checkpoint, not overwritten by the broken state
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())


def test_forget_of_unknown_ids_changes_nothing_and_says_which(tmp_path, capsys):
    from procedural_perception.cli.memory import main
    from procedural_perception.visual_memory import VisualMemory

    g = torch.Generator().manual_seed(0)
    memory = VisualMemory(8, path=tmp_path / "memory")
    memory.add(torch.randn(10, 8, generator=g), torch.randint(0, 2, (10,), generator=g), dataset="toy", reason="test")
    memory.save()
    memory.close()
    before = (tmp_path / "memory" / "memory.sqlite").read_bytes()
    assert main(["forget", str(tmp_path / "memory"), "--ids", "3", "999", "--reason", "request"]) == 2
    out = capsys.readouterr()
    message = " ".join((out.out + out.err).split())  # Rich wraps long lines
    assert "Unknown ids" in message and "[999]" in message and "Nothing was removed" in message
    assert (tmp_path / "memory" / "memory.sqlite").read_bytes() == before
    assert main(["forget", str(tmp_path / "memory"), "--sources", "nope.jpg", "--reason", "request"]) == 2
    assert len(VisualMemory.load(tmp_path / "memory")) == 10


@pytest.mark.slow
@pytest.mark.ddp
def test_one_rank_dying_or_hanging_makes_the_other_exit_with_a_clear_message(tmp_path):
    timeout_s = 15
    runs = {
        "die": launch_two_ranks(tmp_path / "die", "--fail-rank", "1", "--fail-step", "3", "--fail", "die"),
        "hang": launch_two_ranks(tmp_path / "hang", "--fail-rank", "1", "--fail-step", "3", "--fail", "hang",
                                 "--ddp-timeout-s", str(timeout_s)),
    }
    try:
        for kind, (survivor, _) in runs.items():
            out = survivor.communicate(timeout=240)[0]
            assert (tmp_path / kind / "loss_rank0.txt").exists(), out[-3000:]
            stalled_since = (tmp_path / kind / "loss_rank0.txt").stat().st_mtime  # its last completed step
            waited = time.time() - stalled_since
            assert survivor.returncode not in (0, None), out[-3000:]
            message = " ".join(out.split())
            assert "Rank 0 of 2: another training process stopped or stopped answering" in message, out[-3000:]
            assert "run the same command again" in message
            assert waited < (timeout_s + 60 if kind == "hang" else 60), f"{kind}: took {waited:.0f} s to exit"
            steps = (tmp_path / kind / "loss_rank0.txt").read_text().split()[::2]
            assert steps == ["0", "1", "2", "3"]  # trained normally until the other rank failed at step 3
    finally:
        for procs in runs.values():
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGKILL)
                    p.wait()
    assert runs["die"][1].returncode == -signal.SIGKILL


@pytest.mark.slow
@pytest.mark.ddp
def test_a_rank_ten_times_slower_is_named_in_a_warning_and_nothing_hangs(tmp_path):
    ranks = launch_two_ranks(tmp_path / "slow", "--max-steps", "16", "--fail-rank", "1", "--fail-step", "0",
                             "--fail", "slow")
    try:
        outputs = [p.communicate(timeout=240)[0] for p in ranks]
    finally:
        for p in ranks:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in ranks] == [0, 0], outputs[0][-3000:]
    message = " ".join(outputs[0].split())
    assert "Rank 1 of 2 is" in message and "slower than the median rank" in message


@pytest.mark.slow
@pytest.mark.ddp
def test_a_node_lost_during_an_evaluation_gather_makes_the_other_exit_with_a_clear_message(tmp_path):
    survivor, lost = launch_two_ranks(tmp_path / "eval", "--max-steps", "20", "--fail-rank", "1", "--fail-step", "3",
                                      "--fail", "die-in-eval", "--ddp-timeout-s", "30")
    try:
        out = survivor.communicate(timeout=240)[0]
        lost.wait(timeout=60)
    finally:
        for p in (survivor, lost):
            if p.poll() is None:
                p.kill()
    assert lost.returncode == -signal.SIGKILL
    assert survivor.returncode not in (0, None), out[-3000:]
    message = " ".join(out.split())
    assert "Rank 0 of 2: another training process stopped or stopped answering" in message, out[-3000:]
    steps = (tmp_path / "eval" / "loss_rank0.txt").read_text().split()[::2]
    assert steps[-1] == "2"  # steps 0-2 trained, then the evaluation after the third step, and it stopped there
