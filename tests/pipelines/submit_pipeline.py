"""Repositories for the `rivers submit` / `rivers runs` / `rivers cancel` tests (tests/e2e/test_cli_submit_runs.py).

`slow`, `also_slow` and `slowest` wait while the file named by $SUBMIT_TEST_GATE exists (at most 60 s), so that a
test can hold a run in flight and cancel it; `warehouse` keeps its outputs under $SUBMIT_TEST_STORE.
"""

from __future__ import annotations

import os
import time

from obstore.store import LocalStore

import rivers as rs


def _wait_for_gate() -> None:
    gate = os.environ.get("SUBMIT_TEST_GATE", "")
    deadline = time.monotonic() + 60
    while gate and os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.05)


@rs.Asset
def raw() -> int:
    return 1


@rs.Asset
def cooked(raw: int) -> int:
    return raw + 1


@rs.Asset
def burnt(raw: int) -> int:
    raise ValueError(f"burnt at {raw}")


@rs.Asset
def slow() -> int:
    _wait_for_gate()
    return 1


@rs.Asset
def also_slow() -> int:
    _wait_for_gate()
    return 2


@rs.Asset
def slowest() -> int:
    _wait_for_gate()
    return 3


@rs.Asset
def after_slow(slow: int, also_slow: int, slowest: int) -> int:
    return slow + also_slow + slowest


shop = rs.CodeRepository(assets=[raw, cooked], default_executor=rs.Executor.in_process())
kitchen = rs.CodeRepository(assets=[raw, cooked, burnt], default_executor=rs.Executor.in_process())
warehouse = rs.CodeRepository(  # through Redis to rivers-worker: outputs in a store every process reads
    assets=[slow, also_slow, slowest, after_slow], default_executor=rs.Executor.parallel(),
    default_io_handler=rs.PickleIOHandler(LocalStore(os.environ.get("SUBMIT_TEST_STORE", "/tmp"), mkdir=True)),
)


_attempts = {"flaky": 0}  # per process: the coordinator runs `pantry`'s steps itself (in_process)


@rs.Asset(retry=rs.RetryPolicy(max_retries=2))
def flaky() -> int:
    _attempts["flaky"] += 1
    if _attempts["flaky"] == 1:
        raise ConnectionError("the first attempt of this process fails")
    return _attempts["flaky"]


pantry = rs.CodeRepository(assets=[flaky], default_executor=rs.Executor.in_process())
