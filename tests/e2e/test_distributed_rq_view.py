"""What RQ 3's own Python API sees of real rivers-workers and the steps they run (nothing read behind RQ's back).

rivers runs its own worker loop and writes RQ's worker view and registries itself (rivers/queues/rq_view.py);
here real rivers-worker processes run a real run, and only `rq` objects are asked what happened. The job id
of a step comes from rivers' `rivers:run:<run_id>:jobs` hash. RQ gets a connection of its own: it changes the
socket timeouts of the connection it is given.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis
from obstore.store import LocalStore
from rq import Queue, Worker
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.results import Result
from rq.serializers import JSONSerializer

import rivers as rs
from tests.conftest import Background, WorkerProcesses
from tests.pipelines import crash_pipeline as cp
from tests.pipelines import distributed_pipeline as dp
from tests.redis_server import wait_for

pytestmark = pytest.mark.slow

QUEUE = "rivers:parallel"


@pytest.fixture
def rq_connection(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


def _pids(workers: list[Worker]) -> set[int]:
    return {worker.pid for worker in workers}


def _job_ids(client: redis.Redis, run_id: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in client.hgetall(f"rivers:run:{run_id}:jobs").items()}


def test_rq_sees_rivers_workers_and_the_steps_they_run(
    redis_url: str, rq_connection: redis.Redis, workers: WorkerProcesses, tmp_path: Path
) -> None:
    procs = workers.start(redis_url, concurrency=2, count=2)
    queue = Queue(QUEUE, connection=rq_connection, serializer=JSONSerializer)
    expected = {proc.pid for proc in procs}

    # -- the workers -----------------------------------------------------------------------------------------
    wait_for(lambda: _pids(Worker.all(connection=rq_connection)) == expected, 10, message="RQ to list both workers")
    listed = Worker.all(connection=rq_connection)
    assert len(listed) == 2
    for worker in listed:
        assert worker.name.startswith(f"{socket.gethostname()}.{worker.pid}.")
        assert worker.queue_names() == [QUEUE]
        assert worker.hostname == socket.gethostname()
    assert {w.name for w in Worker.all(queue=queue)} == {w.name for w in listed}
    assert Worker.count(queue=queue) == 2

    # -- a run: one step slow (seen while it runs), one that succeeds, one that fails ---------------------------
    gate = tmp_path / "gate"
    gate.mkdir()
    (tmp_path / "scratch").mkdir()
    repo = rs.CodeRepository(
        [cp.upstream, cp.blocks, dp.source, dp.broken], default_executor=rs.Executor.parallel(),
        default_io_handler=rs.PickleIOHandler(LocalStore(str(tmp_path / "values"), mkdir=True)),
        resources={"gate": cp.Gate(directory=str(gate)), "scratch": dp.Scratch(dir=str(tmp_path / "scratch"))},
    )
    client = redis.Redis.from_url(redis_url)
    run = Background(repo)
    try:
        [marker] = wait_for(lambda: list(gate.glob("blocking-*")), 30, message="'blocks' to start")
        [jobs_key] = wait_for(lambda: list(client.scan_iter("rivers:run:*:jobs")), 10, message="the run's jobs")
        run_id = jobs_key.decode().split(":")[2]
        slow = _job_ids(client, run_id)["blocks"]
        started = StartedJobRegistry(QUEUE, connection=rq_connection, serializer=JSONSerializer)
        assert slow in started.get_job_ids()
        assert Job.fetch(slow, connection=rq_connection, serializer=JSONSerializer).get_status() == JobStatus.STARTED
        runs_it = psutil.Process(int(marker.name.removeprefix("blocking-"))).ppid()
        [busy] = [w for w in Worker.all(connection=rq_connection) if w.pid == runs_it]
        assert busy.get_state() == "busy"
    finally:
        (gate / "release").touch()
    result = run.wait(60)
    assert result.run_id == run_id
    assert dict(result.failed_assets) == {"broken": "ValueError: boom from a worker (21)"}
    ids = _job_ids(client, run_id)
    assert sorted(ids) == ["blocks", "broken", "source", "upstream"]

    finished = FinishedJobRegistry(QUEUE, connection=rq_connection, serializer=JSONSerializer).get_job_ids()
    failed = FailedJobRegistry(QUEUE, connection=rq_connection, serializer=JSONSerializer).get_job_ids()
    assert {ids["source"], ids["upstream"], ids["blocks"]} <= set(finished)
    assert ids["broken"] in failed and ids["broken"] not in finished
    assert not {ids["source"], ids["upstream"], ids["blocks"]} & set(failed)
    assert slow not in StartedJobRegistry(QUEUE, connection=rq_connection, serializer=JSONSerializer).get_job_ids()
    for step, status in (("source", JobStatus.FINISHED), ("blocks", JobStatus.FINISHED),
                         ("broken", JobStatus.FAILED)):
        assert Job.fetch(ids[step], connection=rq_connection, serializer=JSONSerializer).get_status() == status, step
    broken = Job.fetch(ids["broken"], connection=rq_connection, serializer=JSONSerializer)
    latest = broken.latest_result()
    assert latest is not None and latest.type == Result.Type.FAILED
    assert "boom from a worker (21)" in (latest.exc_string or "")

    # -- a worker that stops leaves RQ's view ------------------------------------------------------------------
    stopping, staying = procs
    stopping.send_signal(signal.SIGTERM)
    assert stopping.wait(15) == 0
    wait_for(lambda: _pids(Worker.all(connection=rq_connection)) == {staying.pid}, 10,
             message="the stopped worker to leave Worker.all()")
    assert _pids(Worker.all(queue=queue)) == {staying.pid}
    client.close()
