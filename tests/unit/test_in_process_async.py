"""Executor.in_process(): async steps of one run run concurrently on one event loop; sync ones one at a time."""

from __future__ import annotations

import asyncio
import threading

import rivers as rs

_barrier: asyncio.Barrier | None = None
_lock = threading.Lock()


def _meet() -> asyncio.Barrier:
    global _barrier
    with _lock:
        if _barrier is None:
            _barrier = asyncio.Barrier(2)
        return _barrier


@rs.Asset
async def left() -> str:
    await asyncio.wait_for(_meet().wait(), 10)  # passes only while `right` waits at the same time
    return "left"


@rs.Asset
async def right() -> str:
    await asyncio.wait_for(_meet().wait(), 10)
    return "right"


@rs.Asset
def both(left: str, right: str) -> str:
    return f"{left}+{right}"


def test_async_steps_of_a_run_run_concurrently_in_process() -> None:
    global _barrier
    _barrier = None
    repo = rs.CodeRepository([left, right, both], default_executor=rs.Executor.in_process())
    result = repo.materialize()
    assert result.success, result.failed_assets
    assert repo.load_node("both") == "left+right"


def test_sync_steps_in_process_run_one_at_a_time_in_the_calling_thread() -> None:
    seen: list[tuple[str, int]] = []
    caller = threading.get_ident()

    @rs.Asset
    def first() -> int:
        seen.append(("first", threading.get_ident()))
        return 1

    @rs.Asset
    def second() -> int:
        seen.append(("second", threading.get_ident()))
        return 2

    repo = rs.CodeRepository([first, second], default_executor=rs.Executor.in_process())
    assert repo.materialize().success
    assert sorted(name for name, _ in seen) == ["first", "second"]
    assert {thread for _, thread in seen} == {caller}
