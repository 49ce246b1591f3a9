"""The DINO LightningModule (teacher EMA, freezing, clipping, schedules, stopping) and `python -m procedural_perception.cli.train`."""

import copy
import math

import pytest
import torch
from dino_helpers import TINY_OVERRIDES, fast_trainer, random_loader, tiny_dino
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from omegaconf import OmegaConf
from PIL import Image

from datamodules.images import ImageFolderDataModule
from lightning_modules.dino import DINO, NonFiniteLossError
from procedural_perception.cli.train import build_callbacks, main
from procedural_perception.core.config import compose
from procedural_perception.training.data_wait import DataWait
from procedural_perception.training.precision import resolve_precision
from procedural_perception.training.progress import progress_bar


def test_teacher_gets_no_gradient_and_moves_by_ema():
    torch.manual_seed(0)
    model = tiny_dino(momentum_teacher=0.9, freeze_last_layer_epochs=0, warmup_epochs=0)
    teacher_before = copy.deepcopy(model.teacher.state_dict())
    trainer = fast_trainer(max_steps=1)
    trainer.fit(model, random_loader(model))
    assert all(not p.requires_grad and p.grad is None for p in model.teacher.parameters())
    momentum = 0.9  # the momentum schedule's value at step 0
    student = model.student.state_dict()
    changed = 0
    for name, after in model.teacher.state_dict().items():
        expected = momentum * teacher_before[name] + (1 - momentum) * student[name]
        torch.testing.assert_close(after, expected, rtol=1e-5, atol=1e-6)
        changed += not torch.equal(after, teacher_before[name])
    assert changed > 10  # the student moved, so the teacher did too


def test_last_layer_frozen_during_first_epoch():
    torch.manual_seed(0)
    model = tiny_dino(freeze_last_layer_epochs=1, warmup_epochs=0)  # 8 images / batch 4: epoch 0 = steps 0 and 1
    last_before = copy.deepcopy(model.student.head.last_layer.state_dict())
    mlp_before = copy.deepcopy(model.student.head.mlp.state_dict())
    fast_trainer(max_steps=2).fit(model, random_loader(model))
    for name, value in model.student.head.last_layer.state_dict().items():
        assert torch.equal(value, last_before[name]), name
    assert any(not torch.equal(v, mlp_before[k]) for k, v in model.student.head.mlp.state_dict().items())

    fast_trainer(max_steps=3).fit(model, random_loader(model))  # step 2 is in epoch 1: it trains
    v = model.student.head.last_layer.parametrizations.weight.original1
    assert not torch.equal(v, last_before["parametrizations.weight.original1"])


def test_per_tensor_gradient_clipping():
    model = tiny_dino(clip_grad=3.0, freeze_last_layer_epochs=0)
    params = [p for p in model.student.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.zeros_like(p)
    big, small = params[0], params[1]
    big.grad.view(-1)[0] = 10.0  # norm 10 -> clipped to 3
    small.grad.view(-1)[0] = 1.0  # norm 1 -> unchanged
    model.configure_gradient_clipping(torch.optim.SGD(params, lr=0.1))
    assert big.grad.norm().item() == pytest.approx(3.0, rel=1e-5)
    assert small.grad.norm().item() == pytest.approx(1.0)


def test_schedules_and_param_groups():
    torch.manual_seed(0)
    model = tiny_dino(base_lr=5e-4, min_lr=1e-6, warmup_epochs=1, weight_decay=0.04, weight_decay_end=0.4)
    trainer = fast_trainer(max_steps=4)
    trainer.fit(model, random_loader(model))
    decay, no_decay = trainer.optimizers[0].param_groups
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert no_decay["weight_decay"] == 0.0
    # Last step run: 3 of 4; warm-up is one epoch = 2 steps; peak lr = 5e-4 * 4 / 256.
    peak = 5e-4 * 4 / 256
    expected_lr = 1e-6 + 0.5 * (peak - 1e-6) * (1 + math.cos(math.pi * 1 / 2))
    assert decay["lr"] == pytest.approx(expected_lr) and no_decay["lr"] == pytest.approx(expected_lr)
    assert decay["weight_decay"] == pytest.approx(0.4 + 0.5 * (0.04 - 0.4) * (1 + math.cos(math.pi * 3 / 4)))
    assert set(trainer.callback_metrics) >= {
        "train/loss", "train/lr", "train/weight_decay", "train/momentum", "train/teacher_temp",
        "train/images_per_s", "monitor/teacher_entropy", "monitor/teacher_kl_uniform",
        "monitor/student_embedding_std", "monitor/teacher_embedding_std",
    }


def test_non_finite_loss_stops_with_a_message():
    model = tiny_dino()
    with torch.no_grad():
        model.student.head.mlp[0].bias.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"DINO loss is non-finite at step 0 \(this rank: nan.*base_lr"):
        fast_trainer(max_steps=2).fit(model, random_loader(model))


