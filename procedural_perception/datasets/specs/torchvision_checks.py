"""What torchvision's data-set classes check, and the one check they make that fixtures cannot pass.

torchvision 0.29's ``Flowers102`` and ``CelebA`` refuse to load (``RuntimeError: Dataset not found
or corrupted``, even with ``download=False``) unless their label files have the md5 of the
published files. A fixture written in the native layout (``scipy.io.savemat`` for Flowers102's
``.mat`` files, text files for CelebA) cannot have those checksums, and neither can a user's own
re-saved copy. The specs therefore subclass the two classes and replace the integrity test with a
presence test of the same files, then compare the md5 themselves: a file that differs from the
published one is *reported* (its labels are used as they are; numbers from it may not be
comparable with published ones) instead of making the data set unreadable. Everything else
(parsing the ``.mat`` and text files, splits, class names) is torchvision's.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from torchvision.datasets.utils import calculate_md5


def md5_differences(folder: Path, expected: list[tuple[str, str]]) -> list[str]:
    """One line per file of ``expected`` ``(name, md5)`` whose md5 differs from the published one."""
    lines = []
    for name, md5 in expected:
        actual = calculate_md5(str(folder / name))
        if actual != md5:
            lines.append(f"{folder / name} differs from the published file (md5 {actual}, torchvision expects {md5}); "
                         "its labels are used as they are, so numbers may not match published ones")
    return lines


def report_md5(what: str, folder: Path, expected: list[tuple[str, str]]) -> list[str]:
    """Print :func:`md5_differences` as warnings and return them."""
    lines = md5_differences(folder, expected)
    console = Console(stderr=True, soft_wrap=True)
    for line in lines:
        console.print(f"{what}: {line}", style="yellow", markup=False)
    return lines
