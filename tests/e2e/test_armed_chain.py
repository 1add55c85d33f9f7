"""A downstream armed on a running step (queues/armed.py) leaves with that step's report: the step process that
reported claims it in the same script and runs it next. Real worker, real coordinator, real Redis."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import redis

from rivers.queues import keys
from tests.armed import armed_on, job_of, run_until_armed
from tests.conftest import WorkerProcesses
from tests.pipelines import distributed_pipeline as dp
from tests.redis_server import wait_for

pytestmark = pytest.mark.slow


def test_the_report_of_a_step_starts_its_armed_downstream_in_the_same_process(
    redis_url: str, workers: WorkerProcesses, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_url)
    workers.start(redis_url, concurrency=2)
    repo = dp.make_repo([dp.source, dp.gated, dp.after_gated], tmp_path)
    scratch = repo.resources["scratch"]
    run = run_until_armed(repo, client, "gated")
    (Path(scratch.dir) / "open").touch()
    result = run.wait()
    assert result.success, result.failed_assets
    assert len(scratch.lines("gated")) == 1 and len(scratch.lines("after_gated")) == 1
    upstream, downstream = job_of(client, "gated"), job_of(client, "after_gated")
    assert downstream[keys.JOB_AFTER] == upstream["id"]
    # claimed by the upstream's report itself: started at the very time that report finished the upstream
    assert downstream[keys.JOB_STARTED_AT] == upstream[keys.JOB_ENDED_AT]
    assert downstream[keys.JOB_WORKER] == upstream[keys.JOB_WORKER]
    assert result.step_results["after_gated"].pid == result.step_results["gated"].pid
    assert armed_on(client) == {}


def test_a_draining_worker_leaves_the_armed_downstream_to_the_queue(
    redis_url: str, workers: WorkerProcesses, tmp_path: Path
) -> None:
    """After its first SIGTERM a worker takes nothing new, not even what its own step's report releases."""
    client = redis.Redis.from_url(redis_url)
    [worker] = workers.start(redis_url, concurrency=1)
    repo = dp.make_repo([dp.source, dp.gated, dp.after_gated], tmp_path)
    scratch = repo.resources["scratch"]
    run = run_until_armed(repo, client, "gated")
    worker.send_signal(signal.SIGTERM)
    wait_for(lambda: "worker.stopping" in workers.logs(), 10, message="the worker to see SIGTERM")
    (Path(scratch.dir) / "open").touch()
    assert worker.wait(30) == 0
    assert not scratch.lines("after_gated")
    assert client.lrange(keys.queue_key("parallel"), 0, -1) == [job_of(client, "after_gated")["id"].encode()]
    workers.start(redis_url)
    result = run.wait()
    assert result.success, result.failed_assets
    assert len(scratch.lines("after_gated")) == 1
