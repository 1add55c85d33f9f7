"""A module whose asset is gone in worker processes: the spec's reference no longer resolves there."""

from __future__ import annotations

import multiprocessing

import rivers as rs
from rivers.executors.pool_process import STEP_PROCESS_NAME

if not multiprocessing.current_process().name == STEP_PROCESS_NAME:

    @rs.Asset(retry=rs.RetryPolicy(max_retries=0))
    def victim(upstream: int) -> int:
        return upstream + 1
