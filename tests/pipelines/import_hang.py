"""A step whose module blocks its import until a release file appears, in rivers-worker processes only.

Armed by IMPORT_HANG_DIR=<directory> in the environment of the rivers-worker a test starts: the importing
process touches `<directory>/hanging-<pid>`, then waits for `<directory>/release` (at most 60 s, so that
a failing test never leaves it behind for long) and finishes the import normally.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import rivers as rs

RELEASE = "release"


def _hang(directory: Path) -> None:
    (directory / f"hanging-{os.getpid()}").touch()
    deadline = time.monotonic() + 60
    while not (directory / RELEASE).exists() and time.monotonic() < deadline:
        time.sleep(0.02)


if os.environ.get("IMPORT_HANG_DIR"):
    _hang(Path(os.environ["IMPORT_HANG_DIR"]))


@rs.Asset(retry=rs.RetryPolicy(max_retries=0))
def import_hang(upstream: int) -> int:
    return upstream + 1
