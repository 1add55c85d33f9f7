"""A job armed on its upstream's attempt (queues/armed.py) is enqueued by that attempt's successful report, in the
same atomic step, and by nothing else: a failed, stale or replayed report, a run taken over, an upstream that ended
without reporting all leave it unrun. Real Redis, the real scripts and the hub's bookkeeping."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import pytest

import rivers as rs
from rivers.distributed.fence import LeaseHolder
from rivers.distributed.jobs import decode_job, fields_of, job_data, job_fields
from rivers.distributed.worker import TAKE_SCRIPT
from rivers.executors.pool import ProcessPool
from rivers.executors.pool_process import REPORTED, STALE, AttemptOwner, ClaimedJob, NextJob, PoolResult
from rivers.queues import keys
from rivers.queues.armed import ARM_SCRIPT, DISARM_SCRIPT, armed_fields
from rivers.queues.base import StepRequest
from rivers.queues.redis import RedisHub, _Pending
from rivers.results import StepResult
from rivers.runtime import Fence, StepCall
from tests.redis_server import RedisServer, wait_for
from tests.unit.plans import parallel_plan

WORKER = "host.1.abc"
RUN = "r1"
REPLY_TO = keys.results_key(RUN)
QUEUE = keys.queue_key("parallel")


def take(client: Any, most: int = 1) -> list[bytes]:
    return client.eval(TAKE_SCRIPT, 0, WORKER, 5000, keys.hand_key(WORKER), "rivers:parallel", QUEUE, most)


def started_upstream(client: Any, job_id: str = "up") -> None:
    """An upstream job queued and claimed by WORKER, as a TAKE leaves it."""
    client.hset(keys.job_key(job_id), mapping=job_fields(job_id, "{}", REPLY_TO, "rivers:parallel", "r1 up", None))
    client.rpush(QUEUE, job_id)
    assert take(client)[0] == job_id.encode()


def arm(client: Any, job_id: str = "down", upstream: str = "up", token: str = "") -> int:
    job = job_data(job_id, '{"step": "down"}', REPLY_TO, None)
    fields = armed_fields(fields_of(job, "rivers:parallel", f"{RUN} {job_id}"), upstream, keys.run_key(RUN), token,
                          job_id)  # its step key is its id
    return client.eval(ARM_SCRIPT, 0, upstream, keys.run_reports_key(RUN), job_id,
                       *(item for pair in fields.items() for item in pair))


def report(server: RedisServer, failure: str = "", worker: str = WORKER) -> str:
    result = StepResult(run_id=RUN, step_key="up", attempt=1, status="failed" if failure else "succeeded", outputs=[])
    holder = LeaseHolder(server.url, worker, "rivers:parallel", None)
    return holder.report("up", REPLY_TO, PoolResult(result.model_dump_json(), failure))


def status(client: Any, job_id: str) -> bytes | None:
    return client.hget(keys.job_key(job_id), keys.JOB_STATUS)


def test_an_armed_job_waits_deferred_and_no_worker_takes_it(server: RedisServer, client: Any) -> None:
    started_upstream(client)
    assert arm(client) == 1
    assert status(client, "down") == keys.DEFERRED.encode()
    assert client.lrange(keys.after_key("up"), 0, -1) == [b"down"]
    assert client.ttl(keys.job_key("down")) > 0 and client.ttl(keys.after_key("up")) > 0
    assert not client.exists(QUEUE)
    client.rpush(QUEUE, "down")  # pushed by hand (an attacker's replay): a take claims only a queued job
    assert take(client) == []
    assert not client.exists(keys.lease_key("down"))


def test_the_upstreams_successful_report_enqueues_it_in_the_same_step(server: RedisServer, client: Any) -> None:
    started_upstream(client)
    arm(client)
    assert report(server) == REPORTED
    assert client.lrange(QUEUE, 0, -1) == [b"down"]
    assert status(client, "down") == keys.QUEUED.encode()
    assert client.hget(keys.run_jobs_key(RUN), "down") == b"down"  # a coordinator taking the run over finds it
    assert not client.exists(keys.after_key("up"))
    claimed = take(client)
    assert claimed[0] == b"down"
    assert decode_job("down", claimed[1], None, None).spec_json == '{"step": "down"}'  # the armed bytes, as built


@pytest.mark.parametrize("how", ["failed", "stale", "taken over"])
def test_any_other_report_never_enqueues_it(server: RedisServer, client: Any, how: str) -> None:
    started_upstream(client)
    client.hset(keys.run_key(RUN), keys.RUN_TOKEN, "1")
    arm(client, token="1")
    if how == "failed":
        assert report(server, failure="ValueError: boom") == REPORTED
    elif how == "stale":  # the lease is another worker's now (this one was paused past it): refused, nothing moves
        assert report(server, worker="other.2.def") == STALE
        assert status(client, "down") == keys.DEFERRED.encode()
    else:  # another coordinator took the run over: what the old one armed is not its decision
        client.hincrby(keys.run_key(RUN), keys.RUN_TOKEN, 1)
        assert report(server) == REPORTED
    assert not client.exists(QUEUE)
    if how != "stale":
        assert not client.exists(keys.job_key("down")) and not client.exists(keys.after_key("up"))
    assert report(server) in (REPORTED, STALE)  # a replayed report of the same attempt: still nothing
    assert client.lrange(QUEUE, 0, -1) in ([], [b"down"] if how == "stale" else [])


def test_arming_is_refused_once_the_upstream_reported_or_ended(server: RedisServer, client: Any) -> None:
    started_upstream(client)
    report(server)
    assert arm(client) == 0
    assert not client.exists(keys.job_key("down")) and not client.exists(keys.after_key("up"))
    assert arm(client, upstream="never-sent") == 0
    assert not client.exists(keys.job_key("down"))


def test_disarm_takes_back_a_deferred_or_queued_job_but_not_a_claimed_one(server: RedisServer, client: Any) -> None:
    started_upstream(client)
    arm(client, "d1")
    arm(client, "d2")
    client.eval(DISARM_SCRIPT, 0, "up", "d1", QUEUE)
    assert not client.exists(keys.job_key("d1"))
    assert client.lrange(keys.after_key("up"), 0, -1) == [b"d2"]
    report(server)  # d2 is enqueued, then claimed: it runs, and disarming it no longer can stop it
    assert take(client)[0] == b"d2"
    client.eval(DISARM_SCRIPT, 0, "up", "d2", QUEUE)
    assert status(client, "d2") == keys.STARTED.encode()


# -- the hub: what the coordinator's process knows of armed jobs ---------------------------------------------
class Reports:
    def __init__(self) -> None:
        self.results: list[StepResult] = []

    def __call__(self, result: StepResult) -> None:
        self.results.append(result)


@rs.Asset
def up() -> int:
    return 1


@rs.Asset
def down(up: int) -> int:
    return up


PLAN = parallel_plan([up, down])


def request_for(step_key: str, attempt: int = 1) -> tuple[StepRequest, Reports]:
    step = PLAN.steps[step_key]
    call = StepCall(run_id=RUN, step_key=step_key, attempt=attempt, definition=step.node.definition, params=[],
                    outputs=[step.node.outputs[name] for name in step.outputs], resources={})
    reports = Reports()
    return StepRequest(step, call, reports), reports


@pytest.fixture
def hub(server: RedisServer, client: Any) -> RedisHub:
    return RedisHub(server.url)


def sent_upstream(hub: RedisHub, client: Any) -> tuple[_Pending, Reports]:
    request, reports = request_for("up")
    job = job_data("up", "{}", REPLY_TO, None)
    pending = _Pending(request, "parallel", "up", job)
    hub.submit(pending)
    hub.flush()
    assert take(client)[0] == b"up"
    return pending, reports


def test_a_released_job_reports_to_its_step_even_before_its_dispatch(hub: RedisHub, server: RedisServer,
                                                                      client: Any) -> None:
    _, up_reports = sent_upstream(hub, client)
    down_job = job_data("down", "{}", REPLY_TO, None)
    assert hub.arm((RUN, "down", 1), "parallel", down_job, ("up", 1))
    assert report(server) == REPORTED
    wait_for(lambda: up_reports.results, 10, message="the upstream's report")
    assert take(client)[0] == b"down"  # released by the report and run at once, before this process dispatched it
    done = StepResult(run_id=RUN, step_key="down", attempt=1, status="succeeded", outputs=[])
    LeaseHolder(server.url, WORKER, "rivers:parallel", None).report("down", REPLY_TO,
                                                                     PoolResult(done.model_dump_json(), ""))
    wait_for(lambda: not client.exists(REPLY_TO), 10, message="the listener to take the early report")
    request, down_reports = request_for("down")
    assert hub.confirm(request)  # the dispatch: the report kept for it is delivered now (or, if the listener had
    # popped it but not handed it over yet, as soon as it does: the step is pending by then)
    wait_for(lambda: down_reports.results, 10, message="the early report to reach its step")
    assert [r.status for r in down_reports.results] == ["succeeded"]
    assert not hub.armed and "down" not in hub.pending


def test_an_upstream_lost_without_a_report_disarms_and_the_step_is_sent_anew(hub: RedisHub, server: RedisServer,
                                                                             client: Any) -> None:
    from rivers.exceptions import WorkerLost

    _, up_reports = sent_upstream(hub, client)
    assert hub.arm((RUN, "down", 1), "parallel", job_data("down", "{}", REPLY_TO, None), ("up", 1))
    hub.fail("up", WorkerLost("gone"), True)  # what the watcher does once the lease is gone
    assert up_reports.results[0].status == "failed"
    assert not client.exists(keys.job_key("down")) and not client.exists(keys.after_key("up"))
    request, _ = request_for("down")
    assert not hub.confirm(request)  # nothing armed in Redis: the queue sends a new job
    report(server)  # the lost attempt's worker comes back and reports late: nothing to release
    assert not client.exists(QUEUE)


def test_arming_on_an_attempt_that_is_not_this_hubs_running_one_is_refused(hub: RedisHub, client: Any) -> None:
    sent_upstream(hub, client)
    job = job_data("down", "{}", REPLY_TO, None)
    assert not hub.arm((RUN, "down", 1), "parallel", job, ("up", 2))  # another attempt
    assert not hub.arm((RUN, "down", 1), "parallel", job, ("nosuch", 1))
    assert not client.exists(keys.job_key("down")) and not hub.armed


# -- the step process that reported goes on with the job its report released ---------------------------------
def report_and_take(server: RedisServer, key: bytes | None = None) -> PoolResult:
    result = StepResult(run_id=RUN, step_key="up", attempt=1, status="succeeded", outputs=[])
    holder = LeaseHolder(server.url, WORKER, "rivers:parallel", key)
    return holder.report_and_take("up", REPLY_TO, PoolResult(result.model_dump_json(), ""))


def test_the_report_claims_the_released_job_for_the_process_that_reported(server: RedisServer,
                                                                          client: Any) -> None:
    started_upstream(client)
    arm(client, "d1")
    arm(client, "d2")
    reported = report_and_take(server)
    assert reported.reported == REPORTED
    assert reported.next == NextJob("d1", '{"step": "down"}', REPLY_TO)  # the first one, run next in that process
    assert client.get(keys.lease_key("d1")) == WORKER.encode()  # claimed for its worker, as a take claims
    assert status(client, "d1") == keys.STARTED.encode()
    assert client.hget(keys.run_jobs_key(RUN), "d1") == b"d1"
    assert client.lrange(QUEUE, 0, -1) == [b"d2"]  # one per report: the other goes to the queue, for any worker


def test_nothing_is_claimed_for_a_stopping_worker_or_from_another_queue(server: RedisServer, client: Any) -> None:
    started_upstream(client)
    job = job_data("other", "{}", REPLY_TO, None)
    fields = armed_fields(fields_of(job, "rivers:gpu", f"{RUN} other"), "up", keys.run_key(RUN), "", "other")
    client.eval(ARM_SCRIPT, 0, "up", keys.run_reports_key(RUN), "other", *(i for pair in fields.items() for i in pair))
    arm(client, "d1")
    client.set(keys.stopping_key(WORKER), "1")  # its first SIGTERM: it takes nothing new
    reported = report_and_take(server)
    assert reported.reported == REPORTED and reported.next is None and reported.claimed is None
    assert client.lrange(QUEUE, 0, -1) == [b"d1"]
    assert client.lrange(keys.queue_key("gpu"), 0, -1) == [b"other"]
    assert not client.exists(keys.lease_key("d1"))


def test_a_claimed_job_that_does_not_verify_is_handed_to_the_worker_unrun(server: RedisServer,
                                                                          client: Any) -> None:
    """Signed under another secret: the step process neither runs nor parses it; its worker refuses it."""
    started_upstream(client)
    forged = job_data("d1", '{"step": "down"}', REPLY_TO, b"another secret")
    fields = armed_fields(fields_of(forged, "rivers:parallel", f"{RUN} down"), "up", keys.run_key(RUN), "", "down")
    client.eval(ARM_SCRIPT, 0, "up", keys.run_reports_key(RUN), "d1", *(i for pair in fields.items() for i in pair))
    reported = report_and_take(server, key=b"our secret")
    assert reported.next is None
    assert reported.claimed == ClaimedJob("d1", forged.data, forged.signature.encode())


class Continuing(AttemptOwner):
    """In the pool's own process: t1's report claims t2 (the spec is unreadable: t2 fails at once, and is reported)."""

    def fence(self, ticket: str, step_key: str) -> Fence:
        return lambda output: None

    def report(self, ticket: str, route: str, result: PoolResult) -> str:
        return REPORTED

    def report_and_take(self, ticket: str, route: str, result: PoolResult) -> PoolResult:
        following = NextJob("t2", "not a spec either", REPLY_TO) if ticket == "t1" else None
        return dataclasses.replace(result, reported=REPORTED, next=following)


def test_the_pool_follows_a_process_onto_the_job_its_report_claimed() -> None:
    started: list[str] = []
    pool = ProcessPool(2, Continuing(), on_start=started.append)
    got: dict[str, PoolResult] = {}
    done = threading.Event()

    def reply(ticket: str, result: PoolResult) -> None:
        got[ticket] = result
        if ticket == "t2":
            done.set()

    try:
        pool.submit("t1", "not a spec", reply, route=REPLY_TO)
        assert done.wait(60)  # t2 was never submitted: its result comes to t1's reply, from the same process
        assert got["t1"].next == NextJob("t2", "not a spec either", REPLY_TO)
        assert got["t2"].reported == REPORTED and got["t2"].failure.startswith("UnreadableSpec")
        assert started == ["t1", "t2"]
        with pool._lock:
            assert all(slot.task is None for slot in pool._state.slots)
            assert sorted(slot.finished for slot in pool._state.slots) == [0, 2]
    finally:
        pool.shutdown()
