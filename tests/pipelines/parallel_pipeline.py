"""Pipelines for tests/e2e/test_parallel.py: module-level, so pool processes import them by reference.

Workers cannot see the test's variables, so everything a step needs to know (where to record
things) arrives through resources, which travel to the worker as JSON.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from pydantic import PrivateAttr

import rivers as rs
from rivers.io.base import InputContext


class Scratch(rs.Resource):
    """A directory shared by the test and the steps; `setup()` leaves a file per process that set it up."""

    dir: str
    _ready: bool = PrivateAttr(default=False)

    def setup(self) -> None:
        self._ready = True
        (Path(self.dir) / f"setup-{os.getpid()}-{uuid.uuid4().hex}").touch()

    def teardown(self) -> None:
        (Path(self.dir) / f"teardown-{os.getpid()}-{uuid.uuid4().hex}").touch()

    def count(self, name: str) -> int:
        """Append one line to `name` and return how many lines it has (a cross-process counter)."""
        path = Path(self.dir) / name
        with path.open("a") as fh:
            fh.write(f"{os.getpid()}\n")
        return len(path.read_text().splitlines())

    def lines(self, name: str) -> int:
        path = Path(self.dir) / name
        return len(path.read_text().splitlines()) if path.exists() else 0

    def wait_for(self, name: str, at_least: int = 1, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.lines(name) < at_least:
            if time.monotonic() > deadline:
                raise TimeoutError(f"'{name}' never reached {at_least} lines")
            time.sleep(0.01)


class RecordingHandler(rs.PickleIOHandler):
    """A pickle handler that records the pid of every process that loads an input."""

    record_dir: str

    def load_input(self, context: InputContext) -> Any:
        with (Path(self.record_dir) / "loads").open("a") as fh:
            fh.write(f"{context.asset_name} {context.downstream_asset} {os.getpid()}\n")
        return super().load_input(context)


class LockedHandler(rs.PickleIOHandler):
    """A handler holding a lock: the instance cannot be pickled, but it travels as JSON."""

    _lock: Any = PrivateAttr(default_factory=threading.Lock)

    def handle_output(self, context: Any, obj: Any) -> None:
        with self._lock:
            super().handle_output(context, obj)


class PipelineError(ValueError):
    """Raised by `bad`; must reach the caller with its own type."""


# -- siblings, inputs, resources ---------------------------------------------------------------

@rs.Asset
def left() -> int:
    return os.getpid()


@rs.Asset
def right() -> int:
    return os.getpid()


@rs.Asset
def joined(left: int, right: int) -> dict[str, int]:
    return {"left": left, "right": right, "joined": os.getpid()}


@rs.Asset
def uses_scratch(scratch: Scratch) -> dict[str, Any]:
    return {"pid": os.getpid(), "ready": scratch._ready, "dir": scratch.dir}


@rs.Asset(io_handler="locked")
def locked_value() -> int:
    return 41


@rs.Asset
def after_locked(locked_value: int) -> int:
    return locked_value + 1


@rs.Asset
def chatty(context: rs.AssetExecutionContext) -> int:
    print("hello from the worker")
    context.log.warning("a context.log record")
    return 1


# -- errors ------------------------------------------------------------------------------------

@rs.Asset
def bad() -> int:
    raise PipelineError("boom 42")


@rs.Asset
def after_bad(bad: int) -> int:
    return bad


@rs.Asset
def independent() -> str:
    return "still here"


# -- sync and async together -------------------------------------------------------------------

@rs.Asset
def sync_side(scratch: Scratch) -> int:
    scratch.count("sync-started")
    scratch.wait_for("async-started")  # only returns if the async step runs at the same time
    return os.getpid()


@rs.Asset
async def async_side(scratch: Scratch) -> int:
    scratch.count("async-started")
    deadline = time.monotonic() + 30
    while scratch.lines("sync-started") < 1:
        if time.monotonic() > deadline:
            raise TimeoutError("the sync step never started")
        await asyncio.sleep(0.01)
    return os.getpid()


_running = 0
_peak = 0
_target = 1


def async_peak() -> int:
    return _peak


def reset_async_peak(target: int) -> None:
    """Each tracked step stays in flight until `target` of them have been in flight together (or 10 s).

    The assertions never depend on timing: a limit is respected or not whatever the machine's speed.
    """
    global _running, _peak, _target
    _running = _peak = 0
    _target = target


async def _tracked() -> int:
    global _running, _peak
    _running += 1
    _peak = max(_peak, _running)
    deadline = time.monotonic() + 10
    try:
        while _peak < _target and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)  # linger: without a limit, the steps still waiting would now pile in
    finally:
        _running -= 1
    return _peak


@rs.Asset
async def async_1() -> int:
    return await _tracked()


@rs.Asset
async def async_2() -> int:
    return await _tracked()


@rs.Asset
async def async_3() -> int:
    return await _tracked()


@rs.Asset
async def async_4() -> int:
    return await _tracked()


@rs.Asset
async def async_5() -> int:
    return await _tracked()


@rs.Asset
async def async_6() -> int:
    return await _tracked()


ASYNC_STEPS = [async_1, async_2, async_3, async_4, async_5, async_6]


# -- per-asset executor override ---------------------------------------------------------------

@rs.Asset(metadata={"rivers/executor": "in_process"})
def pinned_in_process() -> int:
    return os.getpid()


@rs.Asset(metadata={"rivers/executor": "parallel"})
def pinned_parallel() -> int:
    return os.getpid()


# -- worker death ------------------------------------------------------------------------------

def _die(how: str) -> None:
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "segfault":
        import ctypes

        ctypes.string_at(0)
    os._exit(3)


@rs.Asset
def dies_once(scratch: Scratch) -> int:
    """Kills its process on the first attempt, after the sibling has started."""
    starts = scratch.count("dies_once")
    if starts == 1:
        scratch.wait_for("sibling")
        _die("sigkill")
    return starts


@rs.Asset
def always_dies(scratch: Scratch) -> int:
    scratch.count("always_dies")
    scratch.wait_for("sibling")
    _die(Path(scratch.dir, "how").read_text())
    return 0


def _sibling_of(scratch: Scratch, killer: str) -> int:
    """Busy until the killer has started twice, i.e. until after the first pool break."""
    starts = scratch.count("sibling")
    scratch.wait_for(killer, at_least=2)
    return starts


@rs.Asset
def sibling(scratch: Scratch) -> int:
    return _sibling_of(scratch, "dies_once")


@rs.Asset
def sibling_of_always(scratch: Scratch) -> int:
    return _sibling_of(scratch, "always_dies")


@rs.Asset
def after_death(always_dies: int) -> int:
    return always_dies



# -- graph assets ------------------------------------------------------------------------------

@rs.Task
def multiples(factor: int) -> list[int]:
    return [factor * i for i in range(4)]


@rs.Task
def with_pid(x: int) -> tuple[int, int]:
    return x, os.getpid()


@rs.Task
def gathered(values: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return [*values, (-1, os.getpid())]


@rs.Asset.from_graph(retry=rs.RetryPolicy(1, retry_on=[PipelineError]))
def graph_in_pool() -> list[tuple[int, int]]:
    return gathered(multiples(3).map(with_pid).collect())


@rs.Task
def pids_of(values: list[int]) -> list[tuple[int, int]]:
    return [(x, os.getpid()) for x in values]


@rs.Asset.from_graph(metadata={"rivers/node/executor": "in_process"})
def fused_graph() -> list[tuple[int, int]]:
    """No fan-out: its internal tasks run together, in one worker."""
    return gathered(pids_of(multiples(2)))
