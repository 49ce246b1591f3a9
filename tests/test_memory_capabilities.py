"""The capability measurements behind docs/visual_memory.md, on embeddings with a known answer."""

import torch

from benchmarks.capabilities import add_classes, hierarchy, markdown, pruning, tradeoff


def clusters(n, seed, noise=0.35, classes=10, dim=12):
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(classes, dim, generator=torch.Generator().manual_seed(0)), dim=1)
    y = torch.randint(0, classes, (n,), generator=g)
    return torch.nn.functional.normalize(centres[y] + noise * torch.randn(n, dim, generator=g), dim=1), y


def test_added_classes_are_recognised_and_old_ones_barely_move():
    mem_x, mem_y = clusters(1500, 1, noise=0.15)
    q_x, q_y = clusters(400, 2, noise=0.15)
    out = add_classes(mem_x, mem_y, q_x, q_y, held_out=(5, 8))
    assert out["added_samples"] == int(((mem_y == 5) | (mem_y == 8)).sum())
    assert out["new_classes"] > 0.9  # separable clusters: the new classes are found without training
    assert abs(out["old_change_points"]) < 2.0 and out["old_before"] > 0.9


def test_tradeoff_grows_with_memory_and_hierarchy_is_easier_at_the_top():
    mem_x, mem_y = clusters(2000, 3, noise=0.9)
    q_x, q_y = clusters(500, 4, noise=0.9)
    curve = tradeoff(mem_x, mem_y, q_x, q_y, sizes=(20, 2000))
    assert curve[2000] > curve[20]
    levels = hierarchy(mem_x, mem_y, q_x, q_y)
    assert levels["group_voted"] >= levels["class"] and set(levels["per_group"]) == {"tops", "bottoms", "footwear", "bags"}
    manual = torch.tensor([0, 1, 0, 0, 0, 2, 0, 2, 3, 2])[q_y]  # GROUPS, class -> group
    assert 0 < levels["group_voted"] <= 1 and manual.shape == q_y.shape


def test_pruning_report_and_page():
    mem_x, mem_y = clusters(600, 5, noise=0.9)
    q_x, q_y = clusters(200, 6, noise=0.9)
    p = pruning(mem_x, mem_y, q_x, q_y)
    assert p["hard_removed"] >= 1 and 0 <= p["rank_soft_pruned"] <= 1
    results = {"settings": {"encoders": ["x"], "memory_size": 600, "queries": 200, "image_size": 64, "k": 20,
                            "rule": "dino"}, "encoder": "x", "tradeoff": {"x": {"20": 0.5, "600": 0.7}},
               "add_classes": add_classes(mem_x, mem_y, q_x, q_y), "hierarchy": hierarchy(mem_x, mem_y, q_x, q_y),
               "pruning": p, "attribution": {"query": 0, "truth": "a", "prediction": "b", "shares": {"b": 0.6},
                                             "top_neighbours": [{"rank": 0, "class": "b", "similarity": 0.9,
                                                                 "share": 0.2}]}}
    page = markdown(results, "python -m benchmarks.capabilities")
    assert "| x | 50.00 | 70.00 |" in page and "Adding classes" in page


def test_encoder_labels_name_the_run_and_its_random_twin():
    from benchmarks.capabilities import label

    ckpt = "runs/exp_kml_mixup_s0/checkpoints/last.ckpt"
    assert label(ckpt) == "exp_kml_mixup_s0" and label("efficientnet_lite0") == "efficientnet_lite0"
    assert label(f"random_twin:{ckpt}") == "random init (exp_kml_mixup_s0's network)"
