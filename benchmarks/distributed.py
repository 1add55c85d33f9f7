"""Distributed mode on this machine: throughput next to bare RQ, scaling with workers, hand-off latency.

    python benchmarks/distributed.py [--steps 1000] [--sleepers 200] [--repeats 3]

It starts its own redis-server on a free port and its own worker processes, and prints medians of REPEATS runs:
(a) trivial steps per second through rivers-workers (one worker, --concurrency 2) next to no-op jobs per
    second through bare RQ's SimpleWorker on the same Redis, and their ratio (target: >= 4x); then the same
    rivers run with RIVERS_SECRET set on both sides: what signing every job and report costs (target: <= 5 %);
(b) the wall time of SLEEPERS independent steps that sleep 50 ms with 1, 2 and 4 workers of concurrency 2,
    and the 1 -> 4 speed-up (target: >= 3.8x);
(c) the median delay between a step finishing and its downstream starting, on a chain (target: <= 1 ms), and
    its legs: up to the upstream's report, the downstream's enqueue (0 when the downstream was armed on the
    upstream's attempt: the report itself enqueues it), its claim, its start in a step process;
    next to it, the floor of this machine: the same hops with no rivers code (a step process pushes to Redis, a
    listener thread hands it to a main thread that pushes a job, a worker's BLMOVE takes it and pipes it to
    another step process): what waking five processes and threads in a row costs here.
Steps are module-level assets made here; workers import this module by reference.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import rivers as rs  # noqa: E402
from rivers.io.base import BaseIOHandler, InputContext, OutputContext  # noqa: E402

MAX_TRIVIAL, MAX_SLEEPERS, CHAIN = 2000, 400, 60
SLEEP_S = 0.05


class NullIOHandler(BaseIOHandler):
    """Writes nothing, loads None: what is measured is the queue, not storage."""

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        return None

    def load_input(self, context: InputContext) -> Any:
        return None


def _asset(name: str, body: str, params: str = "") -> rs.SingleAsset:
    namespace: dict[str, Any] = {"__name__": __name__, "time": time}
    exec(f"def {name}({params}):\n    {body}\n", namespace)
    asset = rs.Asset(namespace[name])
    globals()[name] = asset  # importable by reference: module attribute == the definition
    return asset


TRIVIAL = [_asset(f"trivial_{i}", "return 1") for i in range(MAX_TRIVIAL)]
SLEEPERS = [_asset(f"sleeper_{i}", f"time.sleep({SLEEP_S})") for i in range(MAX_SLEEPERS)]
CHAINED = [_asset(f"link_{i}", "return 1", f"link_{i - 1}" if i else "") for i in range(CHAIN)]


def noop() -> None:
    """Bare RQ's job."""


