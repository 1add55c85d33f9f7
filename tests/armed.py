"""What Redis holds of armed jobs (rivers/queues/armed.py), read the way the armed-job tests check it."""

from __future__ import annotations

from typing import Any

import redis

from rivers.queues import keys
from tests.conftest import Background
from tests.redis_server import wait_for


def armed_on(client: redis.Redis) -> dict[str, list[str]]:
    """Upstream job id -> the ids armed on it."""
    return {key.decode().removeprefix(keys.AFTER_PREFIX): [i.decode() for i in client.lrange(key, 0, -1)]
            for key in client.scan_iter(match=keys.AFTER_PREFIX + "*")}


def job_of(client: redis.Redis, step_key: str) -> dict[str, str]:
    """The job hash the run's jobs index names for a step (its latest attempt), as text, with its id."""
    (run_jobs,) = client.keys(keys.run_jobs_key("*"))
    job_id = client.hget(run_jobs, step_key)
    assert job_id is not None
    fields = {k.decode(): v.decode(errors="replace") for k, v in client.hgetall(keys.job_key(job_id.decode())).items()}
    return {**fields, "id": job_id.decode()}


def jobs_of(client: redis.Redis, step_key: str) -> list[dict[str, str]]:
    """Every job hash of one step still in Redis (one per attempt), as text."""
    found = []
    for key in client.scan_iter(match=keys.RQ_JOB_PREFIX + "*"):
        fields = {k.decode(): v.decode(errors="replace") for k, v in client.hgetall(key).items()}
        if fields.get(keys.JOB_STEP) == step_key:
            found.append(fields)
    return found


def run_until_armed(repo: Any, client: redis.Redis, upstream: str) -> Background:
    """Start `repo` in the background and return once `upstream` runs (it counts itself in the repo's scratch
    resource) and a downstream is armed on it."""
    run = Background(repo)
    wait_for(lambda: repo.resources["scratch"].lines(upstream), 60, message=f"the upstream {upstream} to start")
    wait_for(lambda: armed_on(client), 30, message=f"a downstream to be armed on {upstream}")
    return run
