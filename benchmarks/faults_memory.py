"""Fault scenarios of the visual memory (the memory part of `make bench-faults`), each run as N trials.

``scenarios(quick)`` returns one row per scenario in the shared format with ``trials``, ``survived``
(the documented behaviour held), ``lost`` (samples wrong or missing) and ``recover_s`` (the longest
time to reopen and check the memory), and the message a user sees:

* concurrent writers: two processes adding batches and one forgetting sources at once, while a
  reader opened before the first removal queries the removed samples' own vectors: every batch
  lands whole, the reader never sees half a batch nor a sample whose removal had committed before
  its query, and the final memory is exactly the base minus the removals plus every batch;
* crashes of ``build`` (the command), ``add`` and ``forget``: a process killed with SIGKILL at a
  random SQLite statement (every write point: inserts, audit rows, meta, COMMIT) or after a random
  delay (snapshot writes, checkpoints): ``check`` passes (repairing the snapshot) and the memory
  holds the batch whole or not at all; after a committed ``forget`` no file holds the sources;
* corrupted SQLite file: truncated, a garbage header, a zeroed page, or one flipped bit: opening
  fails with an error naming the file and the recovery command and the file is left untouched, or
  ``check`` reports the damage, or the damage hit unused bytes (the data read equals the original);
* soak: randomised add/remove/query operations, checking every 500 that all answers (ties
  included) equal those of a memory rebuilt from the surviving rows.

Crash and concurrency trials fork their processes from this one (a fresh interpreter per trial
cost ~50 s of imports on the loaded 2-core machine); faiss and torch run single-threaded in the
trials, so no OpenMP thread pool is forked. The trials' memories are tiny anyway: multi-threaded
faiss (OpenMP threads spinning on a loaded
2-core machine made a 40-vector query take 0.3 s instead of 1.5 ms), and the work folder is on
``/dev/shm`` when there is one (a SIGKILL loses no page-cache writes, so what is tested is the
same; fsyncs to a busy disk took ~0.1 s per edit).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import torch

from procedural_perception.core.benchmark_rows import quick as quick_env
from procedural_perception.core.benchmark_rows import row, write_rows
from procedural_perception.visual_memory import RULES, VisualMemory
from procedural_perception.visual_memory.integrity import check_memory
from procedural_perception.visual_memory.store import DamagedMemoryError

DIM = 16
BASE_BATCHES, BASE_BATCH = 3, 10
NEW_BATCH = 20  # samples one crashed add writes
VICTIMS = 5  # sources one crashed forget removes
BUILD = ["--encoder", "rgb", "--data", "digits", "--image-size", "16", "--device", "cpu", "--batch-size", "32"]
Outcome = tuple[bool, int, float, str]  # survived, samples lost, seconds to recover, what went wrong


def _row(name: str, outcomes: list[Outcome], message: str) -> dict:
    survived = sum(o[0] for o in outcomes)
    return row(name, float(survived), f"of {len(outcomes)} trials", trials=len(outcomes), survived=survived,
               lost=sum(o[1] for o in outcomes), recover_s=round(max((o[2] for o in outcomes), default=0.0), 4),
               user_message=message, failures=[o[3] for o in outcomes if not o[0]][:5])


# --- shared pieces ---------------------------------------------------------------------------------
def base_memory(folder: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """A closed, checkpointed memory of ``BASE_BATCHES`` batches with sources; returns source -> vector."""
    rng = np.random.default_rng(seed)
    vectors = {}
    with VisualMemory(DIM, path=folder, device="cpu") as memory:
        for b in range(BASE_BATCHES):
            x = rng.normal(size=(BASE_BATCH, DIM)).astype(np.float32)
            sources = [f"base{b}-{i}.png" for i in range(BASE_BATCH)]
            memory.add(x, [b] * BASE_BATCH, class_names={b: f"class{b}"}, sources=sources, reason="base")
            vectors.update(zip(sources, x, strict=True))
        memory.save()
        memory.store.checkpoint()
    return vectors


def stored_sources(folder: Path) -> set[str]:
    with VisualMemory.load(folder, device="cpu") as memory:
        return {r["source"] for r in memory.metadata(memory.ids)}


def files_holding(folder: Path, needles: list[str]) -> list[str]:
    """``needle in file`` for every needle (utf-8) found in the raw bytes of any file of ``folder``."""
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        found += [f"{n} in {path.name}" for n in needles if n.encode("utf-8") in data]
    return found


def work_folder() -> tempfile.TemporaryDirectory:
    """A temporary folder, in RAM when the machine has ``/dev/shm`` (see module doc)."""
    return tempfile.TemporaryDirectory(prefix="faults-memory-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None)


def single_threaded() -> tuple[int, int]:
    """faiss and torch on one thread (see module doc); returns the previous counts for restoring."""
    previous = faiss.omp_get_max_threads(), torch.get_num_threads()
    faiss.omp_set_num_threads(1)
    torch.set_num_threads(1)
    return previous


def restore_threads(previous: tuple[int, int]) -> None:
    faiss.omp_set_num_threads(previous[0])
    torch.set_num_threads(previous[1])


def _fork(target: Callable[[], None], log: Path) -> int:
    """Fork a child running ``target``; its exit status is 0 on success, 1 on an exception (logged)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            target()
        except BaseException:
            log.write_text(traceback.format_exc())
            code = 1
        os._exit(code)
    return pid


