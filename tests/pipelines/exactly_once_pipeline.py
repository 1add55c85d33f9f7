"""Pipelines for the exactly-once fault tests: every step function counts its executions in a file.

Module level, so rivers-worker processes import the steps by reference: the 200 chain steps are built
by a factory and bound to module globals under their own names, so `getattr(module, qualname)` is the
very Asset object (rivers.spec._ref_if_importable).

    chains: CHAINS chains of CHAIN_LENGTH steps, c00_s0 -> c00_s1 -> ... -> c00_s9, c01_s0 -> ...
            value(cNN_sK) = 100 * NN + K (a chain's first step returns 100 * NN, each next one upstream + 1)
    pause:  slow (1st execution sleeps 8 s, later ones 3 s; returns its execution number) -> after_slow = 10 * slow
    stall:  base -> written (its first write stalls in the IO handler, after the value is stored) -> after_written

Executions are recorded by the `counter` resource as one O_APPEND write per execution of a line
"<pid> <time>" to `<dir>/counts/<step>`; writes of values by `LoggedPickleIOHandler` as one line
"<pid> <time>" to `<dir>/writes/<asset>`.
"""

from __future__ import annotations

import inspect
import os
import time
from pathlib import Path
from typing import Any

from obstore.store import LocalStore

import rivers as rs
from rivers.io.base import OutputContext

CHAINS = 20
CHAIN_LENGTH = 10
STEP_SLEEP_S = 0.04
SLOW_FIRST_S = 8.0  # the execution the test pauses: outlives a lease
SLOW_LATER_S = 3.0  # the retry
ENV_DIR = "EXACTLY_ONCE_DIR"


