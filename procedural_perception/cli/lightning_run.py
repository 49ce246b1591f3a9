"""``lightning run``: the launcher command of the design card, forwarded to Lightning's own launcher.

Lightning 2.6 installs ``fabric run`` but no ``lightning`` command. This entry point (installed as
``lightning`` by ``make setup``) hands its arguments to ``lightning.fabric.cli`` unchanged, so
``lightning run --accelerator cpu --devices 1 --num-nodes 2 --node-rank 0 ... procedural_perception/cli/train.py``
is exactly ``fabric run ...``. The Lightning 2.0 spelling ``lightning run model ...`` is accepted too.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run Lightning's launcher with ``argv`` (default: the command line) under the name ``lightning``."""
    from lightning.fabric.cli import _main

    args = list(sys.argv[1:] if argv is None else argv)
    if args[:2] == ["run", "model"]:  # Lightning 2.0's `lightning run model script.py`
        args = ["run", *args[2:]]
    try:
        _main.main(args=args, prog_name="lightning", standalone_mode=True)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
