"""Fault scenarios of training (the training part of `make bench-faults`), each run as N trials.

``scenarios()`` returns one row per scenario in the shared format with ``trials``, ``survived`` (the
documented behaviour held), ``steps_lost`` and ``recover_s``, and the message a user sees:

* damaged checkpoints: a run's checkpoint folder (``last.ckpt`` and kept checkpoints, each with its
  checksum) with one to all files truncated at a random byte, bit-flipped at a random byte, or
  deleted: resuming picks the newest checkpoint that loads and no damaged file is ever loaded;
* torn results file: ``results.jsonl`` cut at a random byte: reading keeps every complete row and
  appending repairs the file;
* configuration mistakes: bad values and unknown keys end with exit status 2 and a message, never a
  traceback, and touch no run folder;
* (full run only) a SIGTERM during a step that never finishes ends the process within the grace
  period; a rank 10x slower is named in a warning; a node lost during an evaluation gather stops
  the other rank with a clear message. Each costs a real training process: the tests run them too.
"""

from __future__ import annotations

import contextlib
import io
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from procedural_perception.core.benchmark_rows import quick, row, write_rows
from procedural_perception.core.results import append_results, read_results
from procedural_perception.training.checkpoint_io import AtomicCheckpointIO
from procedural_perception.training.resume import resumable_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def _row(name: str, outcomes: list[tuple[bool, int, float, str]], message: str, lost_unit: str = "steps_lost") -> dict:
    survived = sum(o[0] for o in outcomes)
    return row(name, float(survived), f"of {len(outcomes)} trials", trials=len(outcomes), survived=survived,
               **{lost_unit: sum(o[1] for o in outcomes)},
               recover_s=round(max((o[2] for o in outcomes), default=0.0), 4), user_message=message,
               failures=[o[3] for o in outcomes if not o[0]][:5])


# --- damaged checkpoints ---------------------------------------------------------------------------
def checkpoint_trial(seed: int, work: Path) -> tuple[bool, int, float, str]:
    """Kept checkpoints every 10 steps and last.ckpt; damage some at random; resume must pick the newest intact one."""
    rng = random.Random(seed)
    folder = work / f"ckpt{seed}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    io_ = AtomicCheckpointIO()
    steps = {f"step{10 * i:08d}.ckpt": 10 * i for i in range(1, 5)}
    steps["last.ckpt"] = 45
    for offset, (name, step) in enumerate(steps.items()):
        io_.save_checkpoint({"global_step": step, "state_dict": {"w": torch.full((256,), float(step))}}, folder / name)
        mtime = time.time() - 100 + offset  # kept checkpoints in step order, last.ckpt newest
        (folder / name).touch()
        import os

        os.utime(folder / name, (mtime, mtime))
    damaged = rng.sample(sorted(steps), rng.randint(1, len(steps)))
    for name in damaged:
        path = folder / name
        how = rng.choice(["truncate", "flip", "delete"])
        if how == "delete":
            path.unlink()
            continue
        data = bytearray(path.read_bytes())
        at = rng.randrange(len(data))
        if how == "truncate":
            data = data[:at]
        else:
            data[at] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
    intact = [n for n in steps if n not in damaged]
    expected = max(intact, key=lambda n: steps[n]) if intact else None
    start = time.perf_counter()
    chosen, _ = resumable_checkpoint(folder)
    seconds = time.perf_counter() - start
    ok = (chosen.name if chosen else None) == expected
    if chosen is not None:
        ok = ok and float(torch.load(chosen, weights_only=False)["state_dict"]["w"][0]) == steps[chosen.name]
    lost = 45 - (steps[expected] if expected else 0)
    return ok, lost, seconds, "" if ok else f"damaged {damaged}: chose {chosen}, expected {expected}"


# --- torn results ----------------------------------------------------------------------------------
def results_trial(seed: int, work: Path) -> tuple[bool, int, float, str]:
    rng = random.Random(seed)
    path = work / f"results{seed}.jsonl"
    path.unlink(missing_ok=True)
    rows = [{"step": i, "knn/dino/k20/top1": 50 + i} for i in range(20)]
    with contextlib.suppress(Warning):
        append_results(path, rows)
    data = path.read_bytes()
    cut = rng.randrange(1, len(data))
    path.write_bytes(data[:cut])
    # rows whose text survived whole (a cut just before a newline leaves the last row complete)
    complete = sum(1 for line in data[:cut].decode().splitlines() if line.endswith("}"))
    start = time.perf_counter()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kept = read_results(path)
        append_results(path, [{"step": 99}])
    after = read_results(path)
    seconds = time.perf_counter() - start
    ok = [r["step"] for r in kept] == list(range(complete)) and [r["step"] for r in after] == [*range(complete), 99]
    return ok, 0, seconds, "" if ok else f"cut at {cut}: kept {len(kept)} rows, expected {complete}"


# --- configuration mistakes ------------------------------------------------------------------------
MISTAKES = [
    (["data.batch_size=-4"], "data.batch_size must be at least 1"),
    (["+trainer.max_stepz=3"], "trainer.max_stepz is not an argument of lightning.Trainer"),
    (["trainer.max_stepz=3"], "Unknown config key 'trainer.max_stepz'"),
    (["trainer.max_steps=abc"], "max_steps expects a int"),
    (["data=kml_mixpu"], "Unknown data 'kml_mixpu'"),
    (["model.teacher_tmp=0.05"], "Did you mean 'teacher_temp'"),
    (["data=images"], "data.root"),
]


