"""rivers' own writes (rivers.queues.rq_view) seen through RQ 3's Python API: workers, registries, job status."""

from __future__ import annotations

import threading
import time
import uuid
import warnings
from datetime import UTC, datetime, timedelta
from typing import Any

from rq import Queue, Worker
from rq.executions import WORKER_EXECUTIONS_KEY_TEMPLATE, Execution, ExecutionRegistry
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry, clean_registries
from rq.results import Result
from rq.serializers import JSONSerializer
from rq.worker_registration import REDIS_WORKER_KEYS, WORKERS_BY_QUEUE_KEY

from rivers.distributed.worker import Presence, announce
from rivers.queues import rq_view
from tests.redis_server import RedisServer

QUEUE = "rivers:parallel"
WORKER = "host-1.4242.abc123"

# What a rivers claim script would look like with the started writes in it (ARGV: queue, worker, now, now_iso, ttl,
# current, ids...): claims the ids whose job hash still has its data.
CLAIM = rq_view.LUA_FUNCTIONS + """
local out = {}
for i = 7, #ARGV do
  if redis.call('HEXISTS', 'rq:job:' .. ARGV[i], 'data') == 1 then
    rq_started(ARGV[1], ARGV[i], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
    out[#out + 1] = ARGV[i]
  end
end
return out
"""
FINISH = rq_view.LUA_FUNCTIONS + "return rq_finished(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])"
FAIL = rq_view.LUA_FUNCTIONS + (
    "return rq_failed(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8])")
BEAT = rq_view.LUA_FUNCTIONS + "return rq_heartbeat(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])"
REQUEUE = rq_view.LUA_FUNCTIONS + "return rq_requeued(ARGV[1], ARGV[2], ARGV[3])"
FORGET = rq_view.LUA_FUNCTIONS + "return rq_forget(ARGV[1], ARGV[2])"


def queue(client: Any) -> Queue:
    return Queue(QUEUE, connection=client, serializer=JSONSerializer)


def enqueue(client: Any, job_id: str | None = None) -> str:
    """Enqueue a step job the way rivers.queues.redis does."""
    job_id = job_id or uuid.uuid4().hex
    pipe = client.pipeline(transaction=True)
    queue(client).enqueue_many([Queue.prepare_data(
        "rivers.distributed.jobs.run_step_job", args=["{}", "r"], job_id=job_id, timeout=-1, result_ttl=0,
        description=f"run-1 step-{job_id[:4]}")], pipeline=pipe)
    pipe.execute()
    return job_id


def register(client: Any, name: str = WORKER, ttl_s: int = 30) -> None:
    pipe = client.pipeline(transaction=False)
    rq_view.register_worker(pipe, name, [QUEUE], hostname="host-1", pid=4242, ttl_s=ttl_s)
    pipe.execute()


def claim(client: Any, *job_ids: str, worker: str = WORKER, ttl: int = 90, at: float | None = None,
          current: bool = True) -> list[str]:
    at = time.time() if at is None else at
    popped = client.lmpop(1, rq_view.RQ_PREFIX + ":queue:" + QUEUE, direction="LEFT", count=len(job_ids))
    assert popped is not None
    now_iso = rq_view.rq_time(datetime.fromtimestamp(at, UTC))
    claimed = client.register_script(CLAIM)(args=[QUEUE, worker, repr(at), now_iso, ttl, "1" if current else "0",
                                                         *job_ids])
    return [job_id.decode() for job_id in claimed]


def finish(client: Any, job_id: str, keep: int = 500, worker: str = WORKER) -> int:
    return int(client.register_script(FINISH)(args=[QUEUE, job_id, worker, repr(time.time()), rq_view.rq_time(),
                                                    keep]))


def fail(client: Any, job_id: str, text: str, keep: int = 3600, worker: str = WORKER) -> int:
    return int(client.register_script(FAIL)(args=[QUEUE, job_id, worker, repr(time.time()), rq_view.rq_time(), keep,
                                                  text, rq_view.exc_string_field(text)]))


def fetch(client: Any, job_id: str) -> Job:
    return Job.fetch(job_id, connection=client, serializer=JSONSerializer)


def only_worker(client: Any) -> Any:
    workers = Worker.all(connection=client)
    assert len(workers) == 1
    return workers[0]


