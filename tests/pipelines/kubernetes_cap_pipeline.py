"""Wide steps that record how many of them run at once (for Executor.kubernetes(max_concurrent_steps=...))."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import rivers as rs
from tests.pipelines.distributed_pipeline import Scratch, make_repo

WIDTH = 8


def _occupy(scratch: Scratch, name: str) -> int:
    """Mark this step running, record how many were running with it, hold a moment, unmark."""
    running = Path(scratch.dir) / "running"
    running.mkdir(exist_ok=True)
    mine = running / name
    mine.touch()
    try:
        together = len(list(running.iterdir()))
        with (Path(scratch.dir) / "together").open("a") as fh:
            fh.write(f"{together}\n")
        time.sleep(0.3)
        return os.getpid()
    finally:
        mine.unlink()


def _step(index: int) -> Any:
    def step(scratch: Scratch) -> int:
        return _occupy(scratch, f"wide_{index}")

    step.__name__ = step.__qualname__ = f"wide_{index}"
    asset = rs.Asset(step)
    globals()[f"wide_{index}"] = asset  # importable by reference: module attribute == the definition
    return asset


WIDE = [_step(index) for index in range(WIDTH)]


def repo_in(directory: Path, executor: rs.Executor) -> rs.CodeRepository:
    return make_repo(WIDE, directory, default_executor=executor)
