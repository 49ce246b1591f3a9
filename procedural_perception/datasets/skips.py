"""What a reader left out, and why: found when listing (scan time) and when decoding (read time).

Scan-time problems are a list kept by the data set. Read-time failures happen inside DataLoader
worker processes, whose own copies of the data set vanish with them, so they are appended to a
small file that every process of the run shares (:class:`ReadFailures`, one ``write`` per line on
a file opened ``O_APPEND``, which POSIX keeps whole between processes). :func:`write_report` writes
both lists in full, one line per file, so the summary printed on the console may name only the
first bad file while the report names every one.
"""

from __future__ import annotations

import os
import tempfile
import uuid
import weakref
from pathlib import Path

from procedural_perception.core.atomic import atomic_write_text
from procedural_perception.datasets.image_files import printable

Skipped = list[tuple[str, str]]  # (printable path or name, reason)


class ReadFailures:
    """Read-time failures ``(index, source, reason)`` shared by the processes that read one data set.

    The log file is created on the first failure under the temporary folder (or at ``path``) and
    removed when the object that created it is collected; copies sent to worker processes append
    to the same file and never remove it.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        owned = path is None
        self.path = Path(path) if path else Path(tempfile.gettempdir()) / f"pp-read-failures-{uuid.uuid4().hex}.tsv"
        if owned:
            weakref.finalize(self, _remove, self.path)

    def record(self, index: int, source: str, reason: str) -> None:
        line = f"{index}\t{_one_line(printable(source))}\t{_one_line(reason)}\n".encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def entries(self) -> list[tuple[int, str, str]]:
        """Every failure recorded so far by any process, in the order they were written."""
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            index, source, reason = line.split("\t", 2)
            out.append((int(index), source, reason))
        return out

    def __len__(self) -> int:
        return len(self.entries())


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def write_report(path: str | Path, title: str, skipped: Skipped,
                 read_failures: list[tuple[int, str, str]] = (), replaced_by: str = "") -> Path:
    """Write every skipped entry and read failure of one data set to ``path`` (atomically).

    One line per entry: ``<when>\\t<path>\\t<reason>``, ``when`` being ``scan`` or ``read``;
    ``replaced_by`` says in a header line what a read failure became (for example "the next
    readable file"). Returns ``path``.
    """
    lines = [f"# {title}: {len(skipped)} entries skipped when listed, {len(read_failures)} failed when read"
             + (f" ({replaced_by})" if replaced_by and read_failures else "")]
    lines += [f"scan\t{_one_line(printable(p))}\t{_one_line(r)}" for p, r in skipped]
    lines += [f"read\t{_one_line(s)}\t{_one_line(r)}" for _, s, r in read_failures]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return Path(path)


def summary(what: str, skipped: Skipped, checked: int, report: Path | None) -> str:
    """One console line: how many entries were skipped, the first one, and where the rest are."""
    where = f"; every one is listed in {printable(report)}" if report else ""
    return (f"{what}: skipped {len(skipped)} entries ({checked} image files checked; first: {skipped[0][0]}: "
            f"{skipped[0][1]}){where}")
