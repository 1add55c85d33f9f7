"""Graph assets and fan-out used by tests/e2e/test_graph.py; module-level so workers import them by reference."""

from __future__ import annotations

import os
from pathlib import Path

import rivers as rs


class Counters(rs.Resource):
    """Where instances record that they are running; a resource, so that pool processes get it too."""

    directory: str = "/tmp/rivers-test-counters"


def _enter(directory: Path, name: str) -> None:
    """Record one more instance in flight (a file per running instance) and how many were in flight.

    Each count seen is a file of its own (`seen-N`), so that processes never read a half-written file.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"running-{name}").touch()
    running = len(list(directory.glob("running-*")))
    (directory / f"seen-{running}").touch()


def _leave(directory: Path, name: str) -> None:
    (directory / f"running-{name}").unlink()


@rs.Task
def fetch(url: str) -> list[int]:
    return [1, 2, 3, len(url)]


@rs.Task
def clean(raw: list[int]) -> list[int]:
    return [x for x in raw if x > 1]


@rs.Task
def total(values: list[int]) -> int:
    return sum(values)


@rs.Task
def add_base(value: int, base: int) -> int:
    return value + base


@rs.Task
def pid_of(value: object) -> int:
    return os.getpid()


@rs.Task
def explode(values: list[int]) -> int:
    raise ValueError(f"cannot use {values}")


@rs.Task
def numbers(count: int) -> list[int]:
    return list(range(count))


@rs.Task
def square(x: int, counters: Counters) -> int:
    directory, name = Path(counters.directory), f"square-{x}-{os.getpid()}"
    _enter(directory, name)
    try:
        # a little work, so that instances overlap when they can
        return sum(i * 0 for i in range(20_000)) + x * x
    finally:
        _leave(directory, name)


@rs.Task
def keyed() -> list[rs.DynamicOutput]:
    return [rs.DynamicOutput("alpha", 1), rs.DynamicOutput("beta", 2), rs.DynamicOutput("gamma", 3)]


@rs.Task
def fails_on_two(x: int) -> int:
    if x == 2:
        raise RuntimeError("two is not allowed")
    return x


@rs.Task
def as_list(values: object) -> list[int]:
    return list(values)  # type: ignore[call-overload]


@rs.Asset
def base() -> int:
    return 100


@rs.Asset.from_graph()
def pipeline(base: int) -> int:
    return add_base(total(clean(fetch("abcd"))), base=base)


@rs.Asset.from_graph()
def other_pipeline() -> int:
    return total(clean(fetch("xy")))


@rs.Asset
def report(pipeline: int) -> str:
    return f"total={pipeline}"


@rs.Asset.from_graph()
def broken() -> int:
    return explode(clean(fetch("abc")))


@rs.Asset
def after_broken(broken: int) -> int:
    return broken


@rs.Asset
def independent() -> int:
    return 1


@rs.Asset.from_graph()
def fanned() -> int:
    return total(numbers(100).map(square, max_concurrency=3).collect())


@rs.Asset.from_graph()
def dynamic() -> list[int]:
    return as_list(keyed().map(square).collect_stream(ordered=True))


@rs.Asset.from_graph()
def empty_fan() -> int:
    return total(numbers(0).map(square).collect())


@rs.Asset.from_graph()
def failing_fan() -> int:
    return total(numbers(4).map(fails_on_two).collect())


@rs.Asset
def after_failing_fan(failing_fan: int) -> int:
    return failing_fan


@rs.Asset.from_graph(metadata={"rivers/node/executor": "parallel"})
def internals_in_pool() -> list[int]:
    return as_list(numbers(2).map(pid_of).collect())


@rs.Task
def pids_with(previous: int) -> list[int]:
    return [previous, os.getpid()]


@rs.Asset.from_graph(metadata={"rivers/executor": "parallel", "rivers/node/executor": "in_process"})
def internals_in_one_worker() -> list[int]:
    return pids_with(pid_of(numbers(1)))
