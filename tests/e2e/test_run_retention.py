"""Bounded Redis for submitted runs: every key of an ended run expires, the runs index is trimmed, and an
idle coordinator's cost follows the runs in flight, not the runs Redis still keeps."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis

from rivers.distributed import runs
from rivers.queues import keys
from tests.conftest import CoordinatorProcesses, WorkerProcesses
from tests.pipelines import distributed_pipeline as dp
from tests.redis_server import wait_for

pytestmark = pytest.mark.slow

RETENTION_S = 3600


@pytest.fixture
def coordinators(redis_url: str, tmp_path: Path) -> Iterator[CoordinatorProcesses]:
    """rivers-coordinator subprocesses serving distributed_pipeline:served_repo with a short retention."""
    procs = CoordinatorProcesses(redis_url, tmp_path, "tests.pipelines.distributed_pipeline:served_repo",
                                 env={"DIST_TEST_DIR": str(tmp_path), "RIVERS_RUN_RETENTION_S": str(RETENTION_S)})
    yield procs
    procs.close()


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_url)
    yield conn
    conn.close()


def blocked_clients(client: redis.Redis) -> int:
    return int(client.info("clients")["blocked_clients"])


def keys_of(client: redis.Redis, run_id: str) -> dict[str, int]:
    """Every key whose name holds the run id -> its PTTL (-1: none)."""
    names = [k.decode() for k in client.scan_iter("*", count=1000) if run_id.encode() in k]
    return {name: client.pttl(name) for name in names}


def assert_every_key_expires(client: redis.Redis, run_id: str, at_most_s: float = RETENTION_S) -> None:
    found = keys_of(client, run_id)
    assert keys.run_key(run_id) in found, found
    bad = {name: ttl for name, ttl in found.items() if not 0 < ttl <= at_most_s * 1000}
    assert not bad, f"keys of run {run_id} without a TTL in (0, {at_most_s}] s: {bad}"
    assert not client.sismember(keys.RUNS_ACTIVE, run_id)


def test_every_key_of_an_ended_run_expires(
    redis_url: str, client: redis.Redis, workers: WorkerProcesses, coordinators: CoordinatorProcesses, tmp_path: Path
) -> None:
    repo = dp.make_repo([dp.source, dp.doubled, dp.gated, dp.after_gated], tmp_path)
    scratch = repo.resources["scratch"]

    # cancelled before any coordinator started it: it ends as cancelled without running a step
    early = repo.submit(selection=["source", "doubled"])
    assert client.sismember(keys.RUNS_ACTIVE, early.run_id)
    early.cancel()
    workers.start(redis_url)
    coordinators.start()
    result = early.wait(timeout=60)
    assert early.status == "cancelled" and not result.materialized_assets
    assert not scratch.lines("source")

    succeeded = repo.submit(selection=["source", "doubled"])
    assert succeeded.wait(timeout=60).success
    # fails to start: the coordinator's repository has no such asset (a submit from another codebase)
    unstartable = runs.submit(runs.SubmittedRun(run_id=runs.new_run_id(), selection=["no_such_asset"]))
    assert not unstartable.wait(timeout=60).success
    assert unstartable.status == "failed"
    # cancelled while a step runs
    cancelled = repo.submit(selection=["source", "gated", "after_gated"])
    wait_for(lambda: scratch.lines("gated"), 60, message="the gated step to start")
    cancelled.cancel()
    cancelled.wait(timeout=30)
    assert cancelled.status == "cancelled"

    for handle in (early, succeeded, unstartable, cancelled):
        assert_every_key_expires(client, handle.run_id)
    assert client.scard(keys.RUNS_ACTIVE) == 0
    found = keys_of(client, succeeded.run_id)
    assert {keys.run_key(succeeded.run_id), keys.run_steps_key(succeeded.run_id),
            keys.run_events_key(succeeded.run_id)} <= set(found), found
    (Path(scratch.dir) / "open").touch()  # let the abandoned step end so that its worker can stop

    # an ended run can no longer be flagged: a cancel does not recreate an expired record either
    client.delete(keys.run_key(succeeded.run_id))
    succeeded.cancel()
    assert not client.exists(keys.run_key(succeeded.run_id))


def test_runs_index_is_trimmed_at_start_and_when_a_run_ends(
    redis_url: str, client: redis.Redis, workers: WorkerProcesses, coordinators: CoordinatorProcesses, tmp_path: Path
) -> None:
    old = time.time() - RETENTION_S - 60

    def add_old(prefix: str, count: int = 50) -> None:
        client.zadd(keys.RUNS, {f"{prefix}-{i}": old - i for i in range(count)})

    def old_entries() -> int:
        return int(client.zcount(keys.RUNS, "-inf", time.time() - RETENTION_S))

    add_old("before-start")
    recent = str(uuid.uuid4())
    client.zadd(keys.RUNS, {recent: time.time() - RETENTION_S / 2})
    coordinators.start()
    wait_for(lambda: old_entries() == 0, 30, message="the coordinator's start to trim the index")
    wait_for(lambda: blocked_clients(client) >= 1, 30, message="the coordinator to wait for runs")
    add_old("while-serving")
    assert old_entries() == 50  # nothing trims an idle coordinator's index
    workers.start(redis_url)
    repo = dp.make_repo([dp.source], tmp_path)
    handle = repo.submit(selection=["source"])
    assert handle.wait(timeout=60).success
    assert old_entries() == 0
    assert client.zscore(keys.RUNS, handle.run_id) is not None
    assert client.zscore(keys.RUNS, recent) is not None


def test_a_run_submitted_before_the_active_set_existed_is_still_taken_over(
    redis_url: str, client: redis.Redis, workers: WorkerProcesses, coordinators: CoordinatorProcesses, tmp_path: Path
) -> None:
    """A run in the index, queued, not in rivers:runs:active, no wake-up: its coordinator died long ago."""
    run_id = runs.new_run_id()
    request = runs.SubmittedRun(run_id=run_id, selection=["source"])
    now = time.time()
    client.hset(keys.run_key(run_id), mapping={"status": "queued", "request": request.to_json(),
                                              "created_at": now, "updated_at": now})
    client.zadd(keys.RUNS, {run_id: now})
    workers.start(redis_url)
    coordinators.start()
    result = runs.RunHandle(run_id, client).wait(timeout=60)
    assert result.success, result.failed_assets
    assert_every_key_expires(client, run_id)


def commands_processed(client: redis.Redis) -> int:
    """Commands Redis ran so far, without this probe's own INFO calls."""
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for name, v in stats.items() if name != "cmdstat_info")


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def test_an_idle_coordinator_costs_nothing_per_recorded_run(
    redis_url: str, client: redis.Redis, workers: WorkerProcesses, coordinators: CoordinatorProcesses, tmp_path: Path
) -> None:
    recorded = 20_000
    now = time.time()
    pipe = client.pipeline(transaction=False)
    for i in range(recorded):
        run_id = f"old-run-{i:05d}"
        pipe.hset(keys.run_key(run_id), mapping={"status": "succeeded", "created_at": now - i / 10,
                                                 "updated_at": now - i / 10, "result": "{}"})
        pipe.zadd(keys.RUNS, {run_id: now - i / 10})  # all within the retention
        if i % 2000 == 1999:
            pipe.execute()
    pipe.execute()
    # ids left in the active set by runs that ended or expired: the coordinator's scan drops them
    client.sadd(keys.RUNS_ACTIVE, "old-run-00001", "expired-run")

    process = psutil.Process(coordinators.start().pid)
    wait_for(lambda: blocked_clients(client) >= 1, 60, message="the coordinator to wait for runs")
    wait_for(lambda: client.scard(keys.RUNS_ACTIVE) == 0, 30, message="stale active ids to be dropped")
    time.sleep(1.0)  # settled: past its first scans

    window = 3.0
    commands, cpu, started = commands_processed(client), cpu_seconds(process), time.monotonic()
    time.sleep(window)  # the measured window of idling
    commands = commands_processed(client) - commands
    cpu = cpu_seconds(process) - cpu
    wall = time.monotonic() - started

    workers.start(redis_url)
    repo = dp.make_repo([dp.source], tmp_path)
    submitted = time.monotonic()
    result = repo.submit(selection=["source"]).wait(timeout=60)
    latency = time.monotonic() - submitted
    print(f"\nidle coordinator with {recorded} recorded runs: {commands} Redis commands in {wall:.2f} s, "
          f"CPU {cpu * 1000:.1f} ms ({100 * cpu / wall:.2f}% of wall); "
          f"1-step submit -> wait: {latency * 1000:.0f} ms")
    assert commands < 100, commands
    assert cpu < 0.02 * wall, (cpu, wall)
    assert result.success, result.failed_assets
    assert latency < 30  # a sanity bound only
    assert client.zcard(keys.RUNS) == recorded + 1