def test_key_names_are_rqs(client: Any) -> None:
    q = queue(client)
    assert rq_view.WORKERS_KEY == REDIS_WORKER_KEYS
    assert rq_view.queue_workers_key(QUEUE) == WORKERS_BY_QUEUE_KEY % QUEUE
    worker = Worker([q], name=WORKER, connection=client, prepare_for_work=False)
    assert rq_view.worker_key(WORKER) == worker.key
    assert rq_view.worker_executions_key(WORKER) == WORKER_EXECUTIONS_KEY_TEMPLATE.format(WORKER)
    assert rq_view.worker_executions_key(WORKER) == worker.executions_key
    assert rq_view.started_key(QUEUE) == StartedJobRegistry(queue=q).key == q.started_job_registry.key
    assert rq_view.finished_key(QUEUE) == FinishedJobRegistry(queue=q).key
    assert rq_view.failed_key(QUEUE) == FailedJobRegistry(queue=q).key
    execution = Execution(rq_view.execution_id(WORKER), "job1", connection=client, worker_name=WORKER)
    assert rq_view.started_member("job1", WORKER) == execution.composite_key
    assert rq_view.execution_key("job1", WORKER) == execution.key
    assert rq_view.job_executions_key("job1") == ExecutionRegistry("job1", connection=client).key
    assert rq_view.result_key("job1") == Result.get_key("job1")
    assert rq_view.execution_id("a:b") == "a_b"


def test_worker_registration_heartbeat_and_unregister(client: Any) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    register(client)
    q = queue(client)
    assert Worker.count(connection=client) == 1
    assert Worker.count(queue=q) == 1
    assert [w.name for w in Worker.all(queue=q)] == [WORKER]
    assert Worker.all(queue=Queue("other", connection=client)) == []
    worker = only_worker(client)
    assert worker.name == WORKER
    assert worker.hostname == "host-1"
    assert worker.pid == 4242
    assert worker.queue_names() == [QUEUE]
    assert worker.get_state() == "idle"
    assert worker.birth_date is not None and worker.birth_date >= before
    assert worker.last_heartbeat is not None and worker.last_heartbeat >= before
    assert worker.get_current_job_id() is None
    assert (worker.successful_job_count, worker.failed_job_count) == (0, 0)
    assert 0 < client.ttl(rq_view.worker_key(WORKER)) <= 30

    pipe = client.pipeline(transaction=False)
    rq_view.heartbeat_worker(pipe, WORKER, ttl_s=60, state="busy", current_job="j1")
    pipe.execute()
    worker = only_worker(client)
    assert worker.get_state() == "busy"
    assert worker.last_heartbeat is not None and worker.last_heartbeat >= before
    assert 30 < client.ttl(rq_view.worker_key(WORKER)) <= 60

    register(client, ttl_s=60)  # re-registering (self-healing beat) keeps one worker
    assert Worker.count(connection=client) == 1

    pipe = client.pipeline(transaction=False)
    rq_view.unregister_worker(pipe, WORKER, [QUEUE])
    pipe.execute()
    assert Worker.all(connection=client) == []
    assert Worker.all(queue=q) == []
    assert Worker.count(connection=client) == 0
    assert Worker.count(queue=q) == 0


def test_expired_worker_disappears(client: Any) -> None:
    register(client)
    client.delete(rq_view.worker_key(WORKER))  # what its TTL does when the worker stops beating
    assert Worker.all(connection=client) == []
    assert Worker.all(queue=queue(client)) == []


def test_claim_then_success(client: Any) -> None:
    register(client)
    q = queue(client)
    job_id = enqueue(client)
    assert fetch(client, job_id).get_status() == JobStatus.QUEUED

    assert claim(client, job_id) == [job_id]
    started = StartedJobRegistry(queue=q)
    assert started.get_job_ids() == [job_id]
    assert len(started) == 1
    assert started.get_job_and_execution_ids() == [(job_id, rq_view.execution_id(WORKER))]
    assert q.count == 0
    job = fetch(client, job_id)
    assert job.get_status() == JobStatus.STARTED
    assert job.worker_name == WORKER
    assert job.started_at is not None
    assert [e.worker_name for e in job.get_executions()] == [WORKER]
    worker = only_worker(client)
    assert worker.get_state() == "busy"
    assert worker.get_current_job_id() == job_id
    assert worker.get_current_job() is not None
    clean_registries(q)  # what `rq info` and RQ workers run: a live execution stays started
    assert started.get_job_ids() == [job_id]

    score = client.zscore(rq_view.started_key(QUEUE), rq_view.started_member(job_id, WORKER))
    client.zadd(rq_view.started_key(QUEUE), {rq_view.started_member(job_id, WORKER): score - 50})
    pipe = client.pipeline(transaction=False)
    rq_view.heartbeat_jobs(pipe, QUEUE, WORKER, [job_id], ttl_s=90)
    pipe.execute()
    assert client.zscore(rq_view.started_key(QUEUE), rq_view.started_member(job_id, WORKER)) >= score
    client.register_script(BEAT)(args=[QUEUE, job_id, WORKER, repr(time.time() + 10), 90])
    assert client.zscore(rq_view.started_key(QUEUE), rq_view.started_member(job_id, WORKER)) >= score + 10

    assert finish(client, job_id) == 1
    assert started.get_job_ids() == []
    assert len(started) == 0
    finished = FinishedJobRegistry(queue=q)
    assert finished.get_job_ids() == [job_id]
    assert len(finished) == 1
    job = fetch(client, job_id)
    assert job.get_status() == JobStatus.FINISHED
    assert job.ended_at is not None and job.started_at is not None and job.ended_at >= job.started_at
    result = job.latest_result()
    assert result is not None and result.type == Result.Type.SUCCESSFUL and result.worker_name == WORKER
    assert job.return_value() is None
    assert job.get_executions() == []
    assert 0 < client.ttl("rq:job:" + job_id) <= 500
    assert 0 < finished.get_expiration_time(job).timestamp() - time.time() <= 501
    worker = only_worker(client)
    assert worker.get_state() == "idle"
    assert worker.get_current_job_id() is None
    assert (worker.successful_job_count, worker.failed_job_count) == (1, 0)
    assert worker.total_working_time >= 0
    clean_registries(q)
    assert finished.get_job_ids() == [job_id]


