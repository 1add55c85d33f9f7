"""Fenced run ownership (rivers/distributed/ownership.py) against a real redis-server: a stale token writes nothing."""

from __future__ import annotations

import json

import redis

from rivers.distributed.ownership import Ownership
from rivers.queues import keys
from tests.redis_server import RedisServer

RUN = "run-1"


def owners(server: RedisServer) -> tuple[redis.Redis, Ownership, Ownership]:
    client = server.client()
    client.flushdb()
    client.hset(keys.run_key(RUN), mapping={"status": "queued"})
    return client, Ownership(client, "coordinator-a"), Ownership(client, "coordinator-b")


def test_a_stale_token_is_fenced_out_and_writes_nothing(redis_server: RedisServer) -> None:
    client, a, b = owners(redis_server)
    token_a = a.take(RUN)
    assert token_a == 1
    assert b.take(RUN) is None  # the lease is held
    assert a.record(RUN, token_a, json.dumps({"event": "succeeded", "step": "x"}), "x", '{"ok": 1}')

    client.delete(keys.run_owner_key(RUN))  # a's lease lapses (a is paused) and b takes the run over
    token_b = b.take(RUN)
    assert token_b == 2
    assert client.hget(keys.run_key(RUN), "owner") == b"coordinator-b"

    events_before = client.llen(keys.run_events_key(RUN))
    assert not a.record(RUN, token_a, json.dumps({"event": "succeeded", "step": "y"}), "y", '{"stale": 1}')
    assert client.llen(keys.run_events_key(RUN)) == events_before
    assert client.hget(keys.run_steps_key(RUN), "y") is None
    assert b.record(RUN, token_b, json.dumps({"event": "succeeded", "step": "y"}), "y", '{"fresh": 1}')
    assert client.hget(keys.run_steps_key(RUN), "y") == b'{"fresh": 1}'


def test_renewing_keeps_a_lease_retakes_a_lapsed_one_and_reports_a_lost_one(redis_server: RedisServer) -> None:
    client, a, b = owners(redis_server)
    token_a = a.take(RUN)
    assert token_a is not None
    assert a.renew({RUN: token_a}) == []
    assert 0 < client.pttl(keys.run_owner_key(RUN))

    client.delete(keys.run_owner_key(RUN))  # lapsed, and nobody took the run: the token is still a's
    assert a.renew({RUN: token_a}) == []
    assert client.get(keys.run_owner_key(RUN)) == b"coordinator-a"

    client.delete(keys.run_owner_key(RUN))
    assert b.take(RUN) == token_a + 1
    assert a.renew({RUN: token_a}) == [RUN]  # lost: a stands down
    assert client.get(keys.run_owner_key(RUN)) == b"coordinator-b"  # and did not touch b's lease


def test_ending_a_run_is_fenced(redis_server: RedisServer) -> None:
    client, a, b = owners(redis_server)
    token_a = a.take(RUN)
    client.delete(keys.run_owner_key(RUN))
    token_b = b.take(RUN)
    assert token_a is not None and token_b is not None

    def held_by(ownership: Ownership, token: int) -> bool:
        seen: list[bool] = []

        def check(pipe: redis.client.Pipeline) -> None:
            seen.append(ownership.holds(pipe, RUN, token))
            pipe.multi()

        client.transaction(check, keys.run_key(RUN))
        return seen[-1]

    assert not held_by(a, token_a)
    assert held_by(b, token_b)
