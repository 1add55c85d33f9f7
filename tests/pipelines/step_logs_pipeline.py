"""Pipelines for the step-log tests (tests/e2e/test_step_logs.py): steps that print, log and fail.

Outputs go to a pickle store (STEP_LOGS_STORE, else a directory under TMPDIR), so that steps leave the
coordinator's process: pool processes, rivers-workers.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from obstore.store import LocalStore

import rivers as rs

SLOW_S = 1.5  # each of `slow`'s steps: long enough for `rivers logs --follow` and the display to see it run

STORE = Path(os.environ.get("STEP_LOGS_STORE") or Path(tempfile.gettempdir()) / "rivers-step-logs-store")
STORE.mkdir(parents=True, exist_ok=True)


@rs.Asset
def chatty(context: rs.AssetExecutionContext) -> int:
    print(f"chatty printed from pid {os.getpid()}")
    context.log.info(f"chatty logged from pid {os.getpid()}")
    context.log.warning("chatty warns: the coffee is cold")
    return 1


@rs.Asset
async def awaited(context: rs.AssetExecutionContext) -> int:
    print(f"awaited printed from pid {os.getpid()}")
    context.log.info("awaited logged")
    return 2


@rs.Asset
def fails(chatty: int) -> int:
    print("fails: step one done")
    print("fails: about to divide", file=sys.stderr)
    return chatty // 0


HANDLER = rs.PickleIOHandler(LocalStore(str(STORE)))
repo = rs.CodeRepository(assets=[chatty, awaited, fails], default_io_handler=HANDLER,
                         default_executor=rs.Executor.parallel(max_workers=2))


@rs.Asset
def slow_first(context: rs.AssetExecutionContext) -> int:
    context.log.warning("slow_first warns while it runs")
    time.sleep(SLOW_S)
    return 1


@rs.Asset
def slow_second() -> int:
    time.sleep(SLOW_S)
    print("slow_second is done")
    return 2


# One pool process: while one step runs, the other waits in the queue.
slow = rs.CodeRepository(assets=[slow_first, slow_second], default_io_handler=HANDLER,
                         default_executor=rs.Executor.parallel(max_workers=1))


# Every step in a step pod (`rivers-worker --executor kubernetes --step JOB_ID`).
pods = rs.CodeRepository(assets=[chatty, awaited, fails], default_io_handler=HANDLER,
                         default_executor=rs.Executor.kubernetes(max_concurrent_steps=2))


@rs.Asset(retry=rs.RetryPolicy(max_retries=1))
def flaky() -> int:
    """Fails its first attempt (while the file $FLAKY_MARKER does not exist yet), succeeds its second."""
    marker = Path(os.environ["FLAKY_MARKER"])
    if not marker.exists():
        marker.touch()
        print("flaky: first attempt fails")
        raise RuntimeError("first attempt")
    print("flaky: second attempt works")
    return 1


retried = rs.CodeRepository(assets=[flaky], default_io_handler=HANDLER, default_executor=rs.Executor.parallel())
