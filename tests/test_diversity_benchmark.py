"""The diversity benchmark covers every registered process and real sources, and tabulates failures."""

import torch

from benchmarks import diversity
from datamodules.procedural.families import FAMILIES
from datamodules.procedural.processes import PROCESSES


def test_every_registered_process_is_a_source_after_the_real_ones():
    names = list(diversity.sources(8))
    assert names[:2] == [diversity.BASELINE, "fashion_mnist"]
    assert names[2:2 + len(PROCESSES)] == list(PROCESSES)  # a process added to the registry joins by itself
    assert names[2 + len(PROCESSES):] == [f"family/{family}" for family in FAMILIES]


def test_procedural_sources_span_several_blocks_of_the_training_stream():
    images = diversity.procedural_source("shaders", 8, size=16, blocks=4)
    assert images.shape == (8, 3, 16, 16) and images.dtype == torch.uint8
    assert not torch.equal(images[:2], images[2:4])  # another block, other programs


def test_the_table_lists_every_metric_and_reports_a_failed_source():
    table = {"photos": {m: 1.0 for m in diversity.UNITS}, "stylegan": {"error": "RuntimeError: no EGL"}}
    text = diversity.markdown(table, 16)
    assert "| photos | 1.0 |" in text and "RuntimeError: no EGL" in text
    assert all(metric in text for metric in diversity.UNITS)
