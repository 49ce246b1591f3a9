"""`make export`: the teacher backbone as a timm folder and a plain state_dict, equal embeddings."""

import json

import pytest
import timm
import torch
from test_eval_cli import tiny_checkpoint

from lightning_modules.encoders import build_encoder
from procedural_perception.cli.export import STATE_DICT, main


@pytest.mark.slow
def test_export_round_trip_gives_the_checkpoints_embeddings(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "tiny.ckpt")
    out = tmp_path / "exported"
    assert main([ckpt, str(out)]) == 0
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", STATE_DICT}
    images = torch.rand(3, 3, 64, 64)
    expected = build_encoder(ckpt)(images)  # CLS token of the checkpoint's teacher, ImageNet-normalised input

    model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    config = timm.data.resolve_data_config({}, model=model)
    mean, std = torch.tensor(config["mean"]).view(1, 3, 1, 1), torch.tensor(config["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        exported = model.forward_features((images - mean) / std)[:, 0]
    assert torch.allclose(exported, expected, atol=1e-5)

    meta = json.loads((out / "export.json").read_text())
    plain = timm.create_model(meta["architecture"], pretrained=False, **meta["model_args"]).eval()
    plain.load_state_dict(torch.load(out / STATE_DICT, weights_only=True))
    with torch.no_grad():
        assert torch.allclose(plain.forward_features((images - mean) / std)[:, 0], expected, atol=1e-5)


def test_export_of_a_missing_checkpoint_names_it(tmp_path):
    from procedural_perception.core.checkpoints import CheckpointError

    with pytest.raises(CheckpointError, match="nothing.ckpt does not exist"):
        main([str(tmp_path / "nothing.ckpt"), str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
