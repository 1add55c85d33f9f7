"""Runs as `rivers runs` and `rivers run RUN_ID` show them, read from their records in Redis; and the record of an
embedded run (`repo.materialize` / `rivers materialize` with RIVERS_REDIS_URL set), so that it is listed too.

A run's events (keys.run_events_key) are JSON entries written as its steps move:

    {"event": "planned", "steps": [{"key", "outputs", "upstreams", "executor"}, ...]}  once, before any step
    {"event": "started", "step", "time"}                                            every attempt
    {"event": "succeeded" | "failed", "step", "time", "attempt", "duration_s", "worker", "pid",
     "error", "reason"}                                                              the step's final attempt
    {"event": "skipped", "step", "time"}
    {"event": "attempt_failed", ...as a final event}     rivers-coordinator: every failed attempt, retried or not

An embedded run's hash has kind=embedded: no coordinator takes it over, it is never in the active set.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from rivers import defaults
from rivers.logs import get_logger
from rivers.queues import keys

if TYPE_CHECKING:
    from rivers.definitions.repository import CodeRepository
    from rivers.plan import Step
    from rivers.results import RunResult, StepResult
    from rivers.run import RunRequest

STEP_STATES = ("succeeded", "failed", "skipped", "running", "pending")
EMBEDDED = "embedded"


# -- what a run's events say --------------------------------------------------------------------------------
class Tally:
    """The latest state of every step of a run, from its events in order."""

    def __init__(self) -> None:
        self.planned: list[dict[str, Any]] = []
        self.steps: dict[str, dict[str, Any]] = {}

    def add(self, entry: dict[str, Any]) -> None:
        event = entry.get("event")
        if event == "planned":
            self.planned.extend(entry.get("steps", []))
            for step in entry.get("steps", []):
                self.steps.setdefault(step["key"], {"step": step["key"], "status": "pending", "attempts": 0})
            return
        key = entry.get("step")
        if not key:
            return
        row = self.steps.setdefault(key, {"step": key, "status": "pending", "attempts": 0})
        if event == "started":
            row["attempts"] += 1
            row["status"] = "running"
            row["started_at"] = entry.get("time")
        elif event == "attempt_failed":
            row.setdefault("failures", []).append(
                {name: entry[name] for name in ("attempt", "reason", "error", "worker", "duration_s") if name in entry})
        elif event in ("succeeded", "failed", "skipped"):
            row["status"] = event
            row["ended_at"] = entry.get("time")
            for name in ("attempt", "duration_s", "worker", "pid", "error", "reason"):
                if name in entry:
                    row[name] = entry[name]
            if "attempt" in entry:
                row["attempts"] = entry["attempt"]

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STEP_STATES, 0)
        for row in self.steps.values():
            counts[row["status"]] += 1
        return {"total": len(self.steps), **counts}


def tally(client: Any, run_id: str) -> Tally:
    found = Tally()
    for item in client.lrange(keys.run_events_key(run_id), 0, -1):
        found.add(json.loads(item))
    return found


def step_entry(event: str, step: Step, result: StepResult | None, worker: str | None) -> dict[str, Any]:
    """The event JSON of one step transition (shared by rivers-coordinator and embedded runs)."""
    entry: dict[str, Any] = {"event": event, "step": step.key, "time": time.time()}
    if result is not None:
        entry.update(attempt=result.attempt, duration_s=round(result.duration_s, 6), pid=result.pid)
        if worker:
            entry["worker"] = worker
        if result.error is not None:
            entry.update(error=result.error.summary(), reason=result.error.reason)
    return entry


def planned_entry(steps: list[Step]) -> dict[str, Any]:
    return {"event": "planned", "time": time.time(), "steps": [
        {"key": s.key, "outputs": list(s.outputs), "upstreams": sorted(s.upstream_steps), "executor": s.executor}
        for s in steps]}


# The worker (or pod) that held the lease of each step's latest job, '' where unknown. KEYS[1]: the run's jobs
# hash; ARGV: step keys.
WORKERS_LUA = f"""
local found = {{}}
for i = 1, #ARGV do
  local id = redis.call('HGET', KEYS[1], ARGV[i])
  found[i] = id and (redis.call('HGET', '{keys.RQ_JOB_PREFIX}' .. id, '{keys.JOB_WORKER}') or '') or ''
