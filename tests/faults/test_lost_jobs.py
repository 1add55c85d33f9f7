"""Jobs and reports that go astray: a job whose hash vanished with Redis's data, a results list holding foreign
messages beside a real report. Real redis-server and real worker processes."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest

import rivers as rs
from rivers.distributed.jobs import encode_report
from rivers.queues import keys
from rivers.queues.base import StepRequest
from rivers.queues.redis import RedisHub, _Pending
from rivers.results import StepResult
from tests.conftest import Background, WorkerProcesses
from tests.pipelines import distributed_pipeline as dp
from tests.redis_server import RedisServer, wait_for

pytestmark = pytest.mark.slow


@pytest.mark.usefixtures("fast_watch")
def test_a_job_that_vanished_with_redis_data_is_sent_again(
    forgetful_redis: RedisServer, workers: WorkerProcesses, tmp_path: Path
) -> None:
    client = forgetful_redis.client()
    repo = dp.make_repo([dp.source], tmp_path)
    run = Background(repo)  # no worker yet: the job waits on the queue
    queue = keys.queue_key("parallel")
    [first] = wait_for(lambda: client.lrange(queue, 0, -1), 30, message="the step's job on the queue")
    forgetful_redis.restart()  # the job, its queue entry and the run's keys are gone
    [second] = wait_for(lambda: client.lrange(queue, 0, -1), 15, message="the step sent again")
    assert second != first
    workers.start(forgetful_redis.url)
    result = run.wait()
    assert result.success, result.failed_assets
    assert result.step_results["source"].attempt == 2
    assert repo.load_node("source") == 21


class _Captured:
    def __init__(self) -> None:
        self.results: list[StepResult] = []
        self.arrived = threading.Event()

    def __call__(self, result: StepResult) -> None:
        self.results.append(result)
        self.arrived.set()


def test_foreign_messages_in_a_batch_are_skipped_and_the_real_report_arrives(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    from rivers.coordinator.coordinator import Coordinator
    from rivers.plan import build_plan
    from rivers.run import run_resources

    client = redis_server.client()
    client.flushdb()
    repo = dp.make_repo([dp.source], tmp_path)
    graph = repo._resolve()
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    coordinator = Coordinator(run_id, build_plan(graph, set(graph.producer), rs.Executor.parallel(1), True), {},
                              run_resources(repo, {}), {})
    step = coordinator.plan.steps["source"]
    captured = _Captured()
    request = StepRequest(step, coordinator._call(step, 1), captured)
    job_id = uuid.uuid4().hex
    real = StepResult(run_id=run_id, step_key="source", attempt=1, status="succeeded", outputs=[])
    someone_else = StepResult(run_id="another-run", step_key="other", attempt=1, status="succeeded", outputs=[])
    client.rpush(keys.results_key(run_id), b"\xff\xfe not utf-8", b"no spaces", f"{job_id} - {{not json",
                 encode_report(uuid.uuid4().hex, real.model_dump_json(), None),  # a job nobody sent
                 f"{job_id} - {someone_else.model_dump_json()}",  # this job id, another step's report
                 encode_report(job_id, real.model_dump_json(), None), b"trailing junk")
    hub = RedisHub(redis_server.url)  # its listener takes the whole list in one batch once the run is pending
    hub.submit(_Pending(request, "parallel", job_id, ""), send=False)
    assert captured.arrived.wait(10), "the real report never arrived"
    assert [(r.step_key, r.status) for r in captured.results] == [("source", "succeeded")]
    wait_for(lambda: client.llen(keys.results_key(run_id)) == 0, 10, message="the whole batch taken")
    assert len(captured.results) == 1