def _kill_at_statement(n: int | None, counter: Path | None = None) -> None:
    """In a child: SIGKILL itself when SQLite is about to run its ``n``-th statement (any
    connection); with ``counter``, count the statements into that file instead."""
    real = sqlite3.connect
    seen = [0]

    def tick(_statement: str) -> None:
        seen[0] += 1
        if counter is not None:
            counter.write_text(str(seen[0]))
        elif seen[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)

    def connect(*args, **kwargs):
        db = real(*args, **kwargs)
        db.set_trace_callback(tick)
        return db

    sqlite3.connect = connect


# --- crashes at every write point --------------------------------------------------------------
def _operation(kind: str, folder: Path, seed: int) -> Callable[[], None]:
    """What a crashed process was doing (deterministic in ``seed``)."""
    rng = np.random.default_rng(1000 + seed)
    if kind == "build":
        from procedural_perception.cli.memory import main

        return lambda: main(["build", *BUILD, "--out", str(folder), "--limit", "40", "--seed", str(seed + 1)])
    if kind == "add":
        x = rng.normal(size=(NEW_BATCH, DIM))

        def add() -> None:
            with VisualMemory.load(folder, device="cpu") as memory:
                memory.add(x, rng.integers(0, 4, NEW_BATCH), sources=[f"new{seed}-{i}.png" for i in range(NEW_BATCH)],
                           reason="crash trial")
                memory.save()
        return add
    victims = _victims(seed)

    def forget() -> None:
        with VisualMemory.load(folder, device="cpu") as memory:
            memory.forget_sources(victims, reason="crash trial")
            memory.save()
            memory.store.checkpoint()
    return forget


def _victims(seed: int) -> list[str]:
    rng = random.Random(seed)
    return rng.sample([f"base{b}-{i}.png" for b in range(BASE_BATCHES) for i in range(BASE_BATCH)], VICTIMS)


def _template(kind: str, work: Path) -> Path:
    """The memory each trial of ``kind`` starts from (copied per trial)."""
    folder = work / f"template-{kind}"
    if not folder.exists():
        if kind == "build":  # in a child: the worker itself never runs torch's parallel kernels
            from procedural_perception.cli.memory import main

            log = work / "template.log"
            pid = _fork(lambda: main(["build", *BUILD, "--out", str(folder), "--limit", "20", "--seed", "0"]), log)
            if os.waitpid(pid, 0)[1] != 0:
                raise RuntimeError(f"building the template memory failed: {log.read_text()[-2000:]}")
        else:
            base_memory(folder)
    return folder


