"""The parallel executor: per-step overhead on trivial DAGs, and the speed-up of 2 workers over 1.

    python -m benchmarks.parallel [--repeats 5] [--sizes 100,1000] [--speedup-steps 16] [--profile]

Overhead: wide (one root, every other asset depends on it) and layered (10 layers; each asset
depends on the one at its position in the layer above) DAGs of assets that return a constant,
under `Executor.parallel()`, with values pickled to a temp dir (`PickleIOHandler`) or dropped by a
handler that stores nothing (`null`: rivers alone). ms/step = wall time of the run / steps.
Speed-up: N independent steps that sleep 50 ms, or burn 50 ms of CPU, on 1 worker vs 2 workers.
The assets are module-level (generated at import), so workers import them by reference, as they
would a user's. Step events are logged at WARNING, to keep the terminal out of the measurement.
Targets on 2 cores: < 1 ms/step for wide trivial DAGs, >= 1.8x speed-up.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import time
from typing import Any

import rivers as rs
from rivers.executors.parallel import shutdown_parallel_queues
from rivers.io.base import BaseIOHandler, InputContext, OutputContext

SIZES = (100, 1000)
SHAPES = ("wide", "layered")
LAYERS = 10
SPEEDUP_STEPS = 16
STEP_S = 0.05
OVERHEAD_TARGET_MS = 1.0
SPEEDUP_TARGET = 1.8


class NullHandler(BaseIOHandler):
    """Stores nothing and loads 1: what is left is rivers' own cost."""

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        pass

    def load_input(self, context: InputContext) -> Any:
        return 1


# -- the DAGs (module-level, so that pool processes import them by reference) ------------------

def _define(name: str, upstreams: list[str], body: str = "return 1") -> rs.SingleAsset:
    namespace: dict[str, Any] = {"__name__": __name__, "time": time}
    exec(f"def {name}({', '.join(upstreams)}):\n    {body}\n", namespace)
    asset = rs.Asset(namespace[name])
    globals()[name] = asset
    return asset


def _edges(shape: str, n: int) -> list[tuple[str, list[str]]]:
    names = [f"{shape}_{n}_{i}" for i in range(n)]
    if shape == "wide":
        return [(names[0], [])] + [(name, [names[0]]) for name in names[1:]]
    width = n // LAYERS
    return [(name, [names[i - width]] if i >= width else []) for i, name in enumerate(names)]


DAGS: dict[tuple[str, int], list[rs.SingleAsset]] = {
    (shape, n): [_define(name, ups) for name, ups in _edges(shape, n)] for shape in SHAPES for n in SIZES
}
_BURN = "end = time.process_time() + {s}\n    while time.process_time() < end:\n        pass\n    return 1"
SLEEPERS = [_define(f"sleep_{i}", [], f"time.sleep({STEP_S})\n    return 1") for i in range(64)]
BURNERS = [_define(f"burn_{i}", [], _BURN.format(s=STEP_S)) for i in range(64)]


# -- measuring --------------------------------------------------------------------------------

def time_runs(assets: list[rs.SingleAsset], executor: rs.Executor, handler: BaseIOHandler,
              repeats: int) -> list[float]:
    """Seconds per run, `repeats` times, after one untimed run that warms the pool and caches."""
    repo = rs.CodeRepository(assets, default_executor=executor, default_io_handler=handler)
    repo.validate()
    seconds: list[float] = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        result = repo.materialize()
        elapsed = time.perf_counter() - start
        if not result.success:
            raise RuntimeError(f"run failed: {result.failed_assets[:3]}")
        if i:
            seconds.append(elapsed)
    return seconds


def handlers() -> dict[str, BaseIOHandler]:
    from obstore.store import LocalStore

    return {"pickle": rs.PickleIOHandler(LocalStore(tempfile.mkdtemp(prefix="rivers-bench-"))), "null": NullHandler()}


def overhead(repeats: int, sizes: list[int]) -> list[tuple[str, int, str, float, float]]:
    """(shape, steps, handler, min ms/step, median ms/step) under Executor.parallel()."""
    rows = []
    for shape in SHAPES:
        for n in sizes:
            for name, handler in handlers().items():
                seconds = time_runs(DAGS[(shape, n)], rs.Executor.parallel(), handler, repeats)
                rows.append((shape, n, name, min(seconds) * 1000 / n, statistics.median(seconds) * 1000 / n))
    return rows


def speedup(repeats: int, steps: int) -> list[tuple[str, float, float, float]]:
    """(kind, median s on 1 worker, median s on 2 workers, ratio of the medians)."""
    rows = []
    for kind, assets in (("sleep 50 ms", SLEEPERS[:steps]), ("burn 50 ms CPU", BURNERS[:steps])):
        one = statistics.median(time_runs(assets, rs.Executor.parallel(1), NullHandler(), repeats))
        two = statistics.median(time_runs(assets, rs.Executor.parallel(2), NullHandler(), repeats))
        rows.append((kind, one, two, one / two))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--speedup-steps", type=int, default=SPEEDUP_STEPS)
    parser.add_argument("--profile", action="store_true", help="cProfile the 1000-step wide run (coordinator side)")
    args = parser.parse_args(argv)
    print(f"CPUs available: {len(os.sched_getaffinity(0))}; {rs.Executor.parallel()!r}")
    if args.profile:
        profile = cProfile.Profile()
        profile.enable()
        time_runs(DAGS[("wide", 1000)], rs.Executor.parallel(), NullHandler(), args.repeats)
        profile.disable()
        pstats.Stats(profile).sort_stats("cumulative").print_stats(30)
        return 0
    print(f"\n{'shape':<8} {'steps':>6} {'handler':<7} {'min ms/step':>12} {'median ms/step':>15}")
    rows = overhead(args.repeats, [int(s) for s in args.sizes.split(",")])
    for shape, n, handler, low, mid in rows:
        print(f"{shape:<8} {n:>6} {handler:<7} {low:>12.3f} {mid:>15.3f}")
    print(f"\n{'steps of ' + str(args.speedup_steps):<16} {'1 worker s':>11} {'2 workers s':>12} {'speed-up':>9}")
    ratios = speedup(args.repeats, args.speedup_steps)
    for kind, one, two, ratio in ratios:
        print(f"{kind:<16} {one:>11.3f} {two:>12.3f} {ratio:>8.2f}x")
    wide = max(mid for shape, _, _, _, mid in rows if shape == "wide")
    worst = min(ratio for *_, ratio in ratios)
    print(f"\nwide DAGs: worst median {wide:.3f} ms/step (target < {OVERHEAD_TARGET_MS} ms); "
          f"worst speed-up {worst:.2f}x (target >= {SPEEDUP_TARGET}x)")
    shutdown_parallel_queues()
    return 0


if __name__ == "__main__":  # as a script: re-import under the module's real name, which workers can import
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    os.environ.setdefault("RIVERS_LOG_LEVEL", "WARNING")
    from benchmarks import parallel as _module

    sys.exit(_module.main())
