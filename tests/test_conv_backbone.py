"""A convolutional timm backbone for DINO, end to end: `model.arch=resnet10t` with the cpu profile trains a
few steps, resumes (BatchNorm state included), loads as an encoder with global and dense features,
runs the kNN, segmentation, PCA-R², 2AFC and feature-map evaluations, has a random-init twin, and
exports to the same outputs; a ViT-only setting beside a convnet is refused with a message naming both."""

import json
import math

import pytest
import timm
import torch
from PIL import Image
from test_in_context import SIZE, planted

from lightning_modules.backbones import check_vit_only_arguments, feature_stride
from lightning_modules.dino import DINO
from lightning_modules.encoders import ConvEncoder, ViTEncoder, build_encoder, random_twin
from procedural_perception.cli.export import STATE_DICT
from procedural_perception.cli.export import main as export
from procedural_perception.cli.train import main as train
from procedural_perception.core.config import compose
from procedural_perception.evaluations.feature_maps import feature_grid
from procedural_perception.evaluations.knn import KNNClassification
from procedural_perception.evaluations.knn_segmentation import evaluate_knn_segmentation
from procedural_perception.evaluations.pca_r2 import evaluate_pca_r2
from procedural_perception.evaluations.twoafc import TwoAFC

ARCH = "resnet10t"  # timm's smallest ResNet (5M parameters, stride 32, 512-d pooled feature)
# 32 px global / 16 px local crops and a small head; the cpu profile gives the rest of the recipe.
TINY_CONV = [f"model.arch={ARCH}", "model.out_dim=64", "model.head_hidden_dim=64", "model.head_bottleneck_dim=16",
             "model.global_crop_size=32", "model.local_crop_size=16", "model.n_local_crops=2", "model.grid_images=1"]


def _train_args(root, runs, *extra):
    return ["data=images", f"data.root={root}", "data.batch_size=4", "data.num_workers=0", "profile=cpu",
            "callbacks=none", "trainer.accelerator=cpu", *TINY_CONV, f"runs_dir={runs}", "run_name=conv", *extra]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a shared, loaded machine two threads of small convolutions wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread):
    """A 2-step run resumed for a third step: (its last.ckpt, the console output of the resume)."""
    root = tmp_path_factory.mktemp("conv")
    images = root / "images"
    for i in range(8):
        (images / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        array = (torch.rand(40, 36, 3, generator=torch.Generator().manual_seed(i)) * 255).to(torch.uint8).numpy()
        Image.fromarray(array).save(images / f"class{i % 2}" / f"{i}.png")
    assert train(_train_args(images, root / "runs", "trainer.max_steps=2")) == 0
    last = root / "runs" / "conv" / "checkpoints" / "last.ckpt"
    first = torch.load(last, map_location="cpu", weights_only=False)
    assert train(_train_args(images, root / "runs", "trainer.max_steps=3")) == 0
    return last, first


@pytest.fixture(scope="module")
def encoder(trained):
    """The checkpoint's teacher as a frozen encoder (``build_encoder``)."""
    return build_encoder(str(trained[0]))


@pytest.mark.slow
def test_training_resumes_with_the_batchnorm_state(trained):
    last, first = trained
    state = torch.load(last, map_location="cpu", weights_only=False)
    assert first["global_step"] == 2 and state["global_step"] == 3
    assert state["hyper_parameters"]["arch"] == ARCH and state["hyper_parameters"]["depth"] is None  # profile's ViT depth dropped
    # BatchNorm counts its batches: one teacher forward per step (the two global crops together), two
    # for the student (global crops, then local crops). Resumed, the counts go on from the checkpoint.
    key = "{}.backbone.bn1.num_batches_tracked"
    assert int(first["state_dict"][key.format("teacher")]) == 2 and int(first["state_dict"][key.format("student")]) == 4
    assert int(state["state_dict"][key.format("teacher")]) == 3 and int(state["state_dict"][key.format("student")]) == 6
    running = "teacher.backbone.layer4.0.bn2.running_var"
    assert not torch.equal(state["state_dict"][running], first["state_dict"][running])  # the teacher's statistics move
    assert any(k.startswith("optimizer_states") or k == "optimizer_states" for k in state)


@pytest.mark.slow
def test_checkpoint_loads_as_an_encoder_with_global_and_patch_features(trained, encoder):
    last, _ = trained
    assert isinstance(encoder, ConvEncoder) and encoder.image_size == 32 and encoder.checkpoint == str(last)
    assert encoder.embed_dim == 512 and encoder.patch_size == 32  # the ResNet's stride plays the patch size
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())
    images = torch.rand(3, 3, 64, 96)
    embedding, patches = encoder(images), encoder.patch_features(images)
    assert embedding.shape == (3, 512) and patches.shape == (3, 512, 2, 3)
    # The global embedding is the average of the dense features (ResNet: plain global average pooling).
    torch.testing.assert_close(embedding, patches.mean(dim=(2, 3)))
    teacher = DINO.load_from_checkpoint(str(last), map_location="cpu").teacher_backbone.eval()
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(embedding, teacher((images - mean) / std))