def _dry_run(kind: str, seed: int, work: Path) -> tuple[set[str], int, float]:
    """Run the operation to the end once: the sources it leaves, its SQLite statements, its seconds."""
    folder = work / f"dry-{kind}-{seed}"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(_template(kind, work), folder)
    counter, log = work / "statements", work / "dry.log"
    op = _operation(kind, folder, seed)
    start = time.perf_counter()
    pid = _fork(lambda: (_kill_at_statement(None, counter), op()), log)
    _, status = os.waitpid(pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"the {kind} operation fails without a crash: {log.read_text()[-2000:]}")
    return stored_sources(folder), int(counter.read_text()), seconds


def crash_trial(kind: str, seed: int, work: Path, plan: tuple[set[str], int, float]) -> Outcome:
    """Kill a ``kind`` process at a random write point; the memory must recover whole and clean.

    ``plan``: what the uninterrupted operation leaves, its SQLite statements and its seconds."""
    built, statements, seconds = plan
    rng = random.Random(seed)
    folder = work / f"{kind}-{seed}"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(_template(kind, work), folder)
    before = stored_sources(folder)
    after = {"build": built, "add": before | {f"new{seed}-{i}.png" for i in range(NEW_BATCH)},
             "forget": before - set(_victims(seed))}[kind]
    at = rng.randint(1, statements) if rng.random() < 0.5 else None
    op = _operation(kind, folder, seed if kind != "build" else 0)
    pid = _fork(lambda: (_kill_at_statement(at), op()), work / f"{kind}-{seed}.log")
    if at is None:  # a random moment in time instead (file writes, checkpoints, Python code)
        time.sleep(rng.uniform(0.0, 1.2 * seconds))
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    start = time.perf_counter()
    try:
        report = check_memory(folder, repair=True)
        now = stored_sources(folder)
        again = check_memory(folder, repair=False)
    except Exception as err:  # noqa: BLE001 - any failure to reopen is the finding
        return False, len(before), time.perf_counter() - start, f"{kind} seed {seed}: {err}"
    recover = time.perf_counter() - start
    lost = min(len(now ^ before), len(now ^ after))
    problems = report.problems + again.problems + ([f"partial batch: {lost} samples off"] if lost else [])
    if kind == "forget" and now == after:
        problems += files_holding(folder, _victims(seed))
    where = f"statement {at}/{statements}" if at else "timed kill"
    return not problems, lost, recover, f"{kind} seed {seed} ({where}): {problems[:3]}"


def crash_trials(kind: str, trials: int, work: str) -> list[Outcome]:
    """``trials`` crash trials of ``kind`` (run inside the worker process)."""
    work_path = Path(work)
    plan = _dry_run(kind, 0, work_path)  # statements of add/forget do not depend on the seed
    return [crash_trial(kind, seed, work_path, plan) for seed in range(trials)]


# --- concurrent writers ------------------------------------------------------------------------
ADD_BATCHES, ADD_BATCH, REMOVALS = 6, 5, 6