def test_claim_then_failure(client: Any) -> None:
    register(client)
    q = queue(client)
    job_id = enqueue(client)
    claim(client, job_id)
    text = "Traceback (most recent call last):\nValueError: boom"
    assert fail(client, job_id, text) == 1
    assert StartedJobRegistry(queue=q).get_job_ids() == []
    failed = FailedJobRegistry(queue=q)
    assert failed.get_job_ids() == [job_id]
    assert len(failed) == 1
    job = fetch(client, job_id)
    assert job.get_status() == JobStatus.FAILED
    assert job.ended_at is not None
    result = job.latest_result()
    assert result is not None and result.type == Result.Type.FAILED and result.exc_string == text
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert job.exc_info == text
    worker = only_worker(client)
    assert (worker.successful_job_count, worker.failed_job_count) == (0, 1)
    assert worker.get_state() == "idle"


def test_two_jobs_one_worker(client: Any) -> None:
    register(client)
    q = queue(client)
    first, second = enqueue(client), enqueue(client)
    assert sorted(claim(client, first, second)) == sorted([first, second])
    assert sorted(StartedJobRegistry(queue=q).get_job_ids()) == sorted([first, second])
    assert finish(client, first) == 1
    assert only_worker(client).get_state() == "busy"  # the second still runs
    assert only_worker(client).get_current_job_id() == second
    assert fail(client, second, "boom") == 1
    assert only_worker(client).get_state() == "idle"
    assert FinishedJobRegistry(queue=q).get_job_ids() == [first]
    assert FailedJobRegistry(queue=q).get_job_ids() == [second]


def test_keep_zero_deletes_the_job_like_result_ttl_zero(client: Any) -> None:
    register(client)
    q = queue(client)
    job_id = enqueue(client)
    claim(client, job_id)
    assert finish(client, job_id, keep=0) == 1
    assert StartedJobRegistry(queue=q).get_job_ids() == []
    assert FinishedJobRegistry(queue=q).get_job_ids() == []
    assert not Job.exists(job_id, connection=client)
    assert only_worker(client).successful_job_count == 1


def test_late_report_of_a_deleted_job_writes_no_job(client: Any) -> None:
    register(client)
    q = queue(client)
    job_id = enqueue(client)
    claim(client, job_id)
    client.delete("rq:job:" + job_id)  # the coordinator gave up on it
    assert finish(client, job_id) == 0
    assert not Job.exists(job_id, connection=client)
    assert StartedJobRegistry(queue=q).get_job_ids() == []
    assert FinishedJobRegistry(queue=q).get_job_ids() == []


def test_requeue_and_forget(client: Any) -> None:
    register(client)
    q = queue(client)
    job_id = enqueue(client)
    claim(client, job_id)
    assert client.register_script(REQUEUE)(args=[QUEUE, job_id, WORKER]) == 1
    client.lpush("rq:queue:" + QUEUE, job_id)
    assert StartedJobRegistry(queue=q).get_job_ids() == []
    assert fetch(client, job_id).get_status() == JobStatus.QUEUED
    assert q.job_ids == [job_id]
    assert only_worker(client).get_current_job_id() is None

    claim(client, job_id, worker="other.1.x")
    assert StartedJobRegistry(queue=q).get_job_ids() == [job_id]
    assert client.register_script(FORGET)(args=[QUEUE, job_id]) == 1
    assert StartedJobRegistry(queue=q).get_job_ids() == []
    assert not Job.exists(job_id, connection=client)


