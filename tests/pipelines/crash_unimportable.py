"""A module that the coordinator imports but a worker cannot: importing it dies in a pool process.

How it dies comes from the marker file of the pool's owner (`crash_pipeline.marker_path`, keyed by
the parent pid, so it never affects another test process) or, for `rivers-worker` subprocesses that
a test starts itself, from CRASH_PIPELINE_IMPORT in their environment.
"""

from __future__ import annotations

import os

import rivers as rs
from tests.pipelines.crash_pipeline import die, marker_path


def _how() -> str:
    marker = marker_path(os.getppid())
    if marker.exists():
        return marker.read_text().strip()
    return os.environ.get("CRASH_PIPELINE_IMPORT", "")


_HOW = _how()
if _HOW:
    die(_HOW, "importing tests.pipelines.crash_unimportable")


@rs.Asset(retry=rs.RetryPolicy(max_retries=0))
def victim(upstream: int) -> int:
    return upstream + 1