def concurrent_trial(seed: int, work: str) -> Outcome:
    """Two adders and a forgetter at once, and a reader opened before them (run inside the worker)."""
    root = Path(work) / f"concurrent-{seed}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    folder = root / "m"
    base = base_memory(folder, seed)
    order = list(base)  # base source i has id i
    removed_log, ready, done = root / "removed.txt", root / "ready", root / "done"
    removed_log.write_text("")
    victims = random.Random(seed).sample(order, 2 * REMOVALS)

    def reader() -> None:
        memory = VisualMemory.load(folder, device="cpu")
        ready.write_text("1")
        violations, queries = [], 0
        while not done.exists() or queries < 5:
            committed = set(removed_log.read_text().split())  # removals that committed before this query
            ids = {order.index(s) for s in committed}
            probe = np.stack([base[s] for s in (sorted(committed) or order[:1])])
            _, found = memory.query(probe, 3)
            violations += [f"removed id {i} returned" for i in set(found.flatten().tolist()) & ids]
            memory.refresh()
            labels = memory.labels_of(torch.as_tensor(memory.ids)).tolist()
            counts = {label: labels.count(label) for label in set(labels) if label >= 100}
            violations += [f"half batch {label}: {n} of {ADD_BATCH}" for label, n in counts.items() if n != ADD_BATCH]
            queries += 1
        (root / "reader.txt").write_text("\n".join(violations[:20]) + f"\n#queries {queries}")

    def adder(who: int) -> Callable[[], None]:
        def run() -> None:
            rng = np.random.default_rng(100 * seed + who)
            with VisualMemory.load(folder, device="cpu") as memory:
                for b in range(ADD_BATCHES):
                    memory.add(rng.normal(size=(ADD_BATCH, DIM)), [100 + 10 * who + b] * ADD_BATCH,
                               sources=[f"w{who}-{b}-{i}.png" for i in range(ADD_BATCH)], reason=f"writer {who}")
        return run

    def remover() -> None:
        with VisualMemory.load(folder, device="cpu") as memory:
            for r in range(REMOVALS):
                pair = victims[2 * r : 2 * r + 2]
                memory.forget_sources(pair, reason="concurrent trial")
                with open(removed_log, "a") as handle:  # only after the removal committed
                    handle.write("\n".join(pair) + "\n")
                    handle.flush()
                    os.fsync(handle.fileno())

    reader_pid = _fork(reader, root / "reader.log")
    while not ready.exists():
        time.sleep(0.01)
    writers = [_fork(adder(0), root / "a0.log"), _fork(adder(1), root / "a1.log"), _fork(remover, root / "rm.log")]
    statuses = [os.waitpid(pid, 0)[1] for pid in writers]
    done.write_text("1")
    statuses.append(os.waitpid(reader_pid, 0)[1])
    logs = [p.read_text()[-300:] for p in sorted(root.glob("*.log"))]
    start = time.perf_counter()
    report = check_memory(folder, repair=True)
    now = stored_sources(folder)
    recover = time.perf_counter() - start
    expected = (set(order) - set(victims)) | {f"w{w}-{b}-{i}.png" for w in (0, 1) for b in range(ADD_BATCHES)
                                               for i in range(ADD_BATCH)}
    reader_out = (root / "reader.txt").read_text() if (root / "reader.txt").exists() else "reader died"
    violations = [line for line in reader_out.splitlines() if line and not line.startswith("#")]
    problems = report.problems + violations + logs + ([f"exit statuses {statuses}"] if any(statuses) else [])
    lost = len(now ^ expected)
    if lost:
        problems.append(f"{lost} samples differ from base - removals + batches")
    return not problems, lost, recover, f"seed {seed}: {problems[:3]}"


def concurrent_trials(trials: int, work: str) -> list[Outcome]:
    return [concurrent_trial(seed, work) for seed in range(trials)]


# --- corrupted database ------------------------------------------------------------------------
CORRUPTIONS = ("truncate", "header", "zero_page", "flip")


