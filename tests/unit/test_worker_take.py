"""The worker's one-round-trip take: BLMOVE to its hand, then TAKE_SCRIPT claims the hand and more from the queue."""

from __future__ import annotations

import time
from typing import Any

from rivers.distributed.jobs import job_fields
from rivers.distributed.worker import TAKE_SCRIPT
from rivers.queues import keys
from rivers.queues.redis import RESCUE_SCRIPT

WORKER = "host.1.abc"


def enqueue(client: Any, *ids: str) -> None:
    for job_id in ids:
        client.hset(keys.job_key(job_id), mapping=job_fields(job_id, "{}", "rivers:run:r:results", "rivers:parallel",
                                                             "r step", None))
        client.rpush(keys.queue_key("parallel"), job_id)


def take(client: Any, most: int, block: float = 0.01) -> tuple[Any, list[str]]:
    pipe = client.pipeline(transaction=False)
    pipe.blmove(keys.queue_key("parallel"), keys.hand_key(WORKER), block, "LEFT", "RIGHT")
    pipe.eval(TAKE_SCRIPT, 0, WORKER, 5000, keys.hand_key(WORKER), "rivers:parallel", keys.queue_key("parallel"), most)
    moved, claimed = pipe.execute()
    return moved, [claimed[i].decode() for i in range(0, len(claimed), 3)]


def test_take_claims_what_it_moved_then_more_up_to_most(client: Any) -> None:
    enqueue(client, "a", "b", "c", "d")
    before = time.time()
    moved, claimed = take(client, 3)
    assert (moved, claimed) == (b"a", ["a", "b", "c"])
    assert client.lrange(keys.queue_key("parallel"), 0, -1) == [b"d"]
    assert not client.exists(keys.hand_key(WORKER))  # the hand is empty once the take has run
    for job_id in claimed:
        assert client.get(keys.lease_key(job_id)) == WORKER.encode()
        assert client.hget(keys.job_key(job_id), keys.JOB_STATUS) == b"started"
    started = client.hget(keys.job_key("a"), "started_at").decode()
    assert started >= time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(before)))  # Redis's clock, at the claim


def test_nothing_queued_claims_nothing(client: Any) -> None:
    assert take(client, 2) == (None, [])


def test_a_hand_left_by_a_namesake_is_claimed_first(client: Any) -> None:
    """A worker killed between its BLMOVE and its take leaves the id in its hand: the next take of a worker of that
    name claims it first, whatever else it may take (here nothing more)."""
    enqueue(client, "left", "next")
    client.lmove(keys.queue_key("parallel"), keys.hand_key(WORKER), "LEFT", "RIGHT")
    claimed = client.eval(TAKE_SCRIPT, 0, WORKER, 5000, keys.hand_key(WORKER), "rivers:parallel",
                          keys.queue_key("parallel"), 0)
    assert claimed[0] == b"left" and len(claimed) == 3
    assert client.lrange(keys.queue_key("parallel"), 0, -1) == [b"next"]


def test_a_job_no_longer_queued_is_taken_but_not_claimed(client: Any) -> None:
    enqueue(client, "gone", "ok")
    client.delete(keys.job_key("gone"))  # cancelled meanwhile
    assert take(client, 2) == (b"gone", ["ok"])
    assert client.get(keys.lease_key("gone")) is None


def test_a_dead_workers_hand_goes_back_to_the_head_of_the_queue_in_order(client: Any) -> None:
    """A worker killed between its BLMOVE and its take (or whose take failed) leaves ids in its hand that never
    ran: the next heartbeat of any worker puts them back first in line, and the dead worker leaves the set.
    A live worker's hand is never touched."""
    enqueue(client, "a", "b", "c", "mine", "next")
    for _ in range(3):
        client.lmove(keys.queue_key("parallel"), keys.hand_key("dead.1.x"), "LEFT", "RIGHT")
    client.lmove(keys.queue_key("parallel"), keys.hand_key(WORKER), "LEFT", "RIGHT")
    client.sadd(keys.workers_key("parallel"), "dead.1.x", WORKER)
    client.set(keys.worker_key(WORKER), "parallel", px=5000)
    moved = client.eval(RESCUE_SCRIPT, 0, keys.workers_key("parallel"), keys.queue_key("parallel"))
    assert moved == 3
    assert client.lrange(keys.queue_key("parallel"), 0, -1) == [b"a", b"b", b"c", b"next"]
    assert client.lrange(keys.hand_key(WORKER), 0, -1) == [b"mine"]
    assert client.smembers(keys.workers_key("parallel")) == {WORKER.encode()}
    # rescued jobs are claimed like any other, once (after what the live worker holds in its own hand)
    _, claimed = take(client, 4)
    assert claimed == ["mine", "a", "b", "c"]
