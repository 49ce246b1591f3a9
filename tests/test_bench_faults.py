"""The `make bench-faults` aggregator: parts run or read back, an absent part skipped with a line, one table."""

import json

import benchmarks.faults as faults


def test_an_absent_part_is_skipped_with_a_line():
    rows, note = faults.run_part("faults_not_written_yet", None)
    assert rows == [] and "skipped (benchmarks/faults_not_written_yet.py is not in this checkout)" in note


def test_lost_names_its_unit():
    assert faults.lost({"samples_lost": 0}) == "0 samples" and faults.lost({"steps_lost": 285}) == "285 steps"
    assert faults.lost({"name": "x"}) == "-"


def test_saved_results_make_one_table_and_one_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(faults, "RESULTS_DIR", tmp_path)
    part = [{"name": "hostile programs: endless loop", "trials": 4, "survived": 3, "samples_lost": 16,
             "recover_s": 2.5, "user_message": "User program x abandoned"}]
    (tmp_path / "faults_programs.json").write_text(json.dumps(part))
    rows = faults.main(["--saved"])
    assert [r["name"] for r in rows] == ["hostile programs: endless loop"] and rows[0]["part"] == "faults_programs"
    assert json.loads((tmp_path / "faults.json").read_text()) == rows
    out = capsys.readouterr().out
    assert "User program x abandoned" in out and "faults_files: no results file" in out
    assert "0 of 1 scenarios survived every trial; not: hostile programs: endless loop" in out


def test_the_docs_table_is_rewritten_between_its_markers_only(tmp_path):
    page = tmp_path / "faults.md"
    page.write_text(f"intro\n{faults.TABLE_START}\n| old |\n{faults.TABLE_END}\nafter\n")
    rows = [{"name": "memory: kill -9 during add", "trials": 50, "survived": 50, "batches_lost": 0, "recover_s": 0.4}]
    assert faults.write_docs_table(rows, page)
    text = page.read_text()
    assert text.startswith("intro\n") and text.endswith("after\n") and "| old |" not in text
    assert "| memory: kill -9 during add | 50 | 50 | 0 batches | 0.4 |" in text
    page.write_text("no markers")
    assert not faults.write_docs_table(rows, page) and page.read_text() == "no markers"