end
return found
"""


def workers_of(client: Any, run_id: str, step_keys: list[str]) -> list[str | None]:
    """Who ran each step's latest job (a worker or a pod), while its job hash is kept: one round trip."""
    if not step_keys:
        return []
    found = client.eval(WORKERS_LUA, 1, keys.run_jobs_key(run_id), *step_keys)
    return [worker.decode() or None for worker in found]


def keep_attempt(client: Any, result: StepResult) -> None:
    """Keep a failed attempt's result (its logs) in the run's attempts hash."""
    pipe = client.pipeline(transaction=False)
    pipe.hset(keys.run_attempts_key(result.run_id), f"{result.step_key}#{result.attempt}", result.model_dump_json())
    pipe.pexpire(keys.run_attempts_key(result.run_id), max(1, int(defaults.RUN_RETENTION_S * 1000)))
    pipe.execute()


def worker_of(client: Any, run_id: str, step_key: str) -> str | None:
    """The worker (or pod) that held the lease of a step's latest job, while its job hash is kept."""
    return workers_of(client, run_id, [step_key])[0]


# -- reading runs -----------------------------------------------------------------------------------
def _text(record: dict[bytes, bytes], field: str) -> str | None:
    value = record.get(field.encode())
    return value.decode() if value is not None else None


def _number(record: dict[bytes, bytes], field: str) -> float | None:
    value = _text(record, field)
    return float(value) if value else None


def failure_reason(record: dict[bytes, bytes]) -> str | None:
    """Why a run did not succeed: the run's own error (it never started, nobody served it, it was cancelled),
    else its first failed asset and that asset's error."""
    error = _text(record, "error")
    if error:
        return error
    result = _text(record, "result")
    if result:
        failed = json.loads(result).get("failed_assets") or []
        if failed:
            name, message = failed[0]
            return f"{name}: {message}"
    return None


# An embedded run whose process is gone (its alive key expired) ends failed, once, whoever notices first.
# KEYS: the run's hash, its alive key; ARGV: error, now
LOST_LUA = f"""
if redis.call('HGET', KEYS[1], 'status') == 'running' and redis.call('HGET', KEYS[1], '{keys.RUN_KIND}') == '{EMBEDDED}'
    and redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('HSET', KEYS[1], 'status', 'failed', 'error', ARGV[1], 'ended_at', ARGV[2], 'updated_at', ARGV[2],
             '{keys.RUN_LOST_AT}', ARGV[2])
  return 1
end
return 0
"""


