"""A downstream armed on its upstream's attempt (its job waits in Redis for that attempt's successful report) runs
once, after the attempt that succeeded: a killed upstream's arm is taken back and nothing of it is left in Redis."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from rivers.queues import keys
from tests.conftest import Background, WorkerProcesses
from tests.pipelines import distributed_pipeline as dp
from tests.redis_server import wait_for

pytestmark = pytest.mark.slow


def armed_jobs(client: redis.Redis) -> dict[str, list[str]]:
    """Upstream job id -> the ids armed on it."""
    return {key.decode().removeprefix(keys.AFTER_PREFIX): [i.decode() for i in client.lrange(key, 0, -1)]
            for key in client.scan_iter(match=keys.AFTER_PREFIX + "*")}


@pytest.mark.usefixtures("fast_watch", "short_lease")
def test_a_downstream_armed_on_a_killed_upstream_runs_once_after_the_retry(
    redis_url: str, workers: WorkerProcesses, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_url)
    workers.start(redis_url, count=2, concurrency=1)
    repo = dp.make_repo([dp.source, dp.stalls_once, dp.after_stall], tmp_path)
    scratch = repo.resources["scratch"]
    run = Background(repo)
    wait_for(lambda: scratch.lines("stalls_once"), 60, message="the upstream to start")
    wait_for(lambda: armed_jobs(client), 30, message="the downstream to be armed on the running upstream")
    ((upstream_job, [armed]),) = armed_jobs(client).items()
    record = client.hgetall(keys.job_key(armed))
    assert record[keys.JOB_STATUS.encode()] == keys.DEFERRED.encode()
    assert record[keys.JOB_DESCRIPTION.encode()].decode().endswith(" after_stall")
    assert record[keys.JOB_AFTER.encode()] == upstream_job.encode()
    assert client.llen(keys.queue_key("parallel")) == 0  # armed, not queued: no worker can take it

    workers.kill(workers.owner_of(int(scratch.lines("stalls_once")[0])))
    result = run.wait()
    assert result.success, result.failed_assets
    assert len(scratch.lines("stalls_once")) == 2 and len(scratch.lines("after_stall")) == 1
    retry, downstream = result.step_results["stalls_once"], result.step_results["after_stall"]
    assert retry.attempt == 2 and downstream.attempt == 1
    assert downstream.started_at >= retry.started_at + retry.duration_s  # after the attempt that succeeded
    assert not client.exists(keys.job_key(armed))  # the killed attempt's arm was taken back
    assert armed_jobs(client) == {}
    assert not [key for key in client.scan_iter(match=keys.RQ_JOB_PREFIX + "*")
                if client.hget(key, keys.JOB_STATUS) == keys.DEFERRED.encode()]
