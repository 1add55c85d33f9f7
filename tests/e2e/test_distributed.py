"""Distributed mode end to end: RIVERS_REDIS_URL set, steps run in real rivers-worker processes.

Every test talks to a real redis-server started by the suite (tests/conftest.py) and proves where a
step ran by the pid it reports.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from rq import Queue
from rq.serializers import JSONSerializer

import rivers as rs
from rivers import defaults
from tests.conftest import WorkerProcesses
from tests.pipelines import distributed_pipeline as dp
from tests.redis_server import RedisServer, free_port, wait_for

pytestmark = pytest.mark.slow


def test_steps_run_in_workers_and_inputs_flow(redis_url: str, workers: WorkerProcesses, tmp_path: Path) -> None:
    procs = workers.start(redis_url, count=1)
    repo = dp.make_repo([dp.source, dp.doubled, dp.pid], tmp_path)
    result = repo.materialize()
    assert result.success, result.failed_assets
    assert sorted(result.materialized_assets) == ["doubled", "pid", "source"]
    assert repo.load_node("doubled") == 42
    worker_pids = {child.pid for child in workers.tree(procs[0])}
    assert repo.load_node("pid") in worker_pids
    assert repo.load_node("pid") != os.getpid()


def test_errors_keep_type_and_message_and_downstream_is_skipped(
    redis_url: str, workers: WorkerProcesses, tmp_path: Path
) -> None:
    workers.start(redis_url)
    repo = dp.make_repo([dp.source, dp.broken, dp.after_broken, dp.independent], tmp_path)
    result = repo.materialize(raise_on_error=False)
    assert not result.success
    assert dict(result.failed_assets) == {
        "broken": "ValueError: boom from a worker (21)",
        "after_broken": "ExecutionError: Skipped: upstream dependency failed",
    }
    assert repo.load_node("independent") == "fine"
    with pytest.raises(ValueError, match=r"boom from a worker \(21\)") as info:
        repo.materialize(selection=["source", "broken"])
    assert "boom from a worker" in str(info.value.__cause__)  # the remote traceback


def test_async_steps_run_in_a_pool_process_of_the_worker(
    redis_url: str, workers: WorkerProcesses, tmp_path: Path
) -> None:
    """The worker's main process never imports user code: async steps run on a pool process's event loop."""
    procs = workers.start(redis_url)
    repo = dp.make_repo([dp.source, dp.doubled, dp.async_plus_one], tmp_path)
    assert repo.materialize().success
    assert repo.load_node("async_plus_one") == 43
    scratch = repo.resources["scratch"]
    pool_pids = {str(child.pid) for child in workers.tree(procs[0])}
    [ran_in] = scratch.lines("async_plus_one")
    assert ran_in in pool_pids and ran_in != str(procs[0].pid)


def test_process_local_values_stay_in_the_coordinator(redis_url: str, workers: WorkerProcesses) -> None:
    """No IO handler: the default in-memory handler keeps every step here, async ones included."""

    @rs.Asset
    def numbers() -> list[int]:
        return [1, 2, 3]

    @rs.Asset
    async def total(numbers: list[int]) -> int:
        return sum(numbers)

    repo = rs.CodeRepository([numbers, total])
    assert repo.materialize().success
    assert repo.load_node("total") == 6


def test_a_closure_is_refused_without_a_secret(
    redis_url: str, workers: WorkerProcesses, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RIVERS_SECRET", raising=False)
    workers.start(redis_url)

    @rs.Asset
    def local_asset() -> int:
        return 1

    repo = dp.make_repo([local_asset], tmp_path)
    result = repo.materialize(raise_on_error=False)
    [(name, message)] = result.failed_assets
    assert name == "local_asset"
    assert "move it to module scope" in message and "RIVERS_SECRET" in message


def test_a_closure_runs_when_coordinator_and_workers_share_a_secret(
    redis_url: str, workers: WorkerProcesses, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RIVERS_SECRET", "s3cret")
    procs = workers.start(redis_url, env={"RIVERS_SECRET": "s3cret"})

    @rs.Asset
    def local_pid() -> int:
        return os.getpid()

    repo = dp.make_repo([local_pid], tmp_path)
    assert repo.materialize().success
    assert repo.load_node("local_pid") in {child.pid for child in workers.tree(procs[0])}


def test_a_closure_signed_with_another_secret_is_not_unpickled(
    redis_url: str, workers: WorkerProcesses, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RIVERS_SECRET", "ours")
    workers.start(redis_url, env={"RIVERS_SECRET": "theirs"})

    @rs.Asset
    def local_asset() -> int:
        return 1

    result = dp.make_repo([local_asset], tmp_path).materialize(raise_on_error=False)
    [(_, message)] = result.failed_assets
    assert "signature" in message


def test_a_step_no_worker_consumes_fails_naming_the_queue(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(defaults, "PICKUP_TIMEOUT_S", 0.5)
    monkeypatch.setattr(defaults, "WATCH_INTERVAL_S", 0.2)
    repo = dp.make_repo([dp.independent], tmp_path)
    result = repo.materialize(raise_on_error=False)
    [(name, message)] = result.failed_assets
    assert name == "independent"
    assert "no rivers-worker is consuming queue 'rivers:parallel'" in message
    assert redis.Redis.from_url(redis_url).llen("rq:queue:rivers:parallel") == 0  # taken back off the queue


def test_unreachable_redis_is_one_clear_error_quickly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    monkeypatch.setenv("RIVERS_REDIS_URL", url)
    repo = dp.make_repo([dp.independent], tmp_path)
    started = time.monotonic()
    with pytest.raises(rs.ExecutionError, match=r"Cannot reach Redis at redis://127\.0\.0\.1") as info:
        repo.materialize()
    assert time.monotonic() - started < 10  # the contract: a few seconds, not a hang
    assert "\n" not in str(info.value)


def test_unreachable_redis_stops_a_worker_with_exit_code_2() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    done = subprocess.run([sys.executable, "-m", "rivers.cli.worker", "--executor", "parallel", "--redis-url", url],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr.startswith("rivers-worker: error: Cannot reach Redis at")


def test_password_urls_are_passed_to_redis_unchanged(
    workers: WorkerProcesses, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with RedisServer(password="pa55word") as server:
        monkeypatch.setenv("RIVERS_REDIS_URL", server.url)
        workers.start(server.url)
        repo = dp.make_repo([dp.source, dp.doubled], tmp_path)
        assert repo.materialize().success
        assert repo.load_node("doubled") == 42
        wrong = server.url.replace("pa55word", "wrong")
        monkeypatch.setenv("RIVERS_REDIS_URL", wrong)
        with pytest.raises(rs.ExecutionError) as info:
            repo.materialize()
        assert "pa55word" not in str(info.value) and "wrong" not in str(info.value)
        workers.close()


def test_a_worker_runs_only_rivers_step_jobs(redis_url: str, workers: WorkerProcesses, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.touch()
    client = redis.Redis.from_url(redis_url)
    queue = Queue("rivers:parallel", connection=client, serializer=JSONSerializer)
    job = queue.enqueue("os.remove", str(victim))
    workers.start(redis_url)
    wait_for(lambda: client.hget(f"rq:job:{job.id}", "status") == b"failed", 30, message="the job to be refused")
    assert victim.exists()
    assert "refused_job" in workers.logs()


def test_a_burst_worker_exits_when_the_queue_is_empty(redis_url: str, workers: WorkerProcesses) -> None:
    [worker] = workers.start(redis_url, extra=["--burst"], wait=False)
    assert worker.wait(30) == 0
