"""Runs submitted to rivers-coordinator: their records in Redis, and the RunHandle users wait on.

A run record is a hash (status, request, result, owner); its steps' final results, the job id of each
step's latest attempt and its events live beside it (keys.py). The coordinator that owns a run holds a
lease on it; a run whose lease expired is taken over by another coordinator (daemon.py).

Redis stays bounded: a run's id is in the active set (keys.RUNS_ACTIVE) from its submission to its end,
and its end (one MULTI with the final record) sets every key of the run to expire RUN_RETENTION_S later
and trims the runs index (keys.RUNS) of runs submitted longer ago than that.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from rivers import defaults
from rivers.distributed.connection import check_reachable, connect, redis_url
from rivers.exceptions import ConfigurationError, ExecutionError
from rivers.queues import keys
from rivers.results import RunResult, StepResult

FINAL = ("succeeded", "failed", "cancelled")
# Flag a run as cancelled only while it has not ended: an HSET on an expired record would recreate it forever.
_CANCEL = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
for _, final in ipairs(ARGV) do if status == final then return 0 end end
redis.call('HSET', KEYS[1], 'cancel', '1')
return 1
"""


@dataclass
class SubmittedRun:
    """What `repo.submit(...)` asks for; the coordinator's repository decides the rest."""

    run_id: str
    selection: list[str] | None = None
    tags: Any = None
    config: dict[str, Any] | None = None
    include_upstream: bool = False
    retry: str | None = None
    job: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> SubmittedRun:
        return cls(**json.loads(text))


def submit(request: SubmittedRun, url: str | None = None) -> RunHandle:
    """Record the run and wake a coordinator."""
    url = redis_url(url)
    if url is None:
        raise ConfigurationError(f"submitting a run needs {defaults.REDIS_URL_ENV} (the coordinator's Redis)")
    check_reachable(url)
    client = connect(url)
    now = time.time()
    pipe = client.pipeline(transaction=True)
    pipe.hset(keys.run_key(request.run_id), mapping={"status": "queued", "request": request.to_json(),
                                                     "created_at": now, "updated_at": now})
    pipe.zadd(keys.RUNS, {request.run_id: now})
    pipe.sadd(keys.RUNS_ACTIVE, request.run_id)
    pipe.rpush(keys.SUBMITTED, request.run_id)
    pipe.execute()
    return RunHandle(request.run_id, client)


def new_run_id() -> str:
    return str(uuid.uuid4())


def end_run(pipe: Any, run_id: str, record: dict[str, Any]) -> None:
    """Queue on `pipe` (a MULTI) the end of a run: its final record, the wake-up of `RunHandle.wait`, and
    what keeps Redis bounded (out of the active set, every key expiring, the index trimmed)."""
    now = time.time()
    pipe.hset(keys.run_key(run_id), mapping={**record, "updated_at": now})
    pipe.rpush(keys.run_done_key(run_id), "1")
    pipe.delete(keys.run_owner_key(run_id))
    pipe.srem(keys.RUNS_ACTIVE, run_id)
    retention_ms = max(1, int(defaults.RUN_RETENTION_S * 1000))
    for key in keys.run_keys(run_id):  # EXPIRE on a key the run did not create is a no-op
        pipe.pexpire(key, retention_ms)
    trim_index(pipe, now)


def trim_index(client: Any, now: float | None = None) -> None:
    """Drop from the runs index the runs submitted more than RUN_RETENTION_S ago (their keys expire)."""
    oldest = (time.time() if now is None else now) - defaults.RUN_RETENTION_S
    client.zremrangebyscore(keys.RUNS, "-inf", f"({oldest}")


class RunHandle:
    """A run submitted to the coordinator."""

    def __init__(self, run_id: str, client: Any) -> None:
        self.run_id = run_id
        self._client = client

    def __repr__(self) -> str:
        return f"RunHandle(run_id={self.run_id!r}, status={self.status!r})"

    @property
    def status(self) -> str:
        """queued | running | succeeded | failed | cancelled"""
        status = self._client.hget(keys.run_key(self.run_id), "status")
        return status.decode() if status else "unknown"

    def wait(self, timeout: float | None = None) -> RunResult:
        """Block until the run ends; TimeoutError after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.status not in FINAL:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"run {self.run_id} did not finish within {timeout:g} s")
            block = defaults.WORKER_BLOCK_S if left is None else max(0.01, min(left, defaults.WORKER_BLOCK_S))
            self._client.blpop([keys.run_done_key(self.run_id)], timeout=block)
        return load_result(self._client, self.run_id)

    def cancel(self) -> None:
        """Ask the coordinator to stop the run: nothing new starts, running steps fail as cancelled.

        A run that already ended, or whose record expired, is left as it is.
        """
        self._client.eval(_CANCEL, 1, keys.run_key(self.run_id), *FINAL)


def load_result(client: Any, run_id: str) -> RunResult:
    record = client.hgetall(keys.run_key(run_id))
    if b"result" not in record:
        raise ExecutionError(f"run {run_id} has no result: {record.get(b'status', b'unknown').decode()}")
    data = json.loads(record[b"result"])
    steps = {key.decode(): StepResult.model_validate_json(value)
             for key, value in client.hgetall(keys.run_steps_key(run_id)).items()}
    return RunResult(success=data["success"], run_id=run_id, materialized_assets=data["materialized_assets"],
                     failed_assets=[tuple(item) for item in data["failed_assets"]], step_results=steps)


def list_runs(client: Any, limit: int = 50) -> list[dict[str, str]]:
    """The latest runs, newest first: run id, status, created_at."""
    run_ids = [r.decode() for r in client.zrevrange(keys.RUNS, 0, limit - 1)]
    pipe = client.pipeline(transaction=False)
    for run_id in run_ids:
        pipe.hmget(keys.run_key(run_id), "status", "created_at", "owner")
    rows = []
    for run_id, (status, created, owner) in zip(run_ids, pipe.execute(), strict=True):
        if status is None:
            continue  # its record expired before the index was trimmed
        rows.append({"run_id": run_id, "status": (status or b"?").decode(),
                     "created_at": (created or b"0").decode(), "owner": (owner or b"").decode()})
    return rows


def events(client: Any, run_id: str) -> list[dict[str, Any]]:
    return [json.loads(item) for item in client.lrange(keys.run_events_key(run_id), 0, -1)]
