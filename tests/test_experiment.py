"""The transfer experiment end to end in its quick mode: train every process, evaluate, write the tables."""

import json
import math

import pytest

from benchmarks import experiment
from lightning_modules.encoders import REFERENCE_ENCODERS


def test_seeds_default_to_two_for_the_headline_process_only():
    assert experiment.seeds_of("kml_mixup", None) == [0, 1]
    assert experiment.seeds_of("shaders", None) == [0]
    assert experiment.seeds_of("shaders", [3, 4]) == [3, 4]


def test_every_row_gets_the_same_budget_and_batch():
    """Processes, real-data controls and ablations differ only in their data; the recipe is shared."""
    args = experiment.parse_args(["--budget-steps", "50", "--batch-size", "16"])
    commands = [experiment.train_command(args, p, 0)[3:] for p in experiment.ROWS]
    shared = [[a for a in c if not a.startswith(("data=", "run_name=")) and a not in experiment.PINNED_GENERATOR
               and not any(a in overrides for overrides in {**experiment.DATA_ROWS, **experiment.ABLATIONS}.values())]
              for c in commands]
    assert all(s == shared[0] for s in shared)
    assert "trainer.max_steps=50" in shared[0] and "data.batch_size=16" in shared[0] and "profile=cpu" in shared[0]


def test_glsl_processes_share_one_pinned_generator():
    args = experiment.parse_args([])
    for process in ("shaders", "mixup", "kml", "kml_mixup"):
        assert all(a in experiment.train_command(args, process, 0) for a in experiment.PINNED_GENERATOR)
    assert "data.root=wallpapers" in experiment.train_command(args, "photos", 0)


def test_runs_folder_defaults_under_out_and_can_be_shared(tmp_path):
    default = experiment.parse_args(["--out", str(tmp_path / "a")])
    assert default.runs == tmp_path / "a" / "runs"
    shared = experiment.parse_args(["--out", str(tmp_path / "b"), "--runs", str(tmp_path / "a" / "runs")])
    assert f"runs_dir={tmp_path / 'a' / 'runs'}" in experiment.train_command(shared, "kml", 0)


def test_aggregate_reports_mean_and_sample_std():
    per_run = {"a0": {"m": 1.0}, "a1": {"m": 3.0}, "r": {"m": 5.0}}
    table = experiment.aggregate(per_run, {"a": ["a0", "a1"], "r": ["r"]})
    assert table["a"]["m"]["mean"] == 2.0 and table["a"]["m"]["std"] == pytest.approx(math.sqrt(2))
    assert table["r"]["m"] == {"mean": 5.0, "std": 0.0, "n": 1, "values": [5.0]}


def test_committed_metrics_reused_only_for_the_same_subsets(tmp_path):
    """A committed result is reused for today's settings; one in the first results' flat form is not (its
    queries were drawn with the memory's seed), even where every size and data set agrees."""
    args = experiment.parse_args(["--out", str(tmp_path), "--limit-memory", "100", "--limit-query", "20",
                                  "--image-size", "64", "--twoafc-limit", "10"])
    today = experiment.eval_config_of(args)
    flat = {"memory": today["knn"]["memory"], "query": today["knn"]["query"], "limit_memory": 100,
            "limit_query": 20, "image_size": 64, "pca_data": today["pca_r2"]["data"], "pca_limit": None,
            "twoafc_data": today["twoafc"]["data"], "twoafc_limit": 10}
    (tmp_path / "evals").mkdir()
    for label, config in (("today", today), ("first", flat), ("other_seed", {**today, "knn": {**today["knn"], "seed": 5}})):
        (tmp_path / "evals" / f"{label}.json").write_text(json.dumps({"fingerprint": {"config": config}, "metrics": {}}))
    assert experiment.committed_metrics(args, "today") == tmp_path / "evals" / "today.json"
    assert experiment.committed_metrics(args, "first") is None
    assert experiment.committed_metrics(args, "other_seed") is None
    assert experiment.committed_metrics(args, "absent") is None


@pytest.mark.slow
@pytest.mark.egl
@pytest.mark.timeout(1800)
def test_quick_experiment_writes_tables_and_plots(tmp_path):
    experiment.main(["--quick", "--processes", "kml", "kml_mixup", "fashion_mnist", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "experiment.json").read_text())
    encoders = ["kml", "kml_mixup", "fashion_mnist", *REFERENCE_ENCODERS]
    assert list(result["table"]) == encoders
    for encoder in encoders:
        stats = result["table"][encoder]
        for key in (experiment.HEADLINE_KEY, experiment.PRIVATE_KEY, "pca_r2", "twoafc/score",
                    "knn/rank/k200/top1"):
            assert math.isfinite(stats[key]["mean"]), (encoder, key)
        assert 0 <= stats[experiment.HEADLINE_KEY]["mean"] <= 100
    markdown = (tmp_path / "experiment.md").read_text()
    assert "4 optimisation steps per run" in markdown and "paper" in markdown
    assert all(f"| {e} |" in markdown for e in encoders)
    assert "## Goal" in markdown and "In-domain real images (Fashion-MNIST train)" in markdown
    for plot in ("knn_vs_k.png", "privacy.png"):
        assert (tmp_path / plot).read_bytes()[:4] == b"\x89PNG"
    # A second call resumes: every run and every evaluation is found, nothing is recomputed.
    before = {p: p.stat().st_mtime for p in (tmp_path / "evals").glob("*.json")}
    experiment.main(["--quick", "--processes", "kml", "kml_mixup", "fashion_mnist", "--out", str(tmp_path)])
    assert {p: p.stat().st_mtime for p in (tmp_path / "evals").glob("*.json")} == before
