"""A worker killed between moving a job to its hand and claiming it (or whose claim failed) leaves a job that never
ran: it goes back to the queue and runs once, as its first attempt, on another worker."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from rivers.queues import keys
from tests.conftest import Background, WorkerProcesses
from tests.pipelines import distributed_pipeline as dp
from tests.redis_server import wait_for

pytestmark = pytest.mark.slow
DEAD = "gone-host.4242.abcdef"


def test_a_job_left_in_a_dead_workers_hand_runs_once_on_another_worker(
    redis_url: str, workers: WorkerProcesses, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_url)
    repo = dp.make_repo([dp.source, dp.doubled], tmp_path)
    scratch = repo.resources["scratch"]
    run = Background(repo)
    wait_for(lambda: client.llen(keys.queue_key("parallel")) == 1, 60, message="the first step's job to be queued")
    # the state a worker killed right after its BLMOVE leaves: the id in its hand, the job still queued
    client.lmove(keys.queue_key("parallel"), keys.hand_key(DEAD), "LEFT", "RIGHT")
    client.sadd(keys.workers_key("parallel"), DEAD)
    workers.start(redis_url)
    result = run.wait()
    assert result.success, result.failed_assets
    assert result.step_results["source"].attempt == 1  # given back, not failed as lost and retried
    assert len(scratch.lines("source")) == 1 and len(scratch.lines("doubled")) == 1
    assert not client.exists(keys.hand_key(DEAD))
    assert DEAD.encode() not in client.smembers(keys.workers_key("parallel"))