@pytest.fixture
def image_folder(tmp_path):
    root = tmp_path / "images"
    for i in range(12):
        (root / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        array = (torch.rand(40, 36, 3) * 255).to(torch.uint8).numpy()
        Image.fromarray(array).save(root / f"class{i % 2}" / f"{i}.png")
    (root / "class0" / "broken.jpg").write_bytes(b"not a jpeg")
    return root


def _train_args(root, runs, *extra):
    return ["data=images", f"data.root={root}", "data.batch_size=4", "data.num_workers=0", "profile=cpu",
            *TINY_OVERRIDES, f"runs_dir={runs}", "callbacks.checkpoint.every_n_train_steps=2", *extra]


def test_images_datamodule_skips_and_counts_corrupt_files(image_folder):
    dm = ImageFolderDataModule(str(image_folder), batch_size=4, num_workers=0)
    dm.setup()
    assert len(dm.dataset) == 12 and len(dm.skipped) == 1 and "broken.jpg" in dm.skipped[0][0]
    assert dm.dataset[0].shape == (3, 40, 36)


@pytest.mark.slow
def test_cli_trains_checkpoints_and_resumes(image_folder, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(_train_args(image_folder, runs, "trainer.max_steps=3")) == 0
    run = runs / "dino_images_seed0"
    last = run / "checkpoints" / "last.ckpt"
    assert last.exists() and (run / "checkpoints" / "step00000002.ckpt").exists()
    assert list(run.glob("events.out.tfevents.*")) and (run / "hparams.yaml").exists()
    # Saved every 2 steps, and at the end of the run (step 3) too.
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 3
    capsys.readouterr()

    saved = OmegaConf.load(run / "config.yaml")  # the resolved configuration, every default filled in
    assert saved.trainer.max_steps == 3 and saved.model.student_temp == 0.1 and saved.data.root == str(image_folder)

    assert main(_train_args(image_folder, runs, "trainer.max_steps=4")) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "Resuming" in err and "Settings changed since this run started (1): trainer.max_steps: 3 -> 4" in err
    assert OmegaConf.load(run / "config.yaml").trainer.max_steps == 4  # rewritten for the resumed run
    state = torch.load(last, map_location="cpu", weights_only=False)
    assert state["global_step"] == 4 and "loss_fn.center" in state["state_dict"]

    # The same run started again with another model shape: a message naming the change, nothing touched.
    capsys.readouterr()
    assert main(_train_args(image_folder, runs, "trainer.max_steps=5", "model.out_dim=48")) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "Cannot resume" in err and "model.out_dim" in err and "run_name=" in err
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 4

    model = DINO.load_from_checkpoint(str(last), map_location="cpu")
    backbone = model.teacher_backbone
    x = torch.randn(2, 3, 32, 32)
    assert backbone(x).shape == (2, 32)
    assert backbone.forward_features(x).shape == (2, 1 + 16, 32)


def test_config_errors_name_valid_keys(image_folder, tmp_path, capsys):
    assert main(_train_args(image_folder, tmp_path, "model.dept=3")) == 2
    err = capsys.readouterr().err
    assert "Did you mean 'depth'" in err and "n_local_crops" in err
    # Not a terminal (a log file, a pipe): the message is one line, not cut at 80 columns mid-path or mid-key.
    assert any("Did you mean 'depth'" in line and "weight_decay_end" in line for line in err.splitlines())
    assert main(_train_args(image_folder, tmp_path, "trainer.max_steps=abc")) == 2
    assert "max_steps expects a int" in capsys.readouterr().err
    assert main(["data=images", "profile=cpu", f"runs_dir={tmp_path}"]) == 2  # no data.root given
    assert "data.root" in capsys.readouterr().err


def test_callbacks_enabled_flag_and_fallbacks():
    cfg = compose(["data=images", "profile=cpu", "callbacks.lr_monitor.enabled=false"])
    callbacks = build_callbacks(cfg)
    assert not any(isinstance(c, LearningRateMonitor) for c in callbacks)
    assert any(isinstance(c, ModelCheckpoint) for c in callbacks)
    bare = build_callbacks(compose(["data=images", "profile=cpu", "callbacks=none"]))
    # the fallback bar is the one a run in this stream gets: Rich in a terminal, plain lines in a log
    assert {type(c) for c in bare} == {ModelCheckpoint, type(progress_bar()), DataWait}


def test_profiles_and_precision():
    cpu = compose(["data=images", "profile=cpu"])
    assert cpu.model.depth == 4 and cpu.model.global_crop_size == 64 and cpu.data.batch_size == 32
    paper = compose(["data=kml_mixup", "profile=paper"])
    assert paper.model.arch == "vit_small_patch16_224" and paper.model.out_dim == 65536
    assert paper.data.samples_per_epoch == 1_300_000 and paper.trainer.max_epochs == 100
    assert resolve_precision("auto") == ("bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported()
                                          else "16-mixed" if torch.cuda.is_available() else "32-true")
    assert resolve_precision("16-mixed") == "16-mixed"


def test_the_paper_profile_on_a_small_cpu_is_capped_and_warned():
    from procedural_perception.training.resources import available_cores, fit_to_machine

    cfg = compose(["profile=paper"])
    assert cfg.data.num_workers == 8
    notes = fit_to_machine(cfg, cuda=False)
    assert cfg.data.num_workers == min(8, available_cores())
    assert any("profile=paper on a machine without a GPU" in n for n in notes)
    if available_cores() < 8:
        assert any("data.num_workers=8 is more than" in n for n in notes)
    assert fit_to_machine(compose(["profile=cpu"]), cuda=False) == []  # the default fits: nothing to say


def test_bad_values_and_unknown_trainer_keys_are_configuration_errors(image_folder, tmp_path, capsys):
    assert main(_train_args(image_folder, tmp_path, "data.batch_size=-4")) == 2
    assert "data.batch_size must be at least 1, got -4" in capsys.readouterr().err
    assert main(_train_args(image_folder, tmp_path, "+trainer.max_stepz=3")) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "trainer.max_stepz is not an argument of lightning.Trainer. Did you mean 'max_steps'?" in err
