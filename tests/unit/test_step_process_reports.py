"""A worker's step process reports its own attempt (fence.LeaseHolder), fenced by the worker's lease; the worker
hears of it through its pool and never hands back, kills or reports again an attempt that was reported."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from rivers.distributed.fence import LeaseHolder
from rivers.distributed.jobs import StepJob, decode_report, job_fields
from rivers.distributed.worker import RELEASE_SCRIPT, TAKE_SCRIPT, Worker
from rivers.executors.pool import ProcessPool
from rivers.executors.pool_process import REPORTED, STALE, AttemptOwner, PoolResult
from rivers.queues import keys, rq_view
from rivers.results import StepResult
from rivers.runtime import Fence
from tests.redis_server import RedisServer

WORKER = "host.1.abc"
RUN = "r1"
REPLY_TO = keys.results_key(RUN)


def claimed_job(client: Any, job_id: str) -> None:
    """A job queued and claimed by WORKER (lease held), as its TAKE leaves it."""
    client.hset(keys.job_key(job_id), mapping=job_fields(job_id, "{}", REPLY_TO, "rivers:parallel", "r s", None))
    client.rpush(keys.queue_key("parallel"), job_id)
    client.eval(TAKE_SCRIPT, 0, WORKER, 5000, keys.hand_key(WORKER), "rivers:parallel", keys.queue_key("parallel"), 1)
    assert client.get(keys.lease_key(job_id)) == WORKER.encode()


def a_result(step: str = "s") -> PoolResult:
    result = StepResult(run_id=RUN, step_key=step, attempt=1, status="succeeded", outputs=[])
    return PoolResult(result.model_dump_json(), "")


def test_the_holder_reports_once_while_it_holds_the_lease(server: RedisServer, client: Any) -> None:
    claimed_job(client, "j1")
    holder = LeaseHolder(server.url, WORKER, "rivers:parallel", b"secret")
    assert holder.report("j1", REPLY_TO, a_result()) == REPORTED
    (message,) = client.lrange(REPLY_TO, 0, -1)
    job_id, result_json = decode_report(message, b"secret")  # signed with the worker's key
    assert job_id == "j1" and StepResult.model_validate_json(result_json).status == "succeeded"
    assert client.hget(keys.run_reports_key(RUN), "j1") == message
    assert not client.exists(keys.lease_key("j1"))
    assert client.hget(keys.job_key("j1"), keys.JOB_STATUS) == keys.FINISHED.encode()
    # reported once: the same attempt again (a replay) finds no lease and is stale, nothing pushed
    assert holder.report("j1", REPLY_TO, a_result()) == STALE
    assert client.llen(REPLY_TO) == 1


def test_a_lease_held_by_another_worker_is_stale(server: RedisServer, client: Any) -> None:
    claimed_job(client, "j1")
    assert LeaseHolder(server.url, "other.2.def", "rivers:parallel", None).report("j1", REPLY_TO, a_result()) == STALE
    assert not client.exists(REPLY_TO)
    assert client.get(keys.lease_key("j1")) == WORKER.encode()


def test_a_reported_job_is_not_handed_back(server: RedisServer, client: Any) -> None:
    """A second SIGTERM hands back what its steps have not reported: one its step process reported meanwhile is
    not queued again (it would run twice)."""
    claimed_job(client, "done")
    claimed_job(client, "running")
    LeaseHolder(server.url, WORKER, "rivers:parallel", None).report("done", REPLY_TO, a_result())
    client.eval(RELEASE_SCRIPT, 0, WORKER, rq_view.rq_time(), 0, "rivers:parallel", "", "", "done", "running")
    assert client.lrange(keys.queue_key("parallel"), 0, -1) == [b"running"]
    assert client.hget(keys.job_key("done"), keys.JOB_STATUS) == keys.FINISHED.encode()
    assert client.hget(keys.job_key("running"), keys.JOB_STATUS) == keys.QUEUED.encode()
    assert not client.exists(keys.lease_key("running"))


def test_a_job_whose_lease_another_holds_is_neither_handed_back_nor_failed(server: RedisServer, client: Any) -> None:
    claimed_job(client, "j1")
    for reason in ("", "refused"):
        client.eval(RELEASE_SCRIPT, 0, "other.2.def", rq_view.rq_time(), 0, "rivers:parallel", reason, reason, "j1")
    assert client.hget(keys.job_key("j1"), keys.JOB_STATUS) == b"started"
    assert client.get(keys.lease_key("j1")) == WORKER.encode()


def held(worker: Worker, *ids: str) -> None:
    worker._held = {job_id: StepJob(job_id, "{}", REPLY_TO) for job_id in ids}


def test_a_beat_does_not_take_a_reported_attempt_for_lost(server: RedisServer, client: Any) -> None:
    """The step process reported (the lease ended with the report) and its result is still on its way through the
    pool's pipe: the heartbeat leaves the attempt alone. One whose lease is gone unreported is lost."""
    worker = Worker(server.url, name=WORKER)
    worker.client = server.client()
    for job_id in ("reported", "lost", "running"):
        claimed_job(client, job_id)
    LeaseHolder(server.url, WORKER, "rivers:parallel", None).report("reported", REPLY_TO, a_result())
    client.delete(keys.lease_key("lost"))
    held(worker, "reported", "lost", "running")
    worker._beat_once()
    assert set(worker._held) == {"reported", "running"}
    assert client.pttl(keys.lease_key("running")) > 0


