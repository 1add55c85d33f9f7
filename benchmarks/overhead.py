"""Per-step overhead of rivers on DAGs of trivial assets.

    python benchmarks/overhead.py [--executors in_process,parallel] [--sizes 100,1000] [--repeats 5]

The in-process figures are measured here; `parallel` runs benchmarks/parallel.py (per-step overhead of
wide and layered DAGs in the loky pool, and the speed-up of 2 workers over 1 on 50 ms steps).

Shapes: `chain` (a0 -> a1 -> ...), `wide` (one root, every other asset depends on it) and `diamond`
(layers of DIAMOND_WIDTH assets, each depending on two of the layer above). Each asset returns a constant,
so what is measured is rivers itself. Resolution is done before the clock starts (`repo.validate()`);
planning, coordination, the step runtime and IO handler calls are inside it. Step events are logged at
INFO (JSON, written to /dev/null so the terminal's speed is not measured) and, for comparison, with
RIVERS_LOG_LEVEL=WARNING.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import rivers as rs
from rivers import defaults, logs

SHAPES = ("chain", "wide", "diamond")
DIAMOND_WIDTH = 10
TARGET_MS = 0.3  # per step, 1000-step in-process run


# -- building the DAGs -----------------------------------------------------------------------
def make_asset(name: str, upstreams: list[str]) -> rs.SingleAsset:
    """An asset whose parameters are its upstreams (dependencies are bound by parameter name)."""
    namespace: dict[str, Any] = {"__name__": __name__}
    exec(f"def {name}({', '.join(upstreams)}):\n    return 1\n", namespace)
    return rs.Asset(namespace[name])


def edges(shape: str, n: int) -> list[tuple[str, list[str]]]:
    """(asset, upstreams) for n assets of the given shape, in topological order."""
    names = [f"a{i}" for i in range(n)]
    if shape == "chain":
        return [(name, names[i - 1:i]) for i, name in enumerate(names)]
    if shape == "wide":
        return [(names[0], [])] + [(name, [names[0]]) for name in names[1:]]
    if shape == "diamond":
        result: list[tuple[str, list[str]]] = []
        for i, name in enumerate(names):
            layer, pos = divmod(i, DIAMOND_WIDTH)
            if layer == 0:
                result.append((name, []))
                continue
            above = [(layer - 1) * DIAMOND_WIDTH + p for p in (pos, (pos + 1) % DIAMOND_WIDTH)]
            result.append((name, sorted({names[j] for j in above})))
        return result
    raise ValueError(f"unknown shape {shape!r}")


def build_repo(shape: str, n: int, executor: rs.Executor, io_handler: rs.BaseIOHandler | None) -> rs.CodeRepository:
    assets = [make_asset(name, ups) for name, ups in edges(shape, n)]
    return rs.CodeRepository(assets=assets, default_executor=executor, default_io_handler=io_handler)


# -- measuring -------------------------------------------------------------------------------
@dataclass
class Measurement:
    executor: str
    shape: str
    n: int
    log_level: str
    seconds: list[float]

    @property
    def min_ms_per_step(self) -> float:
        return min(self.seconds) * 1000 / self.n

    @property
    def median_ms_per_step(self) -> float:
        return statistics.median(self.seconds) * 1000 / self.n


@contextlib.contextmanager
def log_level(level: str) -> Iterator[None]:
    """Run with RIVERS_LOG_LEVEL=level and rivers' stderr (where its logs go) pointed at /dev/null."""
    saved_env, saved_stderr = os.environ.get(defaults.LOG_LEVEL_ENV), sys.stderr
    os.environ[defaults.LOG_LEVEL_ENV] = level
    with open(os.devnull, "w") as devnull:
        sys.stderr = devnull
        logs.reset()
        try:
            yield
        finally:
            sys.stderr = saved_stderr
            if saved_env is None:
                os.environ.pop(defaults.LOG_LEVEL_ENV, None)
            else:
                os.environ[defaults.LOG_LEVEL_ENV] = saved_env
            logs.reset()


def measure(executor: rs.Executor, shape: str, n: int, repeats: int, level: str = "INFO",
            io_handler: rs.BaseIOHandler | None = None) -> Measurement:
    """Time `repeats` materializations of one DAG; the first, untimed, warms caches and worker pools."""
    repo = build_repo(shape, n, executor, io_handler)
    repo.validate()
    seconds: list[float] = []
    with log_level(level):
        for i in range(repeats + 1):
            start = time.perf_counter()
            result = repo.materialize()
            elapsed = time.perf_counter() - start
            if not result.success or len(result.materialized_assets) != n:
                raise RuntimeError(f"{shape}/{n} on {executor!r} did not succeed: {result.failed_assets[:3]}")
            if i:
                seconds.append(elapsed)
    repo.shutdown()
    return Measurement(executor.key, shape, n, level, seconds)


# -- executors -------------------------------------------------------------------------------
def executors(names: list[str]) -> Iterator[tuple[rs.Executor, Callable[[], rs.BaseIOHandler | None], str]]:
    """(executor, io handler factory, note) per requested name measured here (in_process)."""
    for name in names:
        if name == "in_process":
            yield rs.Executor.in_process(), lambda: None, ""
        elif name != "parallel":
            raise SystemExit(f"unknown executor {name!r}; choose from in_process, parallel")


def run_parallel_benchmark(repeats: int, sizes: list[int]) -> None:
    """The parallel executor's figures: its assets must be importable by the pool, so they live in a module."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from benchmarks import parallel

    with log_level("WARNING"):
        parallel.main(["--repeats", str(repeats), "--sizes", ",".join(map(str, sizes))])


# -- reporting -------------------------------------------------------------------------------
def print_table(rows: list[Measurement]) -> None:
    header = f"{'executor':<11} {'shape':<8} {'steps':>6} {'logs':<8} {'min ms/step':>12} {'median ms/step':>15}"
    print(header)
    print("-" * len(header))
    for m in rows:
        print(f"{m.executor:<11} {m.shape:<8} {m.n:>6} {m.log_level:<8} "
              f"{m.min_ms_per_step:>12.4f} {m.median_ms_per_step:>15.4f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executors", default="in_process,parallel", help="comma-separated: in_process,parallel")
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--sizes", default="100,1000")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--log-levels", default="INFO,WARNING")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows: list[Measurement] = []
    for executor, handler, note in executors(args.executors.split(",")):
        if note:
            print(f"note: {executor!r}: {note}")
        for shape in args.shapes.split(","):
            for n in sizes:
                for level in args.log_levels.split(","):
                    try:
                        rows.append(measure(executor, shape, n, args.repeats, level, handler()))
                    except Exception as exc:  # noqa: BLE001 - report and go on with the other cases
                        print(f"note: {executor!r} {shape}/{n} failed: {type(exc).__name__}: {exc}")
    print_table(rows)
    worst = [m for m in rows if m.executor == "in_process" and m.n >= 1000]
    if worst:
        slowest = max(m.median_ms_per_step for m in worst)
        verdict = "meets" if slowest < TARGET_MS else "misses"
        print(f"\nin-process, 1000 steps: worst median {slowest:.4f} ms/step ({verdict} the {TARGET_MS} ms target)")
    if "parallel" in args.executors.split(","):
        print("\n-- parallel executor (benchmarks/parallel.py) --")
        run_parallel_benchmark(args.repeats, sizes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
