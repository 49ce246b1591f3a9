import csv

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_modules.encoders import build_encoder
from procedural_perception.datasets.twoafc import DistortionTriplets, load_twoafc
from procedural_perception.evaluations.twoafc import evaluate_twoafc, twoafc_scores


def test_score_formula_with_ties():
    d0 = torch.tensor([0.1, 0.5, 0.3, 0.3, 0.2])
    d1 = torch.tensor([0.4, 0.2, 0.3, 0.3, 0.9])
    p = torch.tensor([0.25, 0.75, 0.0, 1.0, 1.0])
    # closer img0 -> 1 - p; closer img1 -> p; tie -> 0.5 whatever p
    expected = torch.tensor([0.75, 0.75, 0.5, 0.5, 0.0])
    torch.testing.assert_close(twoafc_scores(d0, d1, p), expected)


def write_nights(root, rows):
    for name in ("ref", "a", "b"):
        Image.fromarray(np.full((30, 40, 3), {"ref": 10, "a": 20, "b": 250}[name], np.uint8)).save(root / f"{name}.png")
    with (root / "data.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["id", "left_vote", "right_vote", "votes", "ref_path", "left_path",
                                         "right_path", "split", "is_imagenet"])
        writer.writeheader()
        writer.writerows(rows)


def test_nights_layout_filters_votes_and_split(tmp_path):
    base = dict(ref_path="ref.png", left_path="a.png", right_path="b.png", is_imagenet="False")
    write_nights(tmp_path, [
        dict(base, id=0, left_vote=1.0, right_vote=0.0, votes=7, split="val"),
        dict(base, id=1, left_vote=0.0, right_vote=1.0, votes=5, split="val"),  # too few votes
        dict(base, id=2, left_vote=0.0, right_vote=1.0, votes=6, split="train"),
        dict(base, id=3, left_vote=0.0, right_vote=1.0, votes=6, split="val", right_path="gone.png"),
    ])
    data = load_twoafc(f"nights:{tmp_path}:val", image_size=32)
    assert len(data) == 1 and data.p.tolist() == [0.0]
    assert len(data.skipped) == 1 and "gone.png" in data.skipped[0][1]
    ref, img0, img1, p = data[0]
    assert ref.shape == (3, 32, 32)
    # raw pixels: img0 (grey 20) is closer to ref (grey 10) in direction? both constant -> cosine ties
    result = evaluate_twoafc(build_encoder("rgb"), data, progress=False)
    assert result["twoafc/triplets"] == 1
    assert len(load_twoafc(str(tmp_path), image_size=32)) == 1  # bare folder = val split


def test_distortion_triplets_are_deterministic_and_ordered():
    data = DistortionTriplets(n=12, seed=3, image_size=64)
    again = DistortionTriplets(n=12, seed=3, image_size=64)
    assert torch.equal(data[5][1], again[5][1]) and torch.equal(data.p, again.p)
    assert set(data.p.tolist()) <= {0.0, 1.0}
    # the mild copy is closer to the reference in pixel space than the strong one
    for i in range(len(data)):
        ref, img0, img1, p = data[i]
        mild, strong = (img1, img0) if p == 1 else (img0, img1)
        assert (mild - ref).abs().mean() < (strong - ref).abs().mean()


def test_raw_pixels_order_distortions_better_than_chance():
    result = evaluate_twoafc(build_encoder("rgb"), DistortionTriplets(n=40, image_size=64), progress=False)
    assert result["twoafc/score"] > 0.7


def test_unknown_source_is_an_error():
    with pytest.raises(FileNotFoundError, match="distortion_2afc"):
        load_twoafc("/nowhere")