class Owner(AttemptOwner):
    """A stand-in for a worker's leases, in the pool's own processes: `answer` is what its report finds."""

    def __init__(self, answer: str | None) -> None:
        self.answer = answer

    def fence(self, ticket: str, step_key: str) -> Fence:
        return lambda output: None

    def report(self, ticket: str, route: str, result: PoolResult) -> str:
        if self.answer is None:
            raise ConnectionError("Redis is unreachable")
        return self.answer


@pytest.mark.parametrize(("answer", "marked"), [(REPORTED, REPORTED), (STALE, STALE), (None, "")])
def test_the_pool_marks_what_its_process_reported(answer: str | None, marked: str) -> None:
    """Reported or stale: the worker only forgets the attempt; unreachable Redis: unmarked, the worker sends it."""
    pool = ProcessPool(1, Owner(answer))
    got: list[PoolResult] = []
    done = threading.Event()
    try:
        pool.submit("t1", "not a spec", lambda ticket, result: (got.append(result), done.set()), route=REPLY_TO)
        assert done.wait(60)
        assert got[0].reported == marked
        assert got[0].failure.startswith("UnreadableSpec")  # the step failed: its result is reported all the same
        done.clear()
        pool.submit("t2", "not a spec", lambda ticket, result: (got.append(result), done.set()))
        assert done.wait(60)
        assert got[1].reported == ""  # no route: nothing is reported from the process
    finally:
        pool.shutdown()


class SlowOwner(Owner):
    """Reports a ticket only once the file `<gate>/<ticket>` exists (or 30 s passed)."""

    def __init__(self, gate: str) -> None:
        super().__init__(REPORTED)
        self.gate = gate

    def report(self, ticket: str, route: str, result: PoolResult) -> str:
        import os
        import time

        deadline = time.monotonic() + 30
        while not os.path.exists(os.path.join(self.gate, ticket)) and time.monotonic() < deadline:
            time.sleep(0.01)
        return REPORTED


def test_with_tickets_waiting_the_owner_reports_them_in_batches(tmp_path: Any) -> None:
    """A step process reports its attempt itself only when no other ticket waits for the pool: with work queued,
    it hands the result back unreported at once (the worker batches those) instead of waiting on Redis."""
    pool = ProcessPool(1, SlowOwner(str(tmp_path)))
    got: dict[str, PoolResult] = {}
    done = threading.Event()

    def reply(ticket: str, result: PoolResult) -> None:
        got[ticket] = result
        if len(got) == 3:
            done.set()

    try:
        pool.submit("t1", "not a spec", reply, route=REPLY_TO)  # nothing waits: reported by its process
        pool.submit("t2", "not a spec", reply, route=REPLY_TO)  # t3 waits behind it: handed back unreported
        pool.submit("t3", "not a spec", reply, route=REPLY_TO)  # the last: reported by its process
        for ticket in ("t1", "t3"):
            (tmp_path / ticket).touch()
        assert done.wait(60)
        assert {ticket: result.reported for ticket, result in got.items()} == {"t1": REPORTED, "t2": "",
                                                                               "t3": REPORTED}
    finally:
        pool.shutdown()


def test_with_another_step_running_the_owner_reports_it(tmp_path: Any) -> None:
    """Two processes: a step that runs beside another is handed back unreported (its owner batches the reports
    of a busy pool); alone, a step is reported by its process."""
    pool = ProcessPool(2, SlowOwner(str(tmp_path)))
    got: dict[str, PoolResult] = {}
    done = {ticket: threading.Event() for ticket in ("t1", "t2", "t3")}

    def reply(ticket: str, result: PoolResult) -> None:
        got[ticket] = result
        done[ticket].set()

    try:
        pool.submit("t1", "not a spec", reply, route=REPLY_TO)  # alone: its process reports it (held at the gate)
        pool.submit("t2", "not a spec", reply, route=REPLY_TO)  # beside t1's busy process: handed back
        assert done["t2"].wait(60)
        (tmp_path / "t1").touch()
        assert done["t1"].wait(60)
        (tmp_path / "t3").touch()
        pool.submit("t3", "not a spec", reply, route=REPLY_TO)  # alone again
        assert done["t3"].wait(60)
        assert {ticket: result.reported for ticket, result in got.items()} == {"t1": REPORTED, "t2": "",
                                                                               "t3": REPORTED}
    finally:
        pool.shutdown()