def settle_lost(client: Any, run_id: str, record: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """The record of a run, failed if it is an embedded run whose process stopped without ending it."""
    if record.get(b"status") != b"running" or record.get(keys.RUN_KIND.encode()) != EMBEDDED.encode():
        return record
    owner = _text(record, "owner") or "its process"
    error = f"the process that ran it ({owner}) stopped before the run ended"
    if client.eval(LOST_LUA, 2, keys.run_key(run_id), keys.run_alive_key(run_id), error, time.time()):
        return client.hgetall(keys.run_key(run_id))
    return record


def summary(client: Any, run_id: str, record: dict[bytes, bytes]) -> dict[str, Any]:
    """One run as `rivers runs --json` prints it."""
    record = settle_lost(client, run_id, record)
    status = _text(record, "status") or "unknown"
    counts_json = _text(record, "counts")
    counts = json.loads(counts_json) if counts_json else tally(client, run_id).counts()
    created, started, ended = (_number(record, f) for f in ("created_at", "started_at", "ended_at"))
    if status not in ("succeeded", "failed", "cancelled"):
        ended = None
    begin = started or created
    duration = None if begin is None else (ended or time.time()) - begin
    return {
        "run_id": run_id, "status": status, "repository": _text(record, keys.RUN_REPOSITORY),
        "kind": _text(record, keys.RUN_KIND) or "submitted", "created_at": created, "started_at": started,
        "ended_at": ended, "duration_s": None if duration is None else round(duration, 3), "steps": counts,
        "error": None if status == "succeeded" else failure_reason(record), "owner": _text(record, "owner"),
    }


def list_runs(client: Any, limit: int = 20, status: str | None = None) -> list[dict[str, Any]]:
    """The latest runs, newest first (only those with `status`, if given)."""
    found: list[dict[str, Any]] = []
    start, batch = 0, max(limit, 50)
    while len(found) < limit:
        run_ids = [r.decode() for r in client.zrevrange(keys.RUNS, start, start + batch - 1)]
        if not run_ids:
            break
        start += batch
        pipe = client.pipeline(transaction=False)
        for run_id in run_ids:
            pipe.hgetall(keys.run_key(run_id))
        for run_id, record in zip(run_ids, pipe.execute(), strict=True):
            record = settle_lost(client, run_id, record) if record else record
            if not record or (status is not None and record.get(b"status", b"").decode() != status):
                continue  # expired before the index was trimmed, or not asked for
            found.append(summary(client, run_id, record))
            if len(found) == limit:
                break
    return found


def run_detail(client: Any, run_id: str) -> dict[str, Any] | None:
    """One run and its steps (attempts, worker or pod, reason, duration), or None for an unknown run."""
    record = client.hgetall(keys.run_key(run_id))
    if not record:
        return None
    found = tally(client, run_id)
    order = {step["key"]: i for i, step in enumerate(found.planned)}
    steps = sorted(found.steps.values(), key=lambda row: (order.get(row["step"], len(order)), row["step"]))
    detail = summary(client, run_id, record)
    detail["steps"] = found.counts() if not _text(record, "counts") else detail["steps"]
    detail["step_runs"] = steps
    return detail


# -- embedded runs ------------------------------------------------------------------------------------
class EmbeddedRecord:
    """Records one embedded run in Redis as its steps move; never fails the run (Redis errors are logged).

    The run's thread only queues events: a writer thread sends them in batches (two round trips per batch,
    at most one batch per RECORD_LINGER_S until the run ends), so that recording never sits between a step's
    end and its downstream's start, nor wakes up at each of them. A batch Redis refused (Redis away) is kept and
    sent again with the next one, so a record catches up once Redis is back; the end is tried even if nothing
    else could be written.
    """

    def __init__(self, client: Any, run_id: str, owner: str) -> None:
        self.client = client
        self.run_id = run_id
        self.owner = owner
        self.tally = Tally()
        self._planned: list[Step] = []
        self._unsent: list[tuple[dict[str, Any], StepResult | None]] = []  # refused batches, sent with the next
        self._failing = False  # the last write failed (warned once per outage)
        self._queue: queue.SimpleQueue[tuple[dict[str, Any], StepResult | None] | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._ended = threading.Event()
        self._hurry = threading.Event()  # the run is ending: write what is queued now
        threading.Thread(target=self._alive_loop, name="rivers-run-alive", daemon=True).start()

    def _alive_loop(self) -> None:
        """Keep the run's alive key while this process runs it: `rivers runs` fails the run once it is gone."""
        while not self._ended.wait(defaults.HEARTBEAT_S):
            with contextlib.suppress(Exception):  # Redis restarting: the key lives EMBEDDED_ALIVE_MS meanwhile
                self.client.set(keys.run_alive_key(self.run_id), self.owner, px=defaults.EMBEDDED_ALIVE_MS)

    def __call__(self, event: str, step: Step, result: StepResult | None) -> None:
        if event == "planned":
            self._planned.append(step)
            return
        if self._planned:
            self._add(planned_entry(self._planned), None)
            self._planned = []
        self._add(step_entry(event, step, result, None), result)

    def _add(self, entry: dict[str, Any], result: StepResult | None) -> None:
        self.tally.add(entry)
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_loop, name="rivers-run-record", daemon=True)
            self._writer.start()
        self._queue.put((entry, result))

    def _write_loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            self._hurry.wait(defaults.RECORD_LINGER_S)
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            items = self._unsent + [item for item in batch if item is not None]
            if items:
                self._unsent = [] if self._safely(partial(self._write, items)) else items
            if None in batch:
                return

    def _write(self, items: list[tuple[dict[str, Any], StepResult | None]]) -> None:
        ended = [(entry, result) for entry, result in items if result is not None]
        workers = workers_of(self.client, self.run_id, [entry["step"] for entry, _ in ended])
        for (entry, result), worker in zip(ended, workers, strict=True):
            entry["worker"] = worker or f"local (pid {result.pid})"
        pipe = self.client.pipeline(transaction=True)  # all or nothing: a batch sent again is not doubled
        pipe.rpush(keys.run_events_key(self.run_id), *[json.dumps(entry) for entry, _ in items])
        retention_ms = max(1, int(defaults.RUN_RETENTION_S * 1000))  # bounded even if this process dies
        for entry, result in ended:
            if entry["event"] == "attempt_failed":  # retried: its logs stay readable
                pipe.hset(keys.run_attempts_key(self.run_id), f"{entry['step']}#{result.attempt}",
                          result.model_dump_json())
                pipe.pexpire(keys.run_attempts_key(self.run_id), retention_ms)
            else:
                pipe.hset(keys.run_steps_key(self.run_id), entry["step"], result.model_dump_json())
                pipe.pexpire(keys.run_steps_key(self.run_id), retention_ms)
        pipe.pexpire(keys.run_events_key(self.run_id), retention_ms)
        pipe.execute()

    def _drain(self) -> None:
        """Wait until every queued event is written (or Redis gave up on them)."""
        if self._writer is not None:
            self._queue.put(None)
            self._hurry.set()
            self._writer.join()
            self._writer = None

    def _safely(self, action: Callable[[], Any]) -> bool:
        """Run one write; False (and one warning per outage) when Redis refused it: the run goes on regardless."""
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - the run goes on; its record catches up when Redis is back
            if not self._failing:
                get_logger().warning("run.record_failed", run_id=self.run_id, error=repr(exc),
                                     unsent=len(self._unsent))
            self._failing = True
            return False
        if self._failing:
            get_logger().warning("run.record_resumed", run_id=self.run_id)
        self._failing = False
        return True

    def watch(self, execute: Callable[[], RunResult]) -> RunResult:
        """Run `execute` (the coordinator) and record how the run ended."""
        try:
            result = execute()
        except BaseException as exc:
            self._end({"status": "failed", "error": f"{type(exc).__name__}: {exc}"})
            raise
        failed = [[name, message] for name, message in result.failed_assets]
        self._end({"status": "succeeded" if result.success else "failed", "result": json.dumps(
            {"success": result.success, "materialized_assets": result.materialized_assets, "failed_assets": failed})})
        return result

    def _end(self, record: dict[str, Any]) -> None:
        from rivers.distributed.runs import end_run

        if self._planned:
            self._add(planned_entry(self._planned), None)
            self._planned = []
        self._drain()
        self._ended.set()

        def end() -> None:
            pipe = self.client.pipeline(transaction=True)
            pipe.hget(keys.run_key(self.run_id), keys.RUN_LOST_AT)
            if "error" not in record:  # the verdict of a run taken for lost meanwhile no longer holds
                pipe.hdel(keys.run_key(self.run_id), "error")
            end_run(pipe, self.run_id, {**record, "counts": json.dumps(self.tally.counts())})
            pipe.delete(keys.run_alive_key(self.run_id))
            lost_at = pipe.execute()[0]
            if lost_at is not None:  # this process was paused (or cut off) past its alive key, then came back
                get_logger().warning(
                    "run.declared_lost_meanwhile", run_id=self.run_id, status=record["status"],
                    reason="this process stopped renewing the run's alive key for a while and the run was listed "
                           "as failed; the run did finish here, and its record now says how")

        def catch_up_and_end() -> None:
            if self._unsent:  # what an outage kept back, then the end
                self._write(self._unsent)
                self._unsent = []
            end()

        self._failing = False  # tried even after failed writes: a run left "running" forever would mislead
        self._safely(catch_up_and_end)


def embedded_record(repository: CodeRepository, request: RunRequest) -> EmbeddedRecord | None:
    """With RIVERS_REDIS_URL set, a run made in this process is recorded where `rivers runs` reads."""
    url = os.environ.get(defaults.REDIS_URL_ENV)
    if not url:
        return None
    from rivers.distributed.connection import connect
    from rivers.distributed.runs import repository_name

    try:
        client = connect(url)
        now = time.time()
        owner = f"embedded (pid {os.getpid()} on {socket.gethostname()})"
        record: dict[Any, Any] = {"status": "running", keys.RUN_KIND: EMBEDDED, "created_at": now,
                                  "started_at": now, "updated_at": now, "owner": owner}
        name = repository_name(repository)
        if name:
            record[keys.RUN_REPOSITORY] = name
        pipe = client.pipeline(transaction=True)
        pipe.hset(keys.run_key(request.run_id), mapping=record)
        pipe.pexpire(keys.run_key(request.run_id), max(1, int(defaults.RUN_RETENTION_S * 1000)))
        pipe.set(keys.run_alive_key(request.run_id), owner, px=defaults.EMBEDDED_ALIVE_MS)
        pipe.zadd(keys.RUNS, {request.run_id: now})
        pipe.execute()
    except Exception as exc:  # noqa: BLE001 - Redis down: the run itself says so soon enough
        get_logger().warning("run.record_failed", run_id=request.run_id, error=repr(exc))
        return None
    return EmbeddedRecord(client, request.run_id, owner)