def _append_line(path: Path, line: str) -> None:
    """One write(2) on an O_APPEND descriptor: concurrent writers from many processes never interleave."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


class Counter(rs.Resource):
    """Cross-process execution counters: `<dir>/counts/<step>` gets a line per execution."""

    dir: str

    def record(self, step: str) -> int:
        """Record one execution of `step` (pid, time); returns how many executions it has had so far."""
        path = Path(self.dir) / "counts" / step
        _append_line(path, f"{os.getpid()} {time.time():.6f}\n")
        return len(_lines(path))

    def executions(self, step: str) -> list[tuple[int, float]]:
        return [(int(pid), float(at)) for pid, at in
                (line.split() for line in _lines(Path(self.dir) / "counts" / step))]

    def count(self, step: str) -> int:
        return len(_lines(Path(self.dir) / "counts" / step))


class LoggedPickleIOHandler(rs.PickleIOHandler):
    """A PickleIOHandler that logs every value it stores: `<log_dir>/<asset>` gets "<pid> <time>" per write.

    For an asset named in `stall_after_first_write`, the first write stores the value, logs it and then
    blocks (up to 120 s): the test kills the worker there, between the stored value and the report.
    """

    log_dir: str = ""
    stall_after_first_write: list[str] = []

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        super().handle_output(context, obj)
        if not self.log_dir:
            return
        path = Path(self.log_dir) / context.asset_name
        _append_line(path, f"{os.getpid()} {time.time():.6f}\n")
        if context.asset_name in self.stall_after_first_write and len(_lines(path)) == 1:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # killed here by the test
                time.sleep(0.05)

    @staticmethod
    def writes(log_dir: str | Path, asset: str) -> list[tuple[int, float]]:
        return [(int(pid), float(at)) for pid, at in (line.split() for line in _lines(Path(log_dir) / asset))]


# -- 200 chain steps ---------------------------------------------------------------------------------------
def step_name(chain: int, position: int) -> str:
    return f"c{chain:02d}_s{position}"


def expected_value(chain: int, position: int) -> int:
    return 100 * chain + position


def _chain_step(chain: int, position: int) -> rs.Asset:
    """An asset named cNN_sK whose only input is the previous step of its chain (none for K = 0)."""
    name = step_name(chain, position)
    upstream = step_name(chain, position - 1) if position else None

    def fn(counter: Counter, **inputs: int) -> int:
        counter.record(name)
        time.sleep(STEP_SLEEP_S)
        return inputs[upstream] + 1 if upstream else 100 * chain

    params = [inspect.Parameter(upstream, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=int)] if upstream else []
    params.append(inspect.Parameter("counter", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Counter))
    fn.__signature__ = inspect.Signature(params, return_annotation=int)  # type: ignore[attr-defined]
    fn.__annotations__ = {**({upstream: int} if upstream else {}), "counter": Counter, "return": int}
    fn.__name__ = fn.__qualname__ = name
    fn.__module__ = __name__
    return rs.Asset(fn)


CHAIN_STEPS: list[rs.Asset] = []
for _chain in range(CHAINS):
    for _position in range(CHAIN_LENGTH):
        _asset = _chain_step(_chain, _position)
        globals()[_asset.name] = _asset  # importable as (this module, its name): sent by reference
        CHAIN_STEPS.append(_asset)
del _chain, _position, _asset

STEP_NAMES = [step.name for step in CHAIN_STEPS]
EXPECTED = {step_name(c, p): expected_value(c, p) for c in range(CHAINS) for p in range(CHAIN_LENGTH)}


# -- the pause pipeline ----------------------------------------------------------------------------------------
@rs.Asset
def slow(counter: Counter) -> int:
    """Returns its execution number (1 for the first execution, 2 for the second ...)."""
    execution = counter.record("slow")
    time.sleep(SLOW_FIRST_S if execution == 1 else SLOW_LATER_S)
    return execution


@rs.Asset
def after_slow(slow: int, counter: Counter) -> int:
    counter.record("after_slow")
    return 10 * slow


# -- stalled between the stored value and the report -------------------------------------------------------------
@rs.Asset
def base(counter: Counter) -> int:
    counter.record("base")
    return 5


@rs.Asset
def written(base: int, counter: Counter) -> int:
    """Returns its execution number times 100 plus base; its first write stalls in the handler."""
    return 100 * counter.record("written") + base


@rs.Asset
def after_written(written: int, counter: Counter) -> int:
    counter.record("after_written")
    return written + 1


PAUSE_ASSETS = [slow, after_slow]
STALL_ASSETS = [base, written, after_written]


def handler_for(directory: str | Path, stall: list[str] | None = None) -> LoggedPickleIOHandler:
    store_dir = Path(directory) / "store"
    log_dir = Path(directory) / "writes"
    return LoggedPickleIOHandler(LocalStore(str(store_dir)), log_dir=str(log_dir),
                                 stall_after_first_write=list(stall or []))


def make_repo(assets: list[Any] | None = None, directory: str | Path | None = None,
              stall: list[str] | None = None, **kwargs: Any) -> rs.CodeRepository:
    """The chain steps (or `assets`) storing into `directory`/store, counting into `directory`/counts."""
    directory = Path(directory or os.environ.get(ENV_DIR) or Path(os.environ.get("TMPDIR", "/tmp")) /
                     "rivers-exactly-once")
    for sub in ("store", "writes", "counts"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    return rs.CodeRepository(list(assets if assets is not None else CHAIN_STEPS),
                             default_io_handler=handler_for(directory, stall),
                             resources={"counter": Counter(dir=str(directory))}, **kwargs)


def counter_of(repo: rs.CodeRepository) -> Counter:
    counter = repo.resources["counter"]
    assert isinstance(counter, Counter)
    return counter


def write_log_dir(repo: rs.CodeRepository) -> str:
    return str(Path(counter_of(repo).dir) / "writes")


# What `rivers-coordinator --repo tests.pipelines.exactly_once_pipeline:repo` serves; its directory comes
# from $EXACTLY_ONCE_DIR.
repo = make_repo()

__all__: list[str] = ["repo", "make_repo", "STEP_NAMES", "EXPECTED", *STEP_NAMES]
