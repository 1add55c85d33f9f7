"""A module whose asset is gone in worker processes: the spec's reference no longer resolves there."""

from __future__ import annotations

import multiprocessing

import rivers as rs

if not multiprocessing.current_process().name.startswith("LokyProcess"):

    @rs.Asset(retry=rs.RetryPolicy(max_retries=0))
    def victim(upstream: int) -> int:
        return upstream + 1
