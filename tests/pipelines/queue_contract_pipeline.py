"""Steps for tests/e2e/test_queue_contract.py: module-level, so pool processes and rivers-workers import them.

Values go through a PickleIOHandler on the test's directory; the `gate` resource (JSON to the worker) lets
a step wait until the test opens it and tell the test that it started.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from obstore.store import LocalStore

import rivers as rs

ITEMS = 50


class Gate(rs.Resource):
    """A directory shared by the test and the steps: `started-<name>` markers and an `open` file."""

    dir: str

    def started(self, name: str) -> bool:
        return (Path(self.dir) / f"started-{name}").exists()

    def open(self) -> None:
        (Path(self.dir) / "open").touch()

    def hold(self, name: str, timeout: float = 30.0) -> None:
        (Path(self.dir) / f"started-{name}").touch()
        deadline = time.monotonic() + timeout
        while not (Path(self.dir) / "open").exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the gate never opened for '{name}'")
            time.sleep(0.02)


@rs.Asset
def answer() -> int:
    return 42


@rs.Asset
def sentinel() -> str:
    return "last"


@rs.Asset
def broken() -> int:
    raise ValueError("broken on purpose: 7")


@rs.Asset
def mistyped() -> int:
    return "not a number"  # type: ignore[return-value]


@rs.Asset
def hold_a(gate: Gate) -> str:
    gate.hold("hold_a")
    return "a"


@rs.Asset
def hold_b(gate: Gate) -> str:
    gate.hold("hold_b")
    return "b"


@rs.Task
def numbers() -> list[int]:
    return list(range(ITEMS))


@rs.Task
def times_ten(x: int) -> int:
    return x * 10


@rs.Task
def as_list(values: list[int]) -> list[int]:
    return list(values)


@rs.Task
def lock_name(lock: object) -> str:
    return type(lock).__name__


@rs.Asset.from_graph()
def fanned() -> list[int]:
    return as_list(numbers().map(times_ten).collect())


@rs.Asset.from_graph()
def unsendable() -> str:
    return lock_name(threading.Lock())  # a constant argument that cannot be pickled to a worker


ASSETS = [answer, sentinel, broken, mistyped, hold_a, hold_b, fanned, unsendable]


def make_repo(directory: str | Path) -> rs.CodeRepository:
    store = Path(directory) / "store"
    gate = Path(directory) / "gate"
    store.mkdir(parents=True, exist_ok=True)
    gate.mkdir(parents=True, exist_ok=True)
    return rs.CodeRepository(ASSETS, default_io_handler=rs.PickleIOHandler(LocalStore(str(store))),
                             resources={"gate": Gate(dir=str(gate))}, default_executor=rs.Executor.parallel(2))
