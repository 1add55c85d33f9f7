"""Graph assets, fan-out and a fused graph whose every task records the pid of the process that ran it.

Module-level, so that rivers-worker pool processes import them by reference (tests/e2e/test_distributed_graph.py).
Tasks record `<label> <pid>` lines in the `pids` resource's directory, and mark how many fan-out instances are
in flight at once (one file per count seen, so that no process reads a half-written file).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import rivers as rs


class Pids(rs.Resource):
    """A directory shared by the test and the steps."""

    directory: str

    def record(self, label: str) -> None:
        with open(Path(self.directory) / "pids", "a") as fh:  # one short O_APPEND write per line
            fh.write(f"{label} {os.getpid()}\n")

    def read(self) -> dict[str, set[int]]:
        found: dict[str, set[int]] = {}
        path = Path(self.directory) / "pids"
        for line in path.read_text().splitlines() if path.exists() else []:
            label, pid = line.rsplit(" ", 1)
            found.setdefault(label, set()).add(int(pid))
        return found

    def enter(self, name: str) -> None:
        directory = Path(self.directory)
        (directory / f"running-{name}").touch()
        (directory / f"seen-{len(list(directory.glob('running-*')))}").touch()

    def leave(self, name: str) -> None:
        (Path(self.directory) / f"running-{name}").unlink()

    def peak(self) -> int:
        return max(int(path.name.removeprefix("seen-")) for path in Path(self.directory).glob("seen-*"))


# -- a graph asset with internal tasks, between two plain assets ---------------------------------------------------

@rs.Asset
def base(pids: Pids) -> int:
    pids.record("base")
    return 100


@rs.Task
def fetch(url: str, pids: Pids) -> list[int]:
    pids.record("fetch")
    return [1, 2, 3, len(url)]


@rs.Task
def clean(raw: list[int], pids: Pids) -> list[int]:
    pids.record("clean")
    return [x for x in raw if x > 1]


@rs.Task
def total(values: list[int], pids: Pids) -> int:
    pids.record("total")
    return sum(values)


@rs.Task
def add_base(value: int, base: int, pids: Pids) -> int:
    pids.record("add_base")
    return value + base


@rs.Asset.from_graph()
def pipeline(base: int) -> int:
    return add_base(total(clean(fetch("abcd"))), base=base)


@rs.Asset
def report(pipeline: int, pids: Pids) -> str:
    pids.record("report")
    return f"total={pipeline}"


# -- fan-out over DynamicOutputs, throttled ------------------------------------------------------------------------

DOCUMENTS = {
    "river": "a river flows to the sea",
    "queue": "a queue hands work to workers",
    "asset": "an asset is data worth keeping",
    "graph": "a graph of tasks",
}


@rs.Asset
def documents() -> dict[str, str]:
    return DOCUMENTS


@rs.Task
def split(docs: dict[str, str], pids: Pids) -> list[rs.DynamicOutput]:
    pids.record("split")
    return [rs.DynamicOutput(name, text) for name, text in sorted(docs.items())]


@rs.Task
def count_words(text: str, pids: Pids) -> dict[str, int]:
    name = f"{text.split()[1]}-{os.getpid()}"
    pids.enter(name)
    try:
        pids.record(f"count_words:{text.split()[1]}")
        time.sleep(0.05)  # long enough for instances to overlap if the throttle let them
        return dict(Counter(text.split()))
    finally:
        pids.leave(name)


@rs.Task
def merge(counts: list[dict[str, int]], pids: Pids) -> dict[str, int]:
    pids.record("merge")
    merged: Counter[str] = Counter()
    for count in counts:
        merged.update(count)
    return dict(merged)


@rs.Asset.from_graph()
def word_counts(documents: dict[str, str]) -> dict[str, int]:
    return merge(split(documents).map(count_words, max_concurrency=1).collect())


# -- a fused graph: one step, all its tasks in one worker process ------------------------------------------------

@rs.Task
def first(pids: Pids) -> int:
    pids.record("fused/first")
    return 1


@rs.Task
def second(value: int, pids: Pids) -> int:
    pids.record("fused/second")
    return value + 1


@rs.Task
def third(value: int, pids: Pids) -> list[int]:
    pids.record("fused/third")
    return [value, os.getpid()]


@rs.Asset.from_graph(metadata={"rivers/executor": "parallel", "rivers/node/executor": "in_process"})
def fused() -> list[int]:
    return third(second(first()))
