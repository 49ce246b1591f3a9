"""Listing a data folder fast and honestly: a walk that survives hostile trees, header checks in parallel.

Listing ImageNet's 1.28 M training files used to decode every file fully on one thread first (hours).
Here a folder is walked once (``os.scandir``: no ``stat`` per file) and every image file gets the
header-and-tail check of :func:`~procedural_perception.datasets.image_files.header_problem`
(~0.1 ms a file, against ~3 ms to decode an ImageNet-sized JPEG), spread over worker processes
when there are many files. ``make bench-scan`` measures both on a synthetic 100k-file tree.

The walk

* follows symlinked folders (data sets are often assembled from links) but enters each real folder
  once, keyed by ``(st_dev, st_ino)``: a link back to a parent (a loop) or a second link to a folder
  already listed is reported, not followed. ``os.walk(followlinks=True)``, which torchvision's
  ``ImageFolder`` uses, keeps no such record and lists a looped folder again at every level;
* reports broken links, links that resolve to themselves and folders it may not list;
* yields every other entry (regular files, FIFOs, sockets, devices), in sorted path order; the
  checks refuse what is not a regular file without blocking on it.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import stat
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from rich.console import Console
from rich.progress import track

from procedural_perception.datasets.image_files import IMAGE_EXTENSIONS, header_problem, printable

T = TypeVar("T")
# Below this many files the checks run in the calling process: starting workers costs more.
PARALLEL_FROM = 4096
# Files per task sent to a worker process: large enough that the hand-over is negligible
# (~0.1 ms of checks a file), small enough that the progress display moves.
CHUNK = 1024
# Worker processes at most (header checks are CPU-bound in Python; more rarely pays on one disk).
MAX_PROCESSES = 8
# Plain progress lines (no terminal) at most this often, in seconds.
LOG_EVERY_S = 10.0

Skipped = list[tuple[str, str]]  # (printable path, reason)


def walk_files(root: str | Path, skipped: Skipped) -> list[Path]:
    """Every non-folder entry below ``root`` in sorted path order (see the module docstring);
    problems of the tree itself are appended to ``skipped``.

    Depth first in name order with a stack of folder listings (no recursion, so a deep tree cannot
    exhaust Python's stack), which is already the order ``sorted()`` gives ``Path`` objects.
    """
    root = Path(root)
    visited = {_identity(os.stat(root))}
    files: list[Path] = []
    stack = [iter(_listing(root, skipped))]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        folder = _folder_to_enter(entry, visited, skipped)
        if folder is not None:
            stack.append(iter(_listing(folder, skipped)))
        elif not _is_folder(entry):
            files.append(Path(entry.path))
    return files


def _listing(folder: str | Path, skipped: Skipped) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda e: e.name)
    except OSError as err:
        skipped.append((printable(folder), f"cannot list folder: {err.strerror or err}"))
        return []


def _is_folder(entry: os.DirEntry) -> bool:
    """A folder or a link to one (entered or refused by :func:`_folder_to_enter`, never a file);
    broken links and loops count as handled too (reported there)."""
    if not entry.is_symlink():
        return entry.is_dir(follow_symlinks=False)
    try:
        return stat.S_ISDIR(os.stat(entry.path).st_mode)
    except OSError:
        return True  # reported by _folder_to_enter


def _folder_to_enter(entry: os.DirEntry, visited: set, skipped: Skipped) -> str | None:
    """The folder ``entry`` leads to when it is one not entered yet (recorded in ``visited``); None
    for files and for folders refused (already listed, a loop, a broken link: reported)."""
    path = entry.path
    try:
        if entry.is_symlink():
            info = os.stat(path)
            if not stat.S_ISDIR(info.st_mode):
                return None
            seen = "symlinked folder already listed (a loop or a second link to " \
                   f"{printable(os.path.realpath(path))})"
        elif entry.is_dir(follow_symlinks=False):
            info = entry.stat(follow_symlinks=False)
            seen = "folder already listed (reached again through a symlink)"
        else:
            return None
    except OSError as err:
        reason = {errno.ELOOP: "symlink loop (the link resolves to itself)",
                  errno.ENOENT: "broken symlink (its target does not exist)"}.get(err.errno)
        skipped.append((printable(path), reason or f"cannot follow: {err.strerror or err}"))
        return None
    if _identity(info) in visited:
        skipped.append((printable(path), seen))
        return None
    visited.add(_identity(info))
    return path


def _identity(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


def has_image_extension(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _check_chunk(paths: Sequence[str]) -> list[tuple[str | None, tuple[int, int]]]:
    return [header_problem(p) for p in paths]


def check_files(paths: Sequence[Path], description: str = "checking files",
                processes: int | None = None) -> list[tuple[str | None, tuple[int, int]]]:
    """:func:`header_problem` of every path, in order: ``[(reason or None, (width, height))]``.

    ``processes``: worker processes (default :func:`default_processes` from :data:`PARALLEL_FROM`
    files on; 1 checks in this process). Workers are forked (cheap, as the DataLoader does) and only run
    Pillow's header parsing.
    """
    if processes is None:
        processes = default_processes() if len(paths) >= PARALLEL_FROM else 1
    chunks = [[os.fspath(p) for p in paths[i:i + CHUNK]] for i in range(0, len(paths), CHUNK)]
    results: list[tuple[str | None, tuple[int, int]]] = []
    if processes <= 1 or len(chunks) <= 1:
        for chunk in progress(chunks, len(chunks), f"{description} ({len(paths):,} files)"):
            results.extend(_check_chunk(chunk))
        return results
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    with context.Pool(processes) as pool:
        for chunk_results in progress(pool.imap(_check_chunk, chunks), len(chunks),
                                      f"{description} ({len(paths):,} files, {processes} processes)"):
            results.extend(chunk_results)
    return results


def default_processes() -> int:
    """The usable cores shared by the ranks of this node (each rank of a DDP run lists its data
    itself; ``LOCAL_WORLD_SIZE`` is set by the launchers), at most :data:`MAX_PROCESSES`."""
    ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, min(len(os.sched_getaffinity(0)) // ranks, MAX_PROCESSES))


def progress(items: Iterable[T], total: int, description: str) -> Iterator[T]:
    """``items`` with progress: a transient Rich bar in a terminal, and in a log (no terminal) a
    plain line at most every :data:`LOG_EVERY_S` seconds and one at the end."""
    console = Console(stderr=True)
    if console.is_terminal:
        yield from track(items, total=total, description=description, transient=True, console=console)
        return
    start = last = time.monotonic()
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= LOG_EVERY_S and done < total:
            print(f"{description}: {done}/{total} ({now - start:.0f} s)", file=sys.stderr, flush=True)
            last = now
    if time.monotonic() - start >= LOG_EVERY_S:
        print(f"{description}: done in {time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)


def find_images(root: str | Path, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> list[Path]:
    """All files below ``root`` whose suffix is an image extension, in sorted path order (nothing
    is opened: :func:`scan_images` checks them)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Image folder {printable(root)} does not exist; set data.root=/path/to/images.")
    files = [p for p in walk_files(root, []) if p.suffix.lower() in extensions]
    if not files:
        raise FileNotFoundError(f"No images ({', '.join(extensions)}) found below {printable(root)}.")
    return files


def scan_images(paths: Sequence[Path], skipped: Skipped, description: str = "checking images",
                processes: int | None = None) -> tuple[list[int], list[tuple[int, int]]]:
    """Header-check ``paths``: returns the positions of the files that pass and their
    ``(width, height)``; every refused file is appended to ``skipped`` with its reason."""
    kept, sizes = [], []
    for i, (reason, size) in enumerate(check_files(paths, description, processes)):
        if reason is None:
            kept.append(i)
            sizes.append(size)
        else:
            skipped.append((printable(paths[i]), reason))
    return kept, sizes