# -- processes -------------------------------------------------------------------------------
def start_workers(url: str, count: int, concurrency: int = 2) -> list[subprocess.Popen[bytes]]:
    from rivers.queues.redis import live_workers

    env = {**os.environ, "RIVERS_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}  # RIVERS_SECRET passes through
    procs = [subprocess.Popen([sys.executable, "-m", "rivers.cli.worker", "--executor", "parallel",
                               "--concurrency", str(concurrency), "--redis-url", url], cwd=ROOT, env=env)
             for _ in range(count)]
    import redis

    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 60
    while len(live_workers(client, "parallel")) < count:
        if time.monotonic() > deadline:
            raise RuntimeError("workers did not register")
        time.sleep(0.05)
    return procs


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.wait(30)


def repo_of(assets: list[rs.SingleAsset]) -> rs.CodeRepository:
    return rs.CodeRepository(assets, default_io_handler=NullIOHandler())


def timed_run(assets: list[rs.SingleAsset]) -> tuple[float, rs.RunResult]:
    repo = repo_of(assets)
    repo.validate()
    start = time.perf_counter()
    result = repo.materialize()
    return time.perf_counter() - start, result


# -- (a) throughput ------------------------------------------------------------------------------
def rivers_throughput(url: str, steps: int, repeats: int) -> float:
    procs = start_workers(url, 1)
    try:
        timed_run(TRIVIAL[:50])  # warm the pool
        rates = [steps / timed_run(TRIVIAL[:steps])[0] for _ in range(repeats)]
    finally:
        stop(procs)
    return statistics.median(rates)


def rq_throughput(url: str, steps: int, repeats: int) -> float:
    import redis
    from rq import Queue
    from rq.registry import FinishedJobRegistry

    client = redis.Redis.from_url(url)
    queue = Queue("bare", connection=client)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rq_cli = str(Path(sys.executable).parent / "rq")  # the rq of this environment, not whatever is on PATH
    worker = subprocess.Popen([rq_cli, "worker", "--worker-class", "rq.SimpleWorker", "--url", url, "-q", "bare"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        registry = FinishedJobRegistry(queue=queue)

        def run(n: int) -> float:
            before = registry.count
            start = time.perf_counter()
            pipe = client.pipeline()
            queue.enqueue_many([Queue.prepare_data(noop) for _ in range(n)], pipeline=pipe)
            pipe.execute()
            while registry.count < before + n:
                time.sleep(0.002)
            return time.perf_counter() - start

        run(50)  # warm: the worker is up and has imported the job's module
        return statistics.median(steps / run(steps) for _ in range(repeats))
    finally:
        worker.terminate()
        worker.wait(30)


# -- (b) scaling, (c) latency ----------------------------------------------------------------------------
def scaling(url: str, sleepers: int, repeats: int) -> dict[int, float]:
    walls: dict[int, float] = {}
    for count in (1, 2, 4):
        procs = start_workers(url, count)
        try:
            timed_run(TRIVIAL[: 8 * count])  # warm every pool
            walls[count] = statistics.median(timed_run(SLEEPERS[:sleepers])[0] for _ in range(repeats))
        finally:
            stop(procs)
    return walls


HANDOFF_LEGS = ("worker reports", "coordinator enqueues", "worker claims", "step starts")


def handoff_delays(url: str, repeats: int) -> tuple[list[float], dict[str, list[float]]]:
    """Upstream end -> downstream start on a chain, and its legs from the job hashes' RQ times: the upstream's
    report (ended_at, the step process), the downstream's enqueue (enqueued_at: the coordinator's, or the report's
    own time when the report released an armed job), its claim (started_at, Redis's clock) and the step's own start
    (the step process)."""
    import redis

    client = redis.Redis.from_url(url)
    procs = start_workers(url, 1)
    delays: list[float] = []
    legs: dict[str, list[float]] = {leg: [] for leg in HANDOFF_LEGS}
    try:
        timed_run(TRIVIAL[:10])
        for _ in range(repeats):
            _, result = timed_run(CHAINED)
            jobs = job_times(client, result.run_id)
            for up_name, down_name in itertools.pairwise([asset.name for asset in CHAINED]):
                up, down = result.step_results[up_name], result.step_results[down_name]
                marks = [up.started_at + up.duration_s, jobs[up_name]["ended_at"], jobs[down_name]["enqueued_at"],
                         jobs[down_name]["started_at"], down.started_at]
                delays.append(marks[-1] - marks[0])
                for leg, (before, after) in zip(HANDOFF_LEGS, itertools.pairwise(marks), strict=True):
                    legs[leg].append(after - before)
    finally:
        stop(procs)
    return delays, legs


def _relay_worker(url: str, to_step: Any) -> None:
    import redis

    client = redis.Redis.from_url(url)
    while True:
        pipe = client.pipeline(transaction=False)
        pipe.blmove("relay:jobs", "relay:hand", 5, "LEFT", "RIGHT")
        pipe.lpop("relay:hand")
        moved, _ = pipe.execute()
        if moved is not None:
            to_step.send_bytes(moved)
            if moved == b"stop":
                return


def _relay_step(url: str, from_worker: Any) -> None:
    import redis

    client = redis.Redis.from_url(url)
    while (data := from_worker.recv_bytes()) != b"stop":
        client.rpush("relay:delays", time.time() - float(data))
        client.rpush("relay:results", str(time.time()))  # this step ends: the next one is dispatched


def bare_relay(url: str, hops: int) -> list[float]:
    """The hand-off's hops without rivers: step process -> Redis -> listener thread -> main thread -> Redis ->
    worker (BLMOVE) -> pipe -> step process. Delays from a step's end to the next one's start."""
    import multiprocessing
    import queue
    import threading

    import redis

    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    procs = [context.Process(target=_relay_worker, args=(url, ours)),
             context.Process(target=_relay_step, args=(url, theirs))]
    for proc in procs:
        proc.start()
    client = redis.Redis.from_url(url)
    inbox: queue.SimpleQueue[bytes] = queue.SimpleQueue()

    def listen() -> None:
        listener = redis.Redis.from_url(url)
        for _ in range(hops + 1):
            inbox.put(listener.blpop(["relay:results"], 0)[1])

    threading.Thread(target=listen, daemon=True).start()
    client.rpush("relay:results", str(time.time()))
    for _ in range(hops):
        client.rpush("relay:jobs", inbox.get())
    inbox.get()
    client.rpush("relay:jobs", "stop")
    for proc in procs:
        proc.join(30)
    delays = [float(d) for d in client.lrange("relay:delays", 0, -1)]
    client.delete("relay:delays", "relay:results", "relay:jobs", "relay:hand")
    return delays[10:]  # the first hops warm the processes up


def job_times(client: Any, run_id: str) -> dict[str, dict[str, float]]:
    """Step key -> the RQ times of its latest job, as epoch seconds."""
    from datetime import UTC, datetime

    from rivers.queues import keys, rq_view

    found: dict[str, dict[str, float]] = {}
    for step_key, job_id in client.hgetall(keys.run_jobs_key(run_id)).items():
        record = client.hgetall(keys.job_key(job_id.decode()))
        found[step_key.decode()] = {
            field: datetime.strptime(record[field.encode()].decode(), rq_view.TIME_FORMAT).replace(tzinfo=UTC)
            .timestamp() for field in ("enqueued_at", "started_at", "ended_at")}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--sleepers", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from tests.redis_server import RedisServer

    os.environ.setdefault("RIVERS_LOG_LEVEL", "WARNING")  # step events to a terminal would be what is measured
    os.environ.pop("RIVERS_SECRET", None)
    with RedisServer() as server:
        os.environ["RIVERS_REDIS_URL"] = server.url
        unsigned, signed = [], []
        for _ in range(args.repeats):  # alternated, each with fresh workers: the machine's drift hits both alike
            unsigned.append(rivers_throughput(server.url, args.steps, 1))
            os.environ["RIVERS_SECRET"] = "benchmark-secret"
            signed.append(rivers_throughput(server.url, args.steps, 1))
            del os.environ["RIVERS_SECRET"]
        rivers_rate, signed_rate = statistics.median(unsigned), statistics.median(signed)
        rq_rate = rq_throughput(server.url, args.steps, args.repeats)
        print(f"(a) {args.steps} trivial steps: rivers {rivers_rate:,.0f} steps/s (1 worker, concurrency 2); "
              f"bare RQ SimpleWorker {rq_rate:,.0f} jobs/s; ratio {rivers_rate / rq_rate:.2f}x (target >= 4x); "
              f"signed (RIVERS_SECRET) {signed_rate:,.0f} steps/s, {100 * (1 - signed_rate / rivers_rate):+.1f} % "
              "cost (target <= 5 %)")
        walls = scaling(server.url, args.sleepers, args.repeats)
        print(f"(b) {args.sleepers} x {SLEEP_S * 1000:.0f} ms steps: " +
              ", ".join(f"{n} worker{'s' if n > 1 else ''} {wall:.2f} s" for n, wall in walls.items()) +
              f"; speed-up 1 -> 4: {walls[1] / walls[4]:.2f}x (target >= 3.8x)")
        delays, legs = handoff_delays(server.url, args.repeats)
        floor = bare_relay(server.url, CHAIN * args.repeats)
        print(f"(c) upstream finished -> downstream started, chain of {CHAIN} x {args.repeats}: median "
              f"{statistics.median(delays) * 1000:.2f} ms, p90 {statistics.quantiles(delays, n=10)[-1] * 1000:.2f} ms "
              "(target <= 1 ms); legs (medians): " +
              ", ".join(f"{leg} {statistics.median(values) * 1000:.2f} ms" for leg, values in legs.items()) +
              f"; the same hops with no rivers code: median {statistics.median(floor) * 1000:.2f} ms")


if __name__ == "__main__":
    import benchmarks.distributed as this  # workers import the assets from `benchmarks.distributed`, not __main__

    this.main()
