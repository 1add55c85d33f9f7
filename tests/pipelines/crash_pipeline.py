"""Pipelines for the crash matrix (tests/faults/test_crash_matrix.py): a step that dies WHERE x HOW.

Pool processes outlive a test, so nothing here reads environment variables set by a test: what
to do travels in the `Crash` resource and in the `CrashingHandler`'s fields, both rebuilt in the
worker from JSON. Only the victim step ever dies; `sibling` (its parallel peer) and `independent`
(another branch) must succeed.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import rivers as rs
from rivers.executors.pool_process import STEP_PROCESS_NAME
from rivers.io.base import InputContext, OutputContext

VICTIM = "victim"


def die(how: str, what: str) -> None:
    """Stop the current step in one of the four ways a process can end it."""
    if how == "raise":
        raise ValueError(f"{what} failed")
    if how == "import":
        import rivers_not_installed_here  # noqa: F401 - a dependency the worker's environment lacks
    if how == "exit":
        sys.exit(3)
    if how == "os_exit":
        os._exit(3)
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError(f"unknown way to die: {how!r}")


class Crash(rs.Resource):
    """Where and how the victim dies ("" = it does not)."""

    where: str = ""
    how: str = ""

    def at(self, where: str) -> None:
        if self.where == where:
            die(self.how, where)


class CrashingHandler(rs.PickleIOHandler):
    """A pickle handler that dies when it loads the victim's input or writes the victim's output."""

    crash_where: str = ""
    crash_how: str = ""

    def load_input(self, context: InputContext) -> Any:
        if self.crash_where == "input" and context.downstream_asset == VICTIM:
            die(self.crash_how, "load_input")
        return super().load_input(context)

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        if self.crash_where == "output" and context.asset_name == VICTIM:
            die(self.crash_how, "handle_output")
        super().handle_output(context, obj)


class ReportError(Exception):
    """Raised by the victim when it dies "at report": sending the error back is what fails.

    With how="raise" its constructor signature breaks unpickling (in the coordinator); otherwise
    pickling it (in the worker, after the step ran) exits or kills the worker.
    """

    def __init__(self, how: str, detail: str) -> None:
        super().__init__(f"report test ({how})")  # args == (message,): cls(*args) cannot rebuild it
        self.how = how
        self.detail = detail

    def __reduce__(self) -> Any:
        if self.how != "raise":
            die(self.how, "report")
        return super().__reduce__()


@rs.Asset
def upstream() -> int:
    return 1


@rs.Asset(retry=rs.RetryPolicy(max_retries=0))
def victim(upstream: int, crash: Crash) -> int:
    crash.at("function")
    if crash.where == "report":
        raise ReportError(crash.how, "sent back")
    return upstream + 1


@rs.Asset(retry=rs.RetryPolicy(max_retries=0))
async def async_victim(upstream: int, crash: Crash) -> int:
    """Runs on the parallel executor's event loop, in the coordinator's process (or rivers-worker's)."""
    if crash.how == "interrupt":
        raise KeyboardInterrupt
    crash.at("function")
    return upstream + 1


@rs.Asset
def after_victim(victim: int) -> int:
    return victim


@rs.Asset
def sibling(upstream: int) -> int:
    return upstream + 10


@rs.Asset
def independent() -> str:
    return "still here"


def marker_path(coordinator_pid: int) -> Path:
    """The file that makes tests.pipelines.crash_unimportable die on import in that process's pool."""
    return Path("/tmp") / f"rivers-crash-import-{coordinator_pid}"


class Database(rs.Resource):
    """A resource whose setup() fails everywhere, or only in worker processes."""

    fails_in: str = "everywhere"  # | "workers"

    def setup(self) -> None:
        if self.fails_in == "everywhere" or multiprocessing.current_process().name == STEP_PROCESS_NAME:
            raise ConnectionError("database is down")


@rs.Asset
def needs_database(database: Database) -> int:
    return 1


@rs.Asset
def pool_pid(upstream: int) -> int:
    """The pid of the process that ran it: where a later run's steps went."""
    return os.getpid()


class Gate(rs.Resource):
    """A directory shared by a test and its steps: markers the steps leave, files the test creates."""

    directory: str = ""

    def mark(self, name: str) -> None:
        (Path(self.directory) / f"{name}-{os.getpid()}").touch()

    def wait(self, pattern: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not list(Path(self.directory).glob(pattern)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing matched {pattern!r} in {self.directory} within {timeout}s")
            time.sleep(0.02)


@rs.Asset
def while_hanging(upstream: int, gate: Gate) -> int:
    """Starts only once a module import hangs in another pool process (tests.pipelines.import_hang)."""
    gate.wait("hanging-*")
    return os.getpid()


@rs.Asset
def after_while_hanging(while_hanging: int) -> int:
    return os.getpid()


@rs.Asset
def blocks(upstream: int, gate: Gate) -> int:
    """Announces itself (`blocking-<pid>`) and runs until the test creates `release`."""
    gate.mark("blocking")
    gate.wait("release", timeout=60)
    return os.getpid()