@pytest.mark.slow
def test_random_twin_has_the_checkpoints_architecture(trained, encoder):
    last, _ = trained
    twin, again = random_twin(last), random_twin(last)
    assert isinstance(twin, ConvEncoder) and twin.embed_dim == 512 and twin.image_size == 32
    assert twin.name == "random_init:last" and not twin.training
    images = torch.rand(2, 3, 32, 32)
    assert torch.equal(twin(images), again(images))  # the same seed, the same weights
    assert not torch.allclose(twin(images), encoder(images))


@pytest.mark.slow
def test_knn_segmentation_pca_2afc_and_feature_maps_run_on_the_conv_encoder(encoder):
    knn = KNNClassification(memory="digits", query="digits", memory_size=120, query_size=40, ks=(1, 5), audit_k=5,
                            batch_size=64, grid_queries=0)
    result = knn.evaluate(encoder)
    top1 = [v for k, v in result.items() if k.endswith("/top1")]  # percent, per voting rule and k
    assert len(top1) >= 2 and all(0.0 <= v <= 100.0 for v in top1), result
    seg = evaluate_knn_segmentation(encoder, planted(4, 1), planted(4, 2), k=5, progress=False)
    assert seg["knn_seg/queries"] == 4 and 0.0 <= seg["knn_seg/miou"] <= 1.0
    assert 0 < seg["knn_seg/memory_patches"] <= 4 * (SIZE // 32) ** 2  # 4 x 4 cells of 32 px per reference image
    pca = evaluate_pca_r2(encoder, planted(3, 3), progress=False)
    assert pca["pca_r2/images"] == 3 and math.isfinite(pca["pca_r2"]) and pca["pca_r2"] <= 1.0
    twoafc = TwoAFC(limit=4, image_size=64).evaluate(encoder)
    assert twoafc["twoafc/triplets"] == 4 and 0.0 <= twoafc["twoafc/score"] <= 1.0
    grid = feature_grid(encoder, torch.rand(2, 3, SIZE, SIZE), k=3)  # image, PCA-RGB map, K-means map per row
    assert grid.shape[0] == 3 and grid.shape[-1] > 3 * SIZE


@pytest.mark.slow
def test_export_rebuilds_the_same_network(trained, encoder, tmp_path):
    last, _ = trained
    out = tmp_path / "exported"
    assert export([str(last), str(out)]) == 0
    images = torch.rand(3, 3, 64, 64)
    expected = encoder(images)

    model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    config = timm.data.resolve_data_config({}, model=model)
    assert config["input_size"] == (3, 32, 32)
    mean, std = torch.tensor(config["mean"]).view(1, 3, 1, 1), torch.tensor(config["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.equal(model((images - mean) / std), expected)

    meta = json.loads((out / "export.json").read_text())
    assert meta["architecture"] == ARCH and meta["model_args"] == {"num_classes": 0}
    plain = timm.create_model(meta["architecture"], pretrained=False, **meta["model_args"]).eval()
    plain.load_state_dict(torch.load(out / STATE_DICT, weights_only=True))
    with torch.no_grad():
        assert torch.equal(plain((images - mean) / std), expected)


def test_a_vit_only_setting_with_a_convnet_is_refused_with_the_arch_and_key(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"model.arch=resnet18 is a convolutional network, but model.depth=4"):
        DINO(arch="resnet18", depth=4)
    with pytest.raises(ValueError, match=r"model.patch_size=8, model.num_heads=2 only applies to a ViT"):
        check_vit_only_arguments("resnet10t", patch_size=8, num_heads=2)
    check_vit_only_arguments("vit_tiny_patch16_224", patch_size=8, depth=2)  # fine for a ViT
    # On the command line: the same message, before anything trains.
    assert train(["data=images", f"data.root={tmp_path}", "profile=cpu", f"model.arch={ARCH}", "model.embed_dim=64",
                  f"runs_dir={tmp_path / 'runs'}"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"model.arch={ARCH} is a convolutional network, but model.embed_dim=64" in err
    assert not (tmp_path / "runs").exists()


def test_profile_vit_shape_is_dropped_for_a_convnet_but_kept_for_a_vit():
    conv = compose(["profile=cpu", "model.arch=resnet18"]).model
    assert (conv.arch, conv.depth, conv.patch_size) == ("resnet18", None, None)
    assert conv.global_crop_size == 64 and conv.out_dim == 1024  # the rest of the cpu recipe applies
    vit = compose(["profile=cpu", "model.arch=vit_small_patch16_224"]).model
    assert (vit.depth, vit.patch_size) == (4, 16)
    assert compose(["profile=cpu", "model.arch=resnet18", "model.depth=3"]).model.depth == 3  # typed: kept (refused later)


def test_unknown_arch_and_unsupported_networks_say_what_to_pick():
    with pytest.raises(ValueError, match="Did you mean resnet18"):
        DINO(arch="resnet_18")
    small = dict(out_dim=16, head_hidden_dim=16, head_bottleneck_dim=8)
    with pytest.raises(ValueError, match="swin_tiny_patch4_window7_224 cannot take the 96 px crops"):
        DINO(arch="swin_tiny_patch4_window7_224", **small)  # channels-last tokens at a fixed size
    with pytest.raises(ValueError, match="convnext_atto cannot take the 16 px crops.*Raise model.local_crop_size"):
        DINO(arch="convnext_atto", global_crop_size=32, local_crop_size=16, **small)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["convnext_atto", "regnetx_002"])
def test_other_convnet_families_build_and_train_a_step(arch):
    from dino_helpers import fast_trainer, random_loader

    model = DINO(arch=arch, out_dim=32, head_hidden_dim=32, head_bottleneck_dim=8, global_crop_size=48,
                 local_crop_size=32, n_local_crops=2, drop_path_rate=0.1 if arch.startswith("convnext") else 0.0)
    fast_trainer(max_steps=1).fit(model, random_loader(model))
    encoder = ConvEncoder(model.teacher_backbone.eval(), arch, image_size=32)
    images = torch.rand(2, 3, 64, 64)
    assert encoder(images).shape == (2, model.teacher_backbone.num_features)
    assert encoder.patch_features(images).shape == (2, encoder.embed_dim, 2, 2)
    assert feature_stride(model.teacher_backbone) == 32


def test_vit_checkpoints_still_load_as_vit_encoders(tmp_path):
    from test_eval_cli import tiny_checkpoint

    assert isinstance(build_encoder(tiny_checkpoint(tmp_path / "vit.ckpt")), ViTEncoder)


def test_sgd_optimizer_for_convnets_keeps_the_parameter_groups():
    """DINO's convnet recipe uses SGD (momentum 0.9); weight decay still skips biases and norm scales."""
    from dino_helpers import fast_trainer, random_loader

    model = DINO(arch=ARCH, optimizer="sgd", out_dim=32, head_hidden_dim=32, head_bottleneck_dim=8,
                 global_crop_size=32, local_crop_size=16, n_local_crops=2, weight_decay=1e-4, weight_decay_end=1e-4)
    trainer = fast_trainer(max_steps=2)
    trainer.fit(model, random_loader(model))
    optimizer = trainer.optimizers[0]
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["momentum"] == 0.9
    decay, no_decay = optimizer.param_groups
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert decay["weight_decay"] == pytest.approx(1e-4) and no_decay["weight_decay"] == 0.0
    assert optimizer.state  # momentum buffers: the step ran
    with pytest.raises(ValueError, match="model.optimizer='lars' is not one of adamw, sgd"):
        DINO(arch=ARCH, optimizer="lars")


@pytest.mark.slow
def test_an_evaluation_inside_a_fit_leaves_the_teachers_batchnorm_statistics(tmp_path):
    """The evaluation callbacks run the teacher in eval mode: its BatchNorm statistics do not move with the
    evaluation images, and training mode comes back afterwards."""
    import lightning as L
    from dino_helpers import fast_trainer, random_loader

    from callbacks.evaluation import PeriodicEvaluation

    class Snapshot(L.Callback):
        def __init__(self):
            self.states = []

        def on_train_epoch_end(self, trainer, pl_module):
            self.states.append(({k: v.clone() for k, v in pl_module.teacher_backbone.state_dict().items()},
                                pl_module.teacher_backbone.training))

    model = DINO(arch=ARCH, out_dim=32, head_hidden_dim=32, head_bottleneck_dim=8, global_crop_size=32,
                 local_crop_size=16, n_local_crops=2)
    task = KNNClassification(memory="digits", query="digits", memory_size=60, query_size=20, image_size=32, ks=(1, 5),
                             audit_k=5, batch_size=64, grid_queries=0)
    before, after = Snapshot(), Snapshot()
    trainer = fast_trainer(max_steps=2, callbacks=[before, PeriodicEvaluation(task), after], default_root_dir=tmp_path)
    trainer.fit(model, random_loader(model))  # 8 images in batches of 4: one epoch, one evaluation
    assert any(k.startswith("knn/") and k.endswith("/top1") for k in trainer.callback_metrics)
    (state_before, mode_before), (state_after, mode_after) = before.states[0], after.states[0]
    assert mode_before and mode_after  # train mode restored
    for name, value in state_before.items():
        assert torch.equal(value, state_after[name]), name