def test_cleanup_fails_an_expired_started_job(client: Any) -> None:
    """The pitfall: a started entry whose score passed, with the job hash still `started`, is failed by RQ."""
    register(client)
    q = queue(client)
    job_id = enqueue(client)
    claim(client, job_id, ttl=90, at=time.time() - 200)  # never renewed
    assert StartedJobRegistry(queue=q).get_job_ids() == []  # get_job_ids() ran the cleanup
    assert FailedJobRegistry(queue=q).get_job_ids() == [job_id]
    job = fetch(client, job_id)
    assert job.get_status() == JobStatus.FAILED
    assert "AbandonedJobError" in (job.latest_result().exc_string or "")


def test_cleanup_drops_an_expired_entry_whose_job_is_gone(client: Any) -> None:
    register(client)
    q = queue(client)
    job_id = enqueue(client)
    claim(client, job_id, ttl=90, at=time.time() - 200)
    client.delete("rq:job:" + job_id)  # the coordinator's lost-lease path
    assert len(StartedJobRegistry(queue=q)) == 0
    assert FailedJobRegistry(queue=q).get_job_ids() == []


def test_untracked_executions_leave_the_state_to_the_heartbeat(client: Any) -> None:
    """current='0' (the default of rivers, for rq-dashboard): no current job; state follows the heartbeat."""
    register(client)
    q = queue(client)
    first, second = enqueue(client), enqueue(client)
    claim(client, first, second, current=False)
    worker = only_worker(client)
    assert worker.get_state() == "busy"
    assert worker.get_current_job_id() is None
    assert sorted(StartedJobRegistry(queue=q).get_job_ids()) == sorted([first, second])
    assert finish(client, first) == 1
    assert finish(client, second) == 1
    assert only_worker(client).get_state() == "busy"  # until the next beat
    pipe = client.pipeline(transaction=False)
    rq_view.heartbeat_worker(pipe, WORKER, ttl_s=30, state="idle")
    pipe.execute()
    worker = only_worker(client)
    assert worker.get_state() == "idle"
    assert worker.successful_job_count == 2
    assert sorted(FinishedJobRegistry(queue=q).get_job_ids()) == sorted([first, second])


def test_no_heartbeat_lands_after_the_goodbye(server: RedisServer, client: Any) -> None:
    """A beat already under way when the consumer leaves finishes first; one that starts later beats nothing."""
    presence = Presence(server.url, WORKER, "parallel")
    inside, release = threading.Event(), threading.Event()
    beats: list[bool] = []

    def beat() -> None:
        with presence.beating() as present:
            beats.append(present)
            inside.set()
            release.wait(10)
            if present:
                pipe = client.pipeline(transaction=False)
                announce(pipe, WORKER, "parallel", [], datetime.now(UTC))
                pipe.execute()

    first = threading.Thread(target=beat)
    first.start()
    assert inside.wait(10)
    leaving = threading.Thread(target=presence.leave)
    leaving.start()
    leaving.join(0.2)
    assert leaving.is_alive()  # the goodbye waits for the beat under way
    release.set()
    first.join(10)
    leaving.join(10)
    assert not leaving.is_alive()
    beat()  # a beat after the goodbye
    assert beats == [True, False]
    assert client.keys("rivers:worker:*") == [] and Worker.all(connection=client) == []


def test_lua_times_are_written_as_rq_time_writes_them(client: Any) -> None:
    """rq_iso (Lua, from Redis's TIME) against Python's own formatting, across leap years and century rules."""
    import random

    draw = random.Random(7)
    moments = [(0, 0), (951782400, 0), (951868799, 999999), (4107542400, 0), (4107628799, 1), (1709164800, 500000),
               (1764633600, 123456), (253402300799, 999999),
               *((draw.randrange(0, 4_000_000_000), draw.randrange(1_000_000)) for _ in range(300))]
    script = rq_view.LUA_FUNCTIONS + "return rq_iso(tonumber(ARGV[1]), tonumber(ARGV[2]))"
    for seconds, micros in moments:
        expected = rq_view.rq_time(datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros))
        assert client.eval(script, 0, seconds, micros).decode() == expected

    clock = rq_view.LUA_FUNCTIONS + "local now, iso = rq_clock() return {now, iso}"
    before = time.time()
    now, iso = client.eval(clock, 0)
    after = time.time()
    assert before - 0.001 <= float(now) <= after + 0.001  # Redis and this process read one clock
    assert abs(datetime.strptime(iso.decode(), rq_view.TIME_FORMAT).replace(tzinfo=UTC).timestamp()
               - float(now)) < 1e-6