def corrupt_trial(seed: int, work: Path) -> Outcome:
    """Damage a closed memory's SQLite file; opening must fail clearly (file untouched), or ``check``
    must report the damage, or the data read must equal the original (damage in unused bytes)."""
    rng = random.Random(seed)
    folder = work / f"corrupt-{seed}"
    shutil.rmtree(folder, ignore_errors=True)
    base_memory(folder, seed)
    (folder / "index.faiss").unlink()  # the snapshot would serve the vectors without reading the database
    with VisualMemory.load(folder, device="cpu") as memory:
        original = (memory.store.all_samples(), memory.audit_log())
    db = folder / "memory.sqlite"
    data = bytearray(db.read_bytes())
    kind = CORRUPTIONS[seed % len(CORRUPTIONS)]
    page = 4096
    if kind == "truncate":
        data = data[: rng.randrange(len(data))]
    elif kind == "header":
        data[:16] = bytes(rng.randrange(256) for _ in range(16))
    elif kind == "zero_page":
        at = page * rng.randrange(1, len(data) // page)
        data[at : at + page] = bytes(page)
    else:
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    damaged = bytes(data)
    db.write_bytes(damaged)
    start = time.perf_counter()
    try:
        with VisualMemory.load(folder, device="cpu") as memory:
            read = (memory.store.all_samples(), memory.audit_log())
        report = check_memory(folder, repair=False)
    except DamagedMemoryError as err:
        message = str(err)
        clear = str(db) in message and ".recover" in message and "check" in message
        untouched = db.read_bytes() == damaged
        ok = clear and untouched
        return ok, 0, time.perf_counter() - start, f"{kind}: clear={clear} untouched={untouched}"
    except sqlite3.DatabaseError as err:
        return False, 0, time.perf_counter() - start, f"{kind}: raw sqlite error {err}"
    seconds = time.perf_counter() - start
    intact = all(np.array_equal(a, b) for a, b in zip(read[0], original[0], strict=True)) and read[1] == original[1]
    if intact or not report.ok:
        return True, 0, seconds, ""
    return False, BASE_BATCHES * BASE_BATCH, seconds, f"{kind} at seed {seed}: damage read back silently"


# --- soak --------------------------------------------------------------------------------------
def flat_memory(dim: int, folder: Path | None) -> VisualMemory:
    return VisualMemory(dim, path=folder, device="cpu")


IVF_LISTS, IVF_NPROBE = 6, 2  # few lists, few probed: most answers come from part of the memory


def ivf_memory(dim: int, folder: Path | None) -> VisualMemory:
    """An IVF memory over fixed coarse centroids (the same for the memory and its rebuild: IVF's
    answers equal a rebuild on the same centroids, which is what the soak checks)."""
    centroids = np.random.default_rng(1234).normal(size=(IVF_LISTS, dim))
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    return VisualMemory(dim, path=folder, device="cpu", backend="ivf",
                        backend_options={"centroids": centroids.astype(np.float32), "nprobe": IVF_NPROBE})


def milvus_memory(dim: int, folder: Path | None) -> VisualMemory:
    return VisualMemory(dim, path=folder, device="cpu", backend="milvus")


# Backends whose answers must equal a rebuild from the surviving rows: the exact ones, and IVF
# (on the same centroids).
EXACT_BACKENDS: dict[str, Callable[[int, Path | None], VisualMemory]] = {
    "flat": flat_memory, "ivf": ivf_memory, "milvus": milvus_memory}


def soak(make_memory: Callable[[int, Path | None], VisualMemory], ops: int, folder: Path | None,
         check_every: int = 500, seed: int = 0, dim: int = 8) -> tuple[int, list[str]]:
    """``ops`` random add/remove/query operations; every ``check_every`` (and at the end) compare all
    answers with a memory rebuilt (same backend, in RAM) from the rows that should survive.

    Returns ``(checks, mismatches)``. Duplicated vectors make similarity ties common."""
    rng = np.random.default_rng(seed)
    memory = make_memory(dim, folder)
    expected: dict[int, tuple[np.ndarray, int]] = {}
    mismatches, checks = [], 0
    for step in range(1, ops + 1):
        draw = rng.random()
        if draw < 0.45 or len(expected) < 12:
            n = int(rng.integers(1, 5))
            x = rng.normal(size=(n, dim)).astype(np.float32)
            if expected and rng.random() < 0.3:  # an exact copy of a stored vector: ties
                keys = list(expected)
                x[0] = expected[keys[int(rng.integers(len(keys)))]][0]
            labels = rng.integers(0, 5, n)
            ids = memory.add(x, labels, sources=[f"soak-{step}-{i}" for i in range(n)])
            expected.update((int(i), (v, int(y))) for i, v, y in zip(ids, x, labels, strict=True))
        elif draw < 0.75:
            keys = list(expected)
            gone = rng.choice(keys, size=min(int(rng.integers(1, 4)), len(keys)), replace=False)
            memory.remove(gone, reason="soak")
            for i in gone:
                del expected[int(i)]
        else:
            memory.query(rng.normal(size=(2, dim)), int(rng.integers(1, min(10, len(expected)) + 1)))
        if step % check_every == 0 or step == ops:
            checks += 1
            mismatches += [f"step {step}: {m}" for m in compare_with_rebuild(memory, expected, make_memory, rng)]
    memory.close()
    return checks, mismatches


def compare_with_rebuild(memory: VisualMemory, expected: dict[int, tuple[np.ndarray, int]],
                         make_memory: Callable[[int, Path | None], VisualMemory], rng: np.random.Generator) -> list[str]:
    """Differences between ``memory`` and a fresh memory of the ``expected`` rows (ids mapped)."""
    keys = sorted(expected)
    fresh = make_memory(memory.dim, None)
    fresh.add(np.stack([expected[i][0] for i in keys]), [expected[i][1] for i in keys])  # ids 0.. in id order
    original = np.array(keys, dtype=np.int64)
    problems = []
    if memory.ids.tolist() != keys or sorted(memory.store.ids_and_labels()[0].tolist()) != keys:
        problems.append("stored ids differ from the surviving rows")
    queries = np.concatenate([rng.normal(size=(16, memory.dim)),
                              np.stack([expected[keys[int(j)]][0] for j in rng.integers(0, len(keys), 8)])])
    for k in sorted({1, 5, min(20, len(keys)), len(keys)}):
        sims, ids = memory.query(queries, k)
        fresh_sims, fresh_ids = fresh.query(queries, k)
        if not (torch.equal(sims, fresh_sims) and torch.equal(ids, torch.from_numpy(original[fresh_ids.numpy()]))):
            problems.append(f"query k={k} differs")
        for rule in RULES:
            if not torch.equal(memory.classify(queries, k, rule), fresh.classify(queries, k, rule)):
                problems.append(f"classify k={k} rule={rule} differs")
    fresh.close()
    return problems


# --- the rows ----------------------------------------------------------------------------------
def scenarios(quick: bool | None = None) -> list[dict]:
    """The memory fault rows; ``quick`` (default: the ``QUICK`` environment variable) runs fewer trials."""
    quick = quick_env() if quick is None else quick
    crashes, concurrent, corrupt, ops = (4, 1, 8, 500) if quick else (50, 5, 40, 10_000)
    builds = 1 if quick else crashes  # each build trial embeds images: the slowest trial
    rows, threads = [], single_threaded()
    with work_folder() as tmp:
        work = Path(tmp)
        outcomes = concurrent_trials(concurrent, str(work))
        rows.append(_row("memory: 2 adders + 1 forgetter + 1 reader at once", outcomes,
                         "nothing: writers wait for SQLite's write lock (busy timeout 60 s)"))
        for kind in ("build", "add", "forget"):
            outcomes = crash_trials(kind, builds if kind == "build" else crashes, str(work))
            rows.append(_row(f"memory: kill -9 during {kind}", outcomes,
                             "nothing on reopen; `make memory ARGS=\"check <memory>\"` reports it consistent "
                             "and rewrites a stale snapshot"))
        outcomes = [corrupt_trial(seed, work) for seed in range(corrupt)]
        rows.append(_row("memory: corrupted SQLite file", outcomes,
                         "error: <memory>/memory.sqlite is damaged or not a visual memory database (...). Nothing "
                         "was written to it. Recover the readable rows with `sqlite3 ... .recover | sqlite3 ...`"))
        for name, make in EXACT_BACKENDS.items():
            start = time.perf_counter()
            checks, mismatches = soak(make, ops, work / f"soak-{name}")
            survived = checks - len({m.split(":")[0] for m in mismatches})
            rows.append(row(f"memory soak ({name}): {ops} add/remove/query", float(survived),
                            f"of {checks} checks equal a rebuild", trials=checks, survived=survived,
                            lost=len(mismatches), recover_s=round(time.perf_counter() - start, 2),
                            user_message="(none: every answer equals a rebuild)", failures=mismatches[:5]))
    restore_threads(threads)
    return rows


if __name__ == "__main__":
    write_rows("faults_memory", scenarios())
