"""Distributed mode under faults: workers killed or stopped mid-step, Redis restarted mid-run.

Real processes are killed and restarted; the tests wait for states with deadlines, never for time.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import rivers as rs
from tests.conftest import WorkerProcesses
from tests.pipelines import distributed_pipeline as dp
from tests.redis_server import RedisServer, wait_for

pytestmark = pytest.mark.slow


class Background:
    """A run in a thread, so that the test can break things while it goes."""

    def __init__(self, repo: rs.CodeRepository, **kwargs: Any) -> None:
        self.result: rs.RunResult | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(repo, kwargs), daemon=True)
        self.thread.start()

    def _run(self, repo: rs.CodeRepository, kwargs: dict[str, Any]) -> None:
        try:
            self.result = repo.materialize(raise_on_error=False, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc

    def wait(self, timeout: float = 90) -> rs.RunResult:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the run did not finish"
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def owner_of(workers: WorkerProcesses, pid: int) -> Any:
    """The worker whose process tree holds `pid`."""
    for process in workers.processes:
        if process.pid == pid or pid in {child.pid for child in workers.tree(process)}:
            return process
    raise AssertionError(f"pid {pid} belongs to no worker")


def test_a_worker_killed_mid_step_costs_one_retry_on_another_worker(
    redis_url: str, workers: WorkerProcesses, tmp_path: Path
) -> None:
    workers.start(redis_url, count=2, concurrency=1)
    repo = dp.make_repo([dp.source, dp.stalls_once, dp.after_stall], tmp_path)
    scratch = repo.resources["scratch"]
    run = Background(repo)
    wait_for(lambda: scratch.lines("stalls_once"), 60, message="the step to start")
    victim = owner_of(workers, int(scratch.lines("stalls_once")[0]))
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


@pytest.fixture
def persistent_redis(monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisServer]:
    with RedisServer(appendonly=True) as server:
        monkeypatch.setenv("RIVERS_REDIS_URL", server.url)
        yield server


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
