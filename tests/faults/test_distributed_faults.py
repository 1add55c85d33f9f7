"""Distributed mode under faults: workers killed or stopped mid-step, Redis restarted mid-run.

Real processes are killed and restarted; the tests wait for states with deadlines, never for time.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import Background, WorkerProcesses
from tests.pipelines import distributed_pipeline as dp
from tests.redis_server import RedisServer, wait_for

pytestmark = pytest.mark.slow


@pytest.mark.usefixtures("fast_watch", "short_lease")
def test_a_worker_killed_mid_step_costs_one_retry_on_another_worker(
    redis_url: str, workers: WorkerProcesses, tmp_path: Path
) -> None:
    workers.start(redis_url, count=2, concurrency=1)
    repo = dp.make_repo([dp.source, dp.stalls_once, dp.after_stall], tmp_path)
    scratch = repo.resources["scratch"]
    run = Background(repo)
    wait_for(lambda: scratch.lines("stalls_once"), 60, message="the step to start")
    victim = workers.owner_of(int(scratch.lines("stalls_once")[0]))
    workers.kill(victim)
    killed_at = time.time()
    result = run.wait()
    assert result.success, result.failed_assets
    assert len(scratch.lines("stalls_once")) == 2 and len(scratch.lines("after_stall")) == 1
    retry = result.step_results["stalls_once"]
    assert retry.attempt == 2
    assert retry.started_at - killed_at < 15  # the contract: re-queued within 15 s of the kill
    assert victim.pid not in {p.pid for p in psutil.Process().children()} or victim.poll() is not None


def test_sigterm_lets_running_steps_finish_and_takes_no_new_ones(
    redis_url: str, workers: WorkerProcesses, tmp_path: Path
) -> None:
    [worker] = workers.start(redis_url, concurrency=1)
    repo = dp.make_repo([dp.source, dp.gated, dp.after_gated], tmp_path)
    scratch = repo.resources["scratch"]
    run = Background(repo)
    wait_for(lambda: scratch.lines("gated"), 60, message="the gated step to start")
    worker.send_signal(signal.SIGTERM)
    wait_for(lambda: "worker.stopping" in workers.logs(), 10, message="the worker to see SIGTERM")
    (Path(scratch.dir) / "open").touch()
    assert worker.wait(30) == 0  # it finished 'gated' and left 'after_gated' in the queue
    workers.start(redis_url)  # the downstream step waits for a worker, then runs
    result = run.wait()
    assert result.success, result.failed_assets
    assert len(scratch.lines("gated")) == 1 and len(scratch.lines("after_gated")) == 1


def test_a_second_sigterm_hands_running_steps_back_to_the_queue(
    redis_url: str, workers: WorkerProcesses, tmp_path: Path
) -> None:
    [worker] = workers.start(redis_url, concurrency=1)
    repo = dp.make_repo([dp.source, dp.stalls_once, dp.after_stall], tmp_path)
    scratch = repo.resources["scratch"]
    run = Background(repo)
    wait_for(lambda: scratch.lines("stalls_once"), 60, message="the step to start")
    worker.send_signal(signal.SIGTERM)
    wait_for(lambda: "worker.stopping" in workers.logs(), 10, message="the worker to see SIGTERM")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert "worker.handed_back" in workers.logs()
    workers.start(redis_url)
    result = run.wait()
    assert result.success, result.failed_assets
    assert result.step_results["stalls_once"].attempt == 1  # handed back, not failed and retried
    assert len(scratch.lines("stalls_once")) == 2


def test_a_redis_restart_mid_run_is_survived(
    persistent_redis: RedisServer, workers: WorkerProcesses, tmp_path: Path
) -> None:
    workers.start(persistent_redis.url, concurrency=2)
    repo = dp.make_repo([dp.source, dp.gated, dp.after_gated, dp.independent], tmp_path)
    scratch = repo.resources["scratch"]
    run = Background(repo)
    wait_for(lambda: scratch.lines("gated"), 60, message="the gated step to start")
    persistent_redis.restart()
    (Path(scratch.dir) / "open").touch()
    result = run.wait()
    assert result.success, result.failed_assets
    assert repo.load_node("after_gated") == 22
    assert len(scratch.lines("after_gated")) == 1
    workers.close()
