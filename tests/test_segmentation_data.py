import json

import numpy as np
import pytest
import torch
from PIL import Image

from procedural_perception.datasets.segmentation import (
    decode_rle,
    load_coco,
    load_segmentation,
    load_voc,
    resize_pair,
)
from procedural_perception.evaluations.embedding import map_shards


def runs_of(mask: np.ndarray) -> list[int]:
    """COCO runs: column-major, alternating 0s and 1s, starting with 0s (written for the test)."""
    flat = mask.T.reshape(-1)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat[0] == 1 else runs


def compress(runs: list[int]) -> str:
    """COCO's compressed RLE string (5 bits per character, continuation bit, delta to run i-2)."""
    out = []
    for i, x in enumerate(runs):
        if i > 2:
            x -= runs[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if c & 0x10 else (x != 0)
            out.append(chr(c + 48 + (0x20 if more else 0)))
    return "".join(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rle_round_trip_compressed_and_plain(seed):
    rng = np.random.default_rng(seed)
    mask = (rng.random((23, 17)) < 0.3).astype(np.uint8)
    mask[5:15, 2:12] = 1  # long runs exercise multi-character values and negative deltas
    np.testing.assert_array_equal(decode_rle(runs_of(mask), 23, 17), mask)
    np.testing.assert_array_equal(decode_rle(compress(runs_of(mask)), 23, 17), mask)


def test_rle_of_the_wrong_size_is_an_error():
    with pytest.raises(ValueError, match="covers"):
        decode_rle([3, 4], 3, 3)


@pytest.fixture
def coco_root(tmp_path):
    (tmp_path / "val2017").mkdir()
    (tmp_path / "annotations").mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((20, 20, 3), 128, np.uint8)).save(tmp_path / "val2017" / name)
    (tmp_path / "val2017" / "broken.jpg").write_bytes(b"not a jpeg")
    blob = np.zeros((20, 20), np.uint8)
    blob[5:15, 10:18] = 1
    crowd = np.zeros((20, 20), np.uint8)
    crowd[0:4, :] = 1
    data = {
        "images": [{"id": 10, "file_name": "a.png", "height": 20, "width": 20},
                   {"id": 11, "file_name": "b.png", "height": 20, "width": 20},
                   {"id": 12, "file_name": "broken.jpg", "height": 20, "width": 20}],
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
        "annotations": [
            # image a: a polygon square of cat, then an overlapping RLE blob of dog (wins the overlap)
            {"id": 1, "image_id": 10, "category_id": 3, "iscrowd": 0,
             "segmentation": [[2, 2, 12, 2, 12, 12, 2, 12]]},
            {"id": 2, "image_id": 10, "category_id": 7, "iscrowd": 0,
             "segmentation": {"size": [20, 20], "counts": compress(runs_of(blob))}},
            # image b: a crowd (plain RLE) of dog, then a cat polygon on top of it
            {"id": 3, "image_id": 11, "category_id": 7, "iscrowd": 1,
             "segmentation": {"size": [20, 20], "counts": runs_of(crowd)}},
            {"id": 4, "image_id": 11, "category_id": 3, "iscrowd": 0,
             "segmentation": [[0, 0, 5, 0, 5, 10, 0, 10], [15, 15, 19, 15, 19, 19]]},
        ],
    }
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    return tmp_path


def test_coco_category_masks_with_overlaps(coco_root):
    data = load_coco(coco_root / "annotations" / "instances_val2017.json", coco_root / "val2017",
                     image_size=32, mask_size=20)
    assert data.classes == ["background", "cat", "dog"]  # renumbered in category-id order
    image, mask = data[0]
    assert image.shape == (3, 32, 32) and mask.shape == (20, 20)
    assert (mask[3:12, 3:10] == 1).all()  # cat square outside the blob
    assert (mask[5:15, 10:18] == 2).all()  # dog blob, written later, overwrites the square
    assert (mask[15:, :] == 0).all() and (mask[:, 19] == 0).all()
    _, mask_b = data[1]
    assert (mask_b[0:4, 6:] == 2).all()  # crowd region not covered by the polygon
    assert (mask_b[0:10, 0:5] == 1).all()  # polygon drawn over the crowd
    assert (mask_b[16:19, 18] == 1).all()  # second polygon of the same annotation (a triangle)
    assert (mask_b[5:15, 8:15] == 0).all()


def test_corrupt_images_are_skipped_and_counted(coco_root):
    data = load_segmentation(str(coco_root), image_size=16, mask_size=8)  # layout detected
    assert data[2] is None and len(data.skipped) == 1
    loaded = map_shards(data, lambda batch: {"n": torch.ones(len(batch[0]))}, batch_size=2, progress=False)["loaded"]
    assert loaded.tolist() == [True, True, False]  # the evaluations' shard-and-gather step leaves it out


def test_voc_palette_masks_keep_ignore(tmp_path):
    root = tmp_path / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(root / "JPEGImages" / "x.jpg")
    labels = np.zeros((10, 10), np.uint8)
    labels[2:6, 2:6] = 15
    labels[2:6, 6] = 255
    mask = Image.fromarray(labels, mode="P")
    mask.putpalette([0, 0, 0, 128, 0, 0] * 128)
    mask.save(root / "SegmentationClass" / "x.png")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("x\n")
    data = load_voc(tmp_path / "VOCdevkit", "val", image_size=10, mask_size=10)
    _, m = data[0]
    assert data.classes[15] == "person"
    assert torch.equal(m, torch.from_numpy(labels.astype(np.int64)))


def test_resize_pair_never_blends_labels():
    mask = np.zeros((7, 9), np.int64)
    mask[:, 4:] = 3
    image, m = resize_pair(np.zeros((7, 9, 3), np.uint8), mask, 16, 112)
    assert image.shape == (3, 16, 16)
    assert set(m.unique().tolist()) == {0, 3}


def test_builtin_nuclei_tiles():
    data = load_segmentation("nuclei_instances", image_size=64, mask_size=32)
    assert len(data) == 16
    image, mask = data[0]
    assert image.shape == (3, 64, 64) and 0 <= float(image.min()) and float(image.max()) <= 1
    assert mask.max() > 3  # several nuclei, each its own segment
    binary = load_segmentation("nuclei", image_size=64, mask_size=32, limit=2)
    assert len(binary) == 2 and set(binary[0][1].unique().tolist()) == {0, 1}


def test_unknown_source_says_what_is_accepted():
    with pytest.raises(FileNotFoundError, match="nuclei"):
        load_segmentation("/no/such/folder")


@pytest.mark.egl
def test_kml_composites_are_labelled_by_their_mixing_mask():
    data = load_segmentation("kml_composites", image_size=64, mask_size=64, limit=3)
    assert len(data) == 3
    masks = [data[i][1] for i in range(3)]
    assert all(set(m.unique().tolist()) <= {1, 2} for m in masks)
    assert any(len(m.unique()) == 2 for m in masks)  # a 2-means cut splits the image
    image, _ = data[0]
    assert image.shape == (3, 64, 64) and 0 <= float(image.min()) and float(image.max()) <= 1
