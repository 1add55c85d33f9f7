"""A downstream armed on its upstream's attempt (its job waits in Redis for that attempt's successful report) runs
once, after the attempt that succeeded: a killed upstream's arm is taken back and nothing of it is left in Redis."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest
import redis

from rivers.queues import keys
from tests.armed import armed_on, jobs_of, run_until_armed
from tests.conftest import WorkerProcesses
from tests.pipelines import distributed_pipeline as dp
from tests.pipelines import import_exit_once
from tests.redis_server import RedisServer, wait_for

pytestmark = pytest.mark.slow


@pytest.mark.usefixtures("fast_watch", "short_lease")
def test_a_downstream_armed_on_a_killed_upstream_runs_once_after_the_retry(
    redis_url: str, workers: WorkerProcesses, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_url)
    workers.start(redis_url, count=2, concurrency=1)
    repo = dp.make_repo([dp.source, dp.stalls_once, dp.after_stall], tmp_path)
    scratch = repo.resources["scratch"]
    run = run_until_armed(repo, client, "stalls_once")
    ((upstream_job, [armed]),) = armed_on(client).items()
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
    assert armed_on(client) == {}
    assert not [key for key in client.scan_iter(match=keys.RQ_JOB_PREFIX + "*")
                if client.hget(key, keys.JOB_STATUS) == keys.DEFERRED.encode()]


def test_a_claimed_downstream_whose_module_kills_its_process_is_retried_and_the_worker_serves_on(
    redis_url: str, workers: WorkerProcesses, tmp_path: Path
) -> None:
    """The step process that reported the upstream claimed the downstream and died importing its module: the worker
    knew of the claim (it came with the upstream's result), reports that attempt lost, and the retry runs once."""
    client = redis.Redis.from_url(redis_url)
    exits = tmp_path / "exits"
    exits.mkdir()
    [worker] = workers.start(redis_url, concurrency=1, env={"IMPORT_EXIT_ONCE_DIR": str(exits)})
    created = psutil.Process(worker.pid).create_time()
    repo = dp.make_repo([dp.source, dp.gated, import_exit_once.exits_on_first_import], tmp_path)
    scratch = repo.resources["scratch"]
    run = run_until_armed(repo, client, "gated")
    (Path(scratch.dir) / "open").touch()
    result = run.wait()

    assert result.success, result.failed_assets
    step = result.step_results["exits_on_first_import"]
    assert step.attempt == 2 and len(scratch.lines("exits_on_first_import")) == 1
    assert len(scratch.lines("gated")) == 1 and repo.load_node("exits_on_first_import") == repo.load_node("gated") + 1
    # the first attempt was the continuation: claimed by the upstream's report, in the process that reported it
    died = int((exits / "exited").read_text())
    assert died == int(scratch.lines("gated")[0])
    [upstream] = jobs_of(client, "gated")
    first = [job for job in jobs_of(client, "exits_on_first_import") if job[keys.JOB_STARTED_AT] and
             job[keys.JOB_STARTED_AT] == upstream[keys.JOB_ENDED_AT]]
    assert len(first) == 1 and first[0][keys.JOB_WORKER] == upstream[keys.JOB_WORKER]
    # reported by the worker when the process died, not found lost when its lease lapsed
    assert first[0][keys.JOB_EXC_INFO] == ("WorkerLost: worker process died: exited with code 3 while running "
                                    "'exits_on_first_import'")
    assert worker.poll() is None and psutil.Process(worker.pid).create_time() == created
    assert step.pid != died and step.pid in {child.pid for child in psutil.Process(worker.pid).children(True)}


@pytest.mark.usefixtures("fast_watch", "short_lease")
def test_a_downstream_armed_when_redis_loses_its_data_runs_once_after_the_upstream_is_sent_again(
    forgetful_redis: RedisServer, workers: WorkerProcesses, tmp_path: Path
) -> None:
    """Redis restarts empty while the upstream runs and its downstream is armed: both jobs, the run's keys and the
    lease are gone. The upstream is sent again, and the downstream runs once, after the attempt that succeeded."""
    client = forgetful_redis.client()
    workers.start(forgetful_redis.url, concurrency=2)
    repo = dp.make_repo([dp.source, dp.gated, dp.after_gated], tmp_path)
    scratch = repo.resources["scratch"]
    run = run_until_armed(repo, client, "gated")
    forgetful_redis.restart()
    wait_for(lambda: len(scratch.lines("gated")) == 2, 30, message="the upstream to be sent again and start")
    (Path(scratch.dir) / "open").touch()
    result = run.wait()
    assert result.success, result.failed_assets
    assert result.step_results["gated"].attempt == 2
    assert len(scratch.lines("after_gated")) == 1
    downstream, retry = result.step_results["after_gated"], result.step_results["gated"]
    assert downstream.started_at >= retry.started_at + retry.duration_s
    assert armed_on(client) == {}
