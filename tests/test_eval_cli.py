import json

import pytest

from procedural_perception.cli.eval import main, parse_args
from procedural_perception.evaluations.suite import encoder_rows, make_encoder


def test_encoders_comma_separated_and_references_appended_once():
    args = parse_args(["--encoder", "a.ckpt,rgb", "--encoder", "efficientnet_lite0", "--evals", "pca_r2,twoafc"])
    assert args.encoders == ["a.ckpt", "rgb", "efficientnet_lite0"]
    assert args.evals == ["pca_r2", "twoafc"]
    assert encoder_rows(args.encoders, args.references) == ["a.ckpt", "rgb", "efficientnet_lite0", "random_vit"]
    assert encoder_rows(["rgb"], "none") == ["rgb"]


def test_unknown_evaluation_is_rejected(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--encoder", "rgb", "--evals", "pca_r3"])
    assert "pca_r3" in capsys.readouterr().err


def test_eval_writes_json_and_markdown(tmp_path, capsys):
    out = tmp_path / "results.json"
    results = main(["--encoder", "rgb", "--references", "none", "--evals", "pca_r2,in_context,knn_seg,twoafc",
                    "--pca-limit", "2", "--seg-limit", "4", "--twoafc-limit", "6", "--image-size", "64",
                    "--out", str(out)])
    row = results["rgb"]
    for key in ("pca_r2", "in_context/miou", "knn_seg/miou", "twoafc/score"):
        assert 0 <= row[key] <= 1, key
    saved = json.loads(out.read_text())
    assert saved["results"]["rgb"]["pca_r2"] == pytest.approx(row["pca_r2"])
    markdown = out.with_suffix(".md").read_text()
    assert markdown.startswith("| encoder | PCA R² | in-context mIoU | kNN-seg mIoU | 2AFC |")
    assert "| rgb |" in markdown
    assert "not a human-judgment" in " ".join(capsys.readouterr().out.split())


def test_bad_encoder_is_reported_and_fails(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["--encoder", "no_such_encoder", "--references", "none", "--evals", "twoafc",
              "--out", str(tmp_path / "r.json")])
    assert exit_info.value.code == 1
    assert "no_such_encoder" in json.loads((tmp_path / "r.json").read_text())["results"]


def tiny_checkpoint(path, **overrides) -> str:
    """A DINO checkpoint (hyper-parameters + weights) of a tiny ViT, as Lightning writes one; ``overrides``
    change DINO arguments (another depth: another architecture)."""
    import lightning
    import torch

    from lightning_modules.dino import DINO

    module = DINO(**{**dict(arch="vit_tiny_patch16_224", embed_dim=32, depth=1, num_heads=2, out_dim=64,
                            head_hidden_dim=32, head_bottleneck_dim=16, global_crop_size=64, local_crop_size=32,
                            n_local_crops=2), **overrides})
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "pytorch-lightning_version": lightning.__version__}, path)
    return str(path)


@pytest.mark.slow
def test_checkpoint_row_and_its_random_twin(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "tiny.ckpt")
    results = main(["--encoder", ckpt, "--references", "random_vit", "--evals", "twoafc", "--twoafc-limit", "4",
                    "--image-size", "64", "--out", str(tmp_path / "r.json")])
    assert list(results) == [ckpt, "random_vit"]
    # the random row is a fresh initialisation of the checkpoint's own (tiny) architecture
    twin = make_encoder("random_vit", [ckpt])
    assert twin.embed_dim == 32 and twin.name == "random_init:tiny"


@pytest.mark.slow
@pytest.mark.egl
def test_make_eval_with_default_flags_prints_what_training_logged(tmp_path):
    """One kNN code path: the training callback and `make eval` run the same task on the same data
    (read from the run's config.yaml) at the same size (the checkpoint's), so the numbers are equal."""
    from test_resume import TINY

    from procedural_perception.cli.train import main as train

    knn = ["callbacks=knn", "callbacks.knn.every_n_epochs=1", "callbacks.knn.task.memory=digits",
           "callbacks.knn.task.query=digits", "callbacks.knn.task.memory_size=150", "callbacks.knn.task.query_size=40",
           "callbacks.knn.task.ks=[5,20]", "callbacks.knn.task.grid_queries=0"]
    args = [a for a in TINY if not a.startswith(("trainer.max_steps", "callbacks."))]
    assert train([*args, "trainer.max_steps=6", f"runs_dir={tmp_path}", "run_name=one_path", *knn]) == 0
    run = tmp_path / "one_path"
    logged = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()][-1]
    assert logged["evaluation"] == "knn" and logged["step"] == 6

    printed = main(["--encoder", str(run / "checkpoints" / "last.ckpt"), "--references", "none", "--evals", "knn",
                    "--out", str(tmp_path / "eval" / "results.json")])
    row = next(iter(printed.values()))
    knn_keys = [k for k in logged if k.startswith(("knn/", "privacy/"))]
    assert "knn/dino/k20/top1" in knn_keys and "knn/per_class/3" in knn_keys
    assert {k: row[k] for k in knn_keys} == {k: logged[k] for k in knn_keys}


def test_the_paper_suite_runs_on_the_data_sets_found_and_names_the_absent_ones(tmp_path, capsys):
    """`make eval SUITE=paper ROOT=...`: one kNN table column per data set found (here CUB and Food-101
    in their native layouts), one line for each absent one."""
    import dataset_fixtures as fx

    fx.cub(tmp_path / "data" / "CUB_200_2011")
    fx.food101(tmp_path / "data" / "food-101")
    out = tmp_path / "eval" / "results.json"
    with pytest.warns(UserWarning):  # memories of 2-5 images: k capped, said once per memory size
        results = main(["--encoder", "rgb", "--references", "none", "--suite", "paper", "--root",
                        str(tmp_path / "data"), "--image-size", "32", "--out", str(out)])
    row = results["rgb"]
    assert {"cub/knn/dino/k3/top1", "food101/knn/dino/k5/top1"} <= set(row)
    err = " ".join(capsys.readouterr().out.split())
    for absent in ("flowers102 (Table 1)", "imagenet (Table 1)", "pathmnist (Table 3)", "coco (Table 2)"):
        assert f"skipped {absent}" in err
    header = out.with_suffix(".md").read_text().splitlines()[0]
    assert "cub kNN top-1 %" in header and "food101 kNN top-1 %" in header


def test_in_a_log_the_table_keeps_whole_checkpoint_paths(tmp_path, capsys):
    """Output that is not a terminal (a batch job's log) gets a table wide enough for a checkpoint's path,
    not Rich's 80 columns that cut it to `runs/…`."""
    ckpt = tiny_checkpoint(tmp_path / "a_checkpoint_with_a_long_descriptive_name_for_the_log_test.ckpt")
    main(["--encoder", ckpt, "--references", "none", "--evals", "pca_r2,twoafc", "--pca-limit", "2",
          "--twoafc-limit", "4", "--image-size", "32", "--out", str(tmp_path / "r.json")])
    assert any(ckpt in line and "│" in line for line in capsys.readouterr().out.splitlines())