def config_trial(overrides: list[str], expected: str, work: Path) -> tuple[bool, int, float, str]:
    from procedural_perception.cli.train import main

    err = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stderr(err):
        try:
            status = main([*overrides, f"runs_dir={work / 'runs'}", "profile=cpu"])
        except BaseException as exc:  # a traceback is the failure this scenario looks for
            return False, 0, time.perf_counter() - start, f"{overrides}: raised {type(exc).__name__}: {exc}"
    text = " ".join(err.getvalue().split())
    ok = status == 2 and expected in text and not (work / "runs").exists()
    return ok, 0, time.perf_counter() - start, "" if ok else f"{overrides}: exit {status}, said {text[:200]}"


# --- real processes (full run only) ----------------------------------------------------------------
# A process scenario's test takes 1-3 minutes on an idle 2-core machine; a busy one can be 10x slower.
PROCESS_TIMEOUT_S = 1800


def _pytest(node: str) -> tuple[bool, int, float, str]:
    start = time.perf_counter()
    try:
        out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", node], cwd=ROOT,
                             capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S)
    except subprocess.TimeoutExpired:  # a failed trial to report, not a crash of the whole benchmark
        return False, 0, time.perf_counter() - start, f"{node} did not finish within {PROCESS_TIMEOUT_S} s"
    return out.returncode == 0, 0, time.perf_counter() - start, "" if out.returncode == 0 else out.stdout[-500:]


PROCESS_SCENARIOS = [
    ("training: SIGTERM during a step that never finishes (ends within grace_s, or at a second SIGTERM)",
     "tests/test_resume.py::test_sigterm_waits_for_the_step_in_flight_only_so_long",
     "Stopping now: no training step finished within 50 s of SIGTERM. .../last.ckpt (written before the signal) is "
     "intact; the steps since it are lost. Run the same command again to resume."),
    ("training: a damaged last.ckpt end to end (truncated, bit-flipped)",
     "tests/test_resume.py::test_a_damaged_last_ckpt_resumes_from_the_newest_kept_checkpoint_that_loads",
     "Skipping a damaged checkpoint: Checkpoint .../last.ckpt does not match its checksum (last.ckpt.sha256): it is "
     "corrupted (a flipped bit or a partial copy). It was moved to last.ckpt.corrupt."),
    ("distributed: a rank 10x slower than the other (no hang, a warning)",
     "tests/test_bad_input.py::test_a_rank_ten_times_slower_is_named_in_a_warning_and_nothing_hangs",
     "Rank 1 of 2 is 10.0x slower than the median rank (...): every rank waits for it at each step."),
    ("distributed: a node lost during an evaluation gather",
     "tests/test_bad_input.py::test_a_node_lost_during_an_evaluation_gather_makes_the_other_exit_with_a_clear_message",
     "Distributed training stopped: Rank 0 of 2: another training process stopped or stopped answering, so this one "
     "is exiting instead of waiting (...). ... run the same command again: training resumes from ..."),
]


# Errors a new user met (issue 17, item 8), each an end-to-end test through the project's own commands.
NEW_USER_NODES = [
    "tests/test_new_user_errors.py::test_classify_names_a_corrupt_image_and_still_classifies_the_others",
    "tests/test_new_user_errors.py::test_a_build_lists_every_skipped_file_in_a_report",
    "tests/test_new_user_errors.py::test_make_tensorboard_listens_on_this_machine_unless_told_otherwise",
    "tests/test_train.py::test_the_paper_profile_on_a_small_cpu_is_capped_and_warned",
]
NEW_USER_MESSAGE = ("skipped: cannot read corrupt.png: cannot decode: ... (the other images are classified); every "
                    "skipped file listed in a report; tensorboard on 127.0.0.1 unless TB_HOST is set; Note: "
                    "data.num_workers=8 is more than the 2 core(s) ...")


def scenarios(trials: int | None = None) -> list[dict]:
    """The rows of this part of ``make bench-faults`` (QUICK=1: fewer trials, no training processes)."""
    trials = trials or (20 if quick() else 100)
    work = Path(tempfile.mkdtemp(prefix="pp-faults-training-"))
    try:
        rows = [
            _row("training: damaged checkpoints (truncated / bit-flipped / deleted, 1 to all of 5)",
                 [checkpoint_trial(s, work) for s in range(trials)],
                 "Skipping a damaged checkpoint: Checkpoint .../last.ckpt does not match its checksum ... Resuming "
                 "run '<run>' from .../step00000040.ckpt"),
            _row("training: results.jsonl torn at a random byte", [results_trial(s, work) for s in range(trials)],
                 "results.jsonl: skipped 1 line(s) that are not valid JSON (line 7)", lost_unit="rows_lost"),
            _row("training: configuration mistakes (exit 2 with a message, no traceback, no run folder)",
                 [config_trial(o, e, work / f"cfg{i}") for i, (o, e) in enumerate(MISTAKES)],
                 "Configuration error: data.batch_size must be at least 1, got -4."),
        ]
        if not quick():
            for name, node, message in PROCESS_SCENARIOS:
                rows.append(_row(name, [_pytest(node)], message))
            rows.append(_row("new-user errors: corrupt image in classify, skip report, tensorboard host, paper "
                             "profile on 2 cores", [_pytest(node) for node in NEW_USER_NODES], NEW_USER_MESSAGE))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


if __name__ == "__main__":
    write_rows("faults_training", scenarios())
