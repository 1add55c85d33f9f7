"""A step whose module ends the process importing it with os._exit(3) the first time only, in rivers-worker
processes only: armed by IMPORT_EXIT_ONCE_DIR in the rivers-worker's environment, where the first import leaves a
marker file before it exits, and every later import finds it and goes on. The test process imports it harmlessly.
"""

from __future__ import annotations

import os
from pathlib import Path

import rivers as rs
from tests.pipelines.distributed_pipeline import Scratch

_armed = os.environ.get("IMPORT_EXIT_ONCE_DIR")
if _armed and not (Path(_armed) / "exited").exists():
    (Path(_armed) / "exited").write_text(str(os.getpid()))
    os._exit(3)


@rs.Asset(retry=rs.RetryPolicy(max_retries=1))
def exits_on_first_import(gated: int, scratch: Scratch) -> int:
    scratch.count("exits_on_first_import")
    return gated + 1
