"""The Redis step queue: steps leave the coordinator's process as RQ-format jobs; reports come back on a list.

    put(request) ─ live? ─────────────> the embedded parallel queue (process-local values never leave)
        └─ the job: spec JSON, data, signature (built by prepare() while the coordinator waited, else now) ─> outbox
             ─> flush(), by the coordinator before it waits: one script call per batch
                             (job hashes, signed with RIVERS_SECRET; RPUSH rq:queue:rivers:<executor>; wake)
                                                                  │
                                                                  ▼ rivers-worker: claim (lease), run, report
    listener thread: BLMPOP rivers:run:<id>:results … <── "<job id> <signature> <StepResult JSON>"
        └─ signature checked, identity checked ─> request.report(result)   (anything else: logged, skipped)
    watcher thread, every WATCH_INTERVAL_S:
        reported, but the list message never came (taken by a dead coordinator) ──> delivered from the reports hash
        claimed, lease gone twice in a row ──> WorkerLost (infrastructure: the coordinator retries it)
        job hash gone, nothing reported, twice in a row ──> WorkerLost (Redis lost it: retried)
        unclaimed past PICKUP_TIMEOUT_S ──> no live consumer: failed, naming the queue;
                                            not queued either: lost between pop and claim (infrastructure)

Exactly one report per request: whoever removes the job from `pending` first (listener or watcher)
reports it; a late report of a job already reported is dropped. One hub per Redis URL serves every
run of the process.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from rivers import defaults, signing
from rivers.distributed.connection import check_reachable, connect
from rivers.distributed.jobs import JobData, decode_report, fields_of, job_data
from rivers.exceptions import ExecutionError, FencedOut, SpecError, WorkerLost
from rivers.logs import get_logger
from rivers.queues import keys, rq_view
from rivers.queues.armed import ARM_SCRIPT, DISARM_SCRIPT, armed_fields
from rivers.queues.base import StepQueue, StepRequest
from rivers.queues.rq_view import rq_time
from rivers.results import StepResult
from rivers.runtime import StepCall
from rivers.spec import Pickled, Prepared, StepSpec, spec_json_of

# Writes of a coordinator for a run it may no longer own start with this check. KEYS[1]: the run's hash,
# ARGV[1]: the token it drives the run with ('' for a run no coordinator daemon owns: not fenced).
FENCE_LUA = f"""
if ARGV[1] ~= '' and redis.call('HGET', KEYS[1], '{keys.RUN_TOKEN}') ~= ARGV[1] then
  return 0
end
"""

# A job whose worker lost its lease fails in RQ's view. ARGV: token, queue name, job id, now (epoch s),
# now (RQ time), message, message for RQ's result stream
FAIL_JOB_SCRIPT = rq_view.LUA_FUNCTIONS + FENCE_LUA + f"""
local worker = redis.call('HGET', '{keys.RQ_JOB_PREFIX}' .. ARGV[3], '{keys.JOB_WORKER}')
if worker and worker ~= '' then
  rq_failed(ARGV[2], ARGV[3], worker, ARGV[4], ARGV[5], {defaults.FINISHED_JOB_TTL_S}, ARGV[6], ARGV[7])
end
return 1
"""

# A job taken back before any worker claimed it (never picked up, cancelled). ARGV: token, queue key, job id
WITHDRAW_SCRIPT = FENCE_LUA + f"""
redis.call('LREM', ARGV[2], 0, ARGV[3])
redis.call('DEL', '{keys.RQ_JOB_PREFIX}' .. ARGV[3])
return 1
"""

# Enqueue jobs, atomically. ARGV: the listener's wake key ('' = no wake), then per job: run hash, token ('' =
# not fenced), id, queue key, run's jobs hash, step key, count of field names and values, the job hash's fields
# and values. -> the ids of jobs not enqueued because their run's token moved on (a stale coordinator's).
ENQUEUE_SCRIPT = f"""
local fenced = {{}}
local i = 2
while i <= #ARGV do
  local run, token, id, queue, jobs, step = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local n = tonumber(ARGV[i + 6])
  if token ~= '' and redis.call('HGET', run, '{keys.RUN_TOKEN}') ~= token then
    fenced[#fenced + 1] = id
  else
    local job = '{keys.RQ_JOB_PREFIX}' .. id
    redis.call('HSET', job, unpack(ARGV, i + 7, i + 6 + n))
    redis.call('EXPIRE', job, {defaults.RESULT_TTL_S})
    redis.call('HSET', jobs, step, id)
    redis.call('EXPIRE', jobs, {defaults.RESULT_TTL_S})
    redis.call('RPUSH', queue, id)
    redis.call('SADD', '{keys.RQ_QUEUES}', queue)
  end
  i = i + 7 + n
end
if ARGV[1] ~= '' then
  redis.call('LPUSH', ARGV[1], '1')
  redis.call('LTRIM', ARGV[1], 0, 0)
  redis.call('EXPIRE', ARGV[1], {defaults.RESULT_TTL_S})
end
return fenced
"""
SEND_BATCH = 500  # most jobs in one MULTI
DRAIN_BATCH = 200  # most reports taken by one BLMPOP


@dataclass(eq=False)
class _Pending:
    request: StepRequest
    executor: str
    job_id: str
    job: JobData | None  # None for a job adopted from a previous owner of the run (already in Redis)
    queued_at: float = 0.0  # monotonic time it was enqueued; 0 while still in the outbox
    misses: int = 0  # watcher ticks in a row that found it claimed without a lease, or its job gone
    reported: int = 0  # watcher ticks that found its report in the reports hash while it was still pending
    worker: str = ""
    running: bool = False  # a step process (or pod) has started it: the run was told


Attempt = tuple[str, str, int]  # (run id, step key, attempt)


@dataclass(eq=False)
class _Armed:
    """A job armed on an upstream attempt (armed.py), until its step is dispatched or it is disarmed."""

    attempt: Attempt
    executor: str
    job: JobData
    upstream: str  # the upstream attempt's job id
    released: bool | None = None  # set when the upstream's outcome is known: its report enqueued this job
    early: list[bytes] = field(default_factory=list)  # its reports, come before its step was dispatched


class RedisHub:
    """The Redis side of one coordinator process for one URL: a listener and a watcher thread.

    Jobs are sent by the coordinators' own threads (`flush`): a hand-over to a sender thread would cost a
    thread switch on every step's critical path.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = connect(url)
        self._fail_job = self.client.register_script(FAIL_JOB_SCRIPT)
        self._withdraw = self.client.register_script(WITHDRAW_SCRIPT)
        self._enqueue = self.client.register_script(ENQUEUE_SCRIPT)
        self._arm = self.client.register_script(ARM_SCRIPT)
        self._disarm = self.client.register_script(DISARM_SCRIPT)
        self._tokens: dict[str, str] = {}  # run id -> the token this process drives it with (fenced runs only)
        self._on_fenced: dict[str, Callable[[], None]] = {}  # run id -> stands its coordinator down
        self.fenced: set[str] = set()  # runs another coordinator took over from this process
        self._wake_listener = False  # a run was added since the last send: the listener must watch its results
        self.name = uuid.uuid4().hex[:12]
        self.log = get_logger().bind(component="redis-queue")
        self._lock = threading.Lock()
        self.pending: dict[str, _Pending] = {}
        self._job_of_step: dict[tuple[str, str], str] = {}  # (run id, step key) -> its pending job's id
        self.armed: dict[Attempt, _Armed] = {}
        self._armed_ids: dict[str, _Armed] = {}  # armed job id -> it
        self._armed_on: dict[str, list[_Armed]] = {}  # upstream job id -> what is armed on it
        self._runs: dict[str, int] = {}  # run id -> jobs pending: the listener's keys
        self._adoptable: dict[str, dict[str, str]] = {}  # run id -> step key -> job id (runs taken over)
        self._outbox: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._has_runs = threading.Event()  # the listener sleeps on it while no run waits for results
        self._send_lock = threading.Lock()
        self._delivering = False  # the listener is delivering a batch of reports
        self._listener = threading.Thread(target=self._listen_loop, name="rivers-redis-listener", daemon=True)
        self._listener.start()
        threading.Thread(target=self._watch_loop, name="rivers-redis-watcher", daemon=True).start()

    # -- sending ----------------------------------------------------------------------------
    def submit(self, pending: _Pending, send: bool = True) -> None:
        with self._lock:
            self.pending[pending.job_id] = pending
            run_id = pending.request.call.run_id
            self._job_of_step[(run_id, pending.request.step.key)] = pending.job_id
            self._wake_listener = self._wake_listener or run_id not in self._runs
            self._runs[run_id] = self._runs.get(run_id, 0) + 1
        self._has_runs.set()
        if send:
            self._outbox.put(pending)
        else:
            pending.queued_at = time.monotonic()
            pipe = self.client.pipeline(transaction=False)  # the listener must watch the adopted run's results
            pipe.lpush(keys.wake_key(self.name), "1")
            pipe.ltrim(keys.wake_key(self.name), 0, 0)
            pipe.expire(keys.wake_key(self.name), defaults.RESULT_TTL_S)
            pipe.execute()

    def expect(self, run_id: str, jobs: dict[str, str]) -> None:
        """A run taken over: its steps' latest jobs (step key -> job id) may still be running or reported."""
        with self._lock:
            self._adoptable[run_id] = dict(jobs)

    def adopt(self, request: StepRequest) -> tuple[str, bool] | None:
        """(job id, reported) of a step that the previous owner of its run had sent and that is alive or reported."""
        with self._lock:
            job_id = self._adoptable.get(request.call.run_id, {}).pop(request.step.key, None)
        if job_id is None:
            return None
        pipe = self.client.pipeline(transaction=False)
        pipe.hexists(keys.run_reports_key(request.call.run_id), job_id)
        pipe.hget(keys.job_key(job_id), keys.JOB_STATUS)
        reported, status = pipe.execute()
        if reported or status in (keys.QUEUED.encode(), keys.STARTED.encode()):
            return job_id, bool(reported)  # reported, or queued or running (its lease is watched)
        return None

    def flush(self) -> None:
        """Send every job waiting in the outbox, in batches of SEND_BATCH, from the calling thread (the listener
        delivering a batch of reports sends what they made ready after the batch, in one go)."""
        if self._delivering and threading.current_thread() is self._listener:
            return
        with self._send_lock:
            while True:
                batch: list[_Pending] = []
                while len(batch) < SEND_BATCH:
                    try:
                        batch.append(self._outbox.get_nowait())
                    except queue.Empty:
                        break
                if not batch:
                    return
                try:
                    self._send(batch)
                except Exception as exc:  # noqa: BLE001 - Redis stayed down past the retries: fail these attempts
                    self.log.error("redis.enqueue_failed", error=repr(exc), jobs=len(batch))
                    for pending in batch:
                        self.fail(pending.job_id, WorkerLost(f"could not enqueue step on Redis: {exc}"), True)

    def _send(self, batch: list[_Pending]) -> None:
        with self._lock:
            wake, self._wake_listener = self._wake_listener, False
        args: list[Any] = [keys.wake_key(self.name) if wake else ""]
        for pending in batch:
            run_id, step_key = pending.request.call.run_id, pending.request.step.key
            assert pending.job is not None
            fields = fields_of(pending.job, keys.queue_name(pending.executor), f"{run_id} {step_key}")
            args += [keys.run_key(run_id), self._tokens.get(run_id, ""), pending.job_id,
                     keys.queue_key(pending.executor), keys.run_jobs_key(run_id), step_key, 2 * len(fields),
                     *(item for pair in fields.items() for item in pair)]
        fenced = {job_id.decode() for job_id in self._enqueue(args=args)}
        now = time.monotonic()
        for pending in batch:
            pending.queued_at = now
            if pending.job_id in fenced:
                self._take(pending.job_id)
                self._fenced_out(pending.request.call.run_id)

    # -- arming (armed.py) ---------------------------------------------------------------------
    def arm(self, attempt: Attempt, executor: str, job: JobData, upstream: tuple[str, int]) -> bool:
        """Store `job` in Redis, to be enqueued by the successful report of `upstream` (step key, attempt) of the
        same run; False (nothing stored) when that attempt is not a job of this hub that can still report."""
        run_id, step_key, _ = attempt
        with self._lock:
            upstream_id = self._job_of_step.get((run_id, upstream[0]))
            waited = self.pending.get(upstream_id) if upstream_id is not None else None
            if upstream_id is None or waited is None or waited.request.call.attempt != upstream[1] or \
                    not waited.queued_at or attempt in self.armed:
                return False
            armed = _Armed(attempt, executor, job, upstream_id)
            self._add_armed(armed)  # before the script: the upstream's report may be delivered while it runs
        fields = armed_fields(fields_of(job, keys.queue_name(executor), f"{run_id} {step_key}"), upstream_id,
                              keys.run_key(run_id), self._tokens.get(run_id, ""), step_key)
        try:
            stored = self._arm(args=[upstream_id, keys.run_reports_key(run_id), job.job_id,
                                     *(item for pair in fields.items() for item in pair)])
        except Exception as exc:  # noqa: BLE001 - nothing armed: the step is sent as any other when it is ready
            self.log.warning("redis.arm_failed", step_key=step_key, error=repr(exc))
            stored = 0
        if not stored:  # the upstream reported first, or ended: nothing was stored
            with self._lock:
                self._drop_armed(armed)
        return bool(stored)

    def confirm(self, request: StepRequest) -> bool:
        """The step of an armed job is dispatched: True when its upstream's report enqueued that job (it is
        watched and reported from now on, as any sent job); False when nothing armed for it is in Redis now."""
        call = request.call
        with self._lock:
            armed = self.armed.get((call.run_id, call.step_key, call.attempt))
            if armed is None:
                return False
            self._drop_armed(armed)
            if armed.released:
                pending = _Pending(request, armed.executor, armed.job.job_id, armed.job, queued_at=time.monotonic())
                self.pending[pending.job_id] = pending
                self._job_of_step[(call.run_id, call.step_key)] = pending.job_id
                self._runs[call.run_id] = self._runs.get(call.run_id, 0) + 1
        if not armed.released:
            if armed.released is None:  # its upstream's outcome came another way: take the job back first
                self._disarm_now([armed])
            return False
        for message in armed.early:
            self.deliver(message)
        return True

    def disarm(self, attempt: Attempt) -> None:
        """The armed job of `attempt` will not be waited for (its step was not dispatched): take it back."""
        with self._lock:
            armed = self.armed.get(attempt)
            if armed is not None:
                self._drop_armed(armed)
        if armed is not None and armed.released is not False:
            self._disarm_now([armed])

    def _add_armed(self, armed: _Armed) -> None:
        """Under the lock. The run stays listened to while a job is armed: the job reports as soon as it is sent."""
        self.armed[armed.attempt] = armed
        self._armed_ids[armed.job.job_id] = armed
        self._armed_on.setdefault(armed.upstream, []).append(armed)
        run_id = armed.attempt[0]
        self._wake_listener = self._wake_listener or run_id not in self._runs
        self._runs[run_id] = self._runs.get(run_id, 0) + 1

    def _drop_armed(self, armed: _Armed) -> None:
        """Under the lock."""
        if self.armed.get(armed.attempt) is not armed:
            return
        del self.armed[armed.attempt]
        del self._armed_ids[armed.job.job_id]
        siblings = self._armed_on.get(armed.upstream, [])
        if armed in siblings:
            siblings.remove(armed)
        if not siblings:
            self._armed_on.pop(armed.upstream, None)
        run_id = armed.attempt[0]
        self._runs[run_id] -= 1
        if not self._runs[run_id]:
            del self._runs[run_id]

    def _upstream_ended(self, upstream_id: str, released: bool) -> None:
        """The attempt `upstream_id` was reported (released: a success, whose report enqueued what was armed on
        it) or ended another way; called before its result is handed on, so that its downstream's dispatch knows."""
        with self._lock:
            armed = self._armed_on.pop(upstream_id, [])
            for one in armed:
                one.released = released
                if not released:
                    self._drop_armed(one)
        if armed and not released:
            self._disarm_now(armed)

    def _disarm_now(self, armed: list[_Armed]) -> None:
        try:
            self._disarm(args=[item for one in armed
                               for item in (one.upstream, one.job.job_id, keys.queue_key(one.executor))])
        except Exception as exc:  # noqa: BLE001 - its upstream can no longer report: the job stays deferred
            self.log.warning("redis.disarm_failed", jobs=len(armed), error=repr(exc))

    # -- results ----------------------------------------------------------------------------
    def _listen_loop(self) -> None:
        client = connect(self.url)  # a connection of its own: BLPOP holds it
        wake = keys.wake_key(self.name)
        while True:
            self._has_runs.wait()
            self._has_runs.clear()
            with self._lock:
                runs = list(self._runs)
            if not runs:
                continue
            self._has_runs.set()  # keep listening while runs wait
            watched = [wake, *(keys.results_key(run) for run in runs)]
            try:  # one call takes up to DRAIN_BATCH reports of the first list that has any
                popped = cast(tuple[bytes, list[bytes]] | None, client.blmpop(
                    defaults.WORKER_BLOCK_S, len(watched), *watched, direction="LEFT", count=DRAIN_BATCH))
                if popped is None or popped[0].decode() == wake:
                    continue
                self._delivering = True  # a coordinator driven from here sends its jobs once, after the batch
                try:
                    for message in popped[1]:
                        self.deliver(message)
                finally:
                    self._delivering = False
                self.flush()
            except Exception as exc:  # noqa: BLE001 - Redis down past the retries: keep trying, slower
                self.log.warning("redis.listener_error", error=repr(exc))
                time.sleep(defaults.REDIS_BACKOFF_CAP_S)

    def deliver(self, message: bytes) -> bool:
        """Report a worker's message to its step; a malformed, unsigned or foreign one is logged and skipped.

        False when the message was refused: not a report, or not signed with this coordinator's secret.
        """
        try:
            job_id, result_json = decode_report(message, signing.deployment_key())
        except ValueError as exc:
            self.log.error("redis.report_refused", error=str(exc), message=bytes(message[:120]))
            return False
        with self._lock:
            pending = self.pending.get(job_id)
            early = self._armed_ids.get(job_id) if pending is None else None
            if early is not None:  # released and run before its step's dispatch was settled here: kept for it
                early.early.append(message)
                return True
        if pending is None:
            return True  # already reported (lease expired, cancelled): a late duplicate
        call = pending.request.call
        try:
            result = StepResult.model_validate_json(result_json)
        except ValueError as exc:
            self.log.error("redis.report_unreadable", job_id=job_id, step_key=call.step_key, error=str(exc)[:300])
            return True
        if (result.run_id, result.step_key) != (call.run_id, call.step_key):
            if result.step_key or result.error is None:  # another step's report under this job id: not ours
                self.log.error("redis.report_foreign", job_id=job_id, step_key=call.step_key,
                               reported_step=result.step_key)
                return True
            # a worker that could not read the spec could not name the step: its error is this step's
            error = result.error
            result = StepResult.failed(call.run_id, call.step_key, call.attempt, [s.name for s in call.outputs],
                                       SpecError(error.message))
        if self._take(job_id) is not None:
            self._upstream_ended(job_id, result.error is None)  # its REPORT script released on a success
            pending.request.report(result)
        return True

    def _take(self, job_id: str) -> _Pending | None:
        with self._lock:
            pending = self.pending.pop(job_id, None)
            if pending is not None:
                run_id = pending.request.call.run_id
                if self._job_of_step.get((run_id, pending.request.step.key)) == job_id:
                    del self._job_of_step[(run_id, pending.request.step.key)]
                self._runs[run_id] -= 1
                if not self._runs[run_id]:
                    del self._runs[run_id]
        return pending

    def fail(self, job_id: str, exc: BaseException, infrastructure: bool) -> None:
        pending = self._take(job_id)
        if pending is None:
            return
        self._upstream_ended(job_id, False)
        call = pending.request.call
        pending.request.report(StepResult.failed(call.run_id, call.step_key, call.attempt,
                                                 [slot.name for slot in call.outputs], exc,
                                                 infrastructure=infrastructure))

    # -- watching leases and consumers ------------------------------------------------------------
    def _watch_loop(self) -> None:
        while True:
            time.sleep(defaults.WATCH_INTERVAL_S)
            with self._lock:
                watched = [p for p in self.pending.values() if p.queued_at and p.request.call.run_id not in self.fenced]
            if not watched:
                continue
            try:
                self._check(watched)
            except Exception as exc:  # noqa: BLE001 - Redis down: the next tick tries again
                self.log.warning("redis.watcher_error", error=repr(exc))

    def _check(self, watched: list[_Pending]) -> None:
        pipe = self.client.pipeline(transaction=True)  # one consistent snapshot of claims, leases and reports
        for pending in watched:
            pipe.hmget(keys.job_key(pending.job_id), keys.JOB_STATUS, keys.JOB_WORKER, keys.JOB_EXC_INFO,
                       keys.JOB_RUNNING_AT)
            pipe.exists(keys.lease_key(pending.job_id))
            pipe.hexists(keys.run_reports_key(pending.request.call.run_id), pending.job_id)
        replies = pipe.execute()
        overdue: list[_Pending] = []
        now = time.monotonic()
        for index, pending in enumerate(watched):
            (status, worker, refusal, running_at), leased, reported = replies[3 * index: 3 * index + 3]
            if running_at and not pending.running:
                pending.running = True
                pending.request.running()
            if reported:
                pending.reported += 1
                # its list message was taken by a coordinator that died, or is lost: the stored copy stands
                if pending.reported >= 2 and not self.deliver_stored(pending) and not leased:
                    self.fail(pending.job_id, ExecutionError(
                        f"worker {(worker or b'?').decode()} reported step '{pending.request.step.key}', but the "
                        f"report is not signed with this coordinator's {defaults.SECRET_ENV}: start every worker "
                        f"with the same {defaults.SECRET_ENV}"), False)
                continue
            if status is None:  # the job hash is gone and nothing was reported: Redis lost it
                pending.misses += 1
                if pending.misses >= 2:
                    self.fail(pending.job_id, WorkerLost(
                        f"the job of step '{pending.request.step.key}' vanished from Redis before any worker "
                        "reported it (was Redis restarted without its data?)"), True)
                continue
            if status == keys.FAILED.encode():  # failed without a report: the worker refused to run the job
                self.fail(pending.job_id, ExecutionError(
                    f"worker {(worker or b'?').decode()} refused the job of step '{pending.request.step.key}': "
                    f"{(refusal or b'no reason given').decode()}"), False)
                continue
            if worker:
                pending.worker = worker.decode()
                pending.misses = 0 if leased else pending.misses + 1
                if pending.misses >= 2:  # two ticks: a report pushed at the first one has arrived by now
                    self._lost(pending)
            elif now - pending.queued_at > defaults.PICKUP_TIMEOUT_S:
                overdue.append(pending)
        if overdue:
            self._check_overdue(overdue)

    def deliver_stored(self, pending: _Pending) -> bool:
        """Deliver the copy of a report kept in the run's reports hash; False if there is none or it is refused."""
        message = cast(bytes | None, self.client.hget(keys.run_reports_key(pending.request.call.run_id),
                                                      pending.job_id))
        return message is not None and self.deliver(message)

    def _lost(self, pending: _Pending) -> None:
        seconds = defaults.LEASE_MS / 1000
        message = (f"worker {pending.worker} stopped renewing its lease on step '{pending.request.step.key}' "
                   f"(lease expired after {seconds:g} s): the worker was killed or lost its connection to Redis")
        # the attempt's job fails in RQ's view; a late report of it is refused by the worker's fenced report
        run_id = pending.request.call.run_id
        if not self._fail_job(keys=[keys.run_key(run_id)],
                              args=[self._tokens.get(run_id, ""), keys.queue_name(pending.executor), pending.job_id,
                                    time.time(), rq_time(), message, rq_view.exc_string_field(message)]):
            self._fenced_out(run_id)
            return
        self.log.warning("step.lease_expired", step_key=pending.request.step.key, worker=pending.worker)
        self.fail(pending.job_id, WorkerLost(message), True)

    def _check_overdue(self, overdue: list[_Pending]) -> None:
        for executor in {p.executor for p in overdue}:
            mine = [p for p in overdue if p.executor == executor]
            if live_workers(self.client, executor):
                for pending in mine:  # consumers exist: still queued is fine, neither queued nor claimed is lost
                    if self.client.lpos(keys.queue_key(executor), pending.job_id) is None:
                        if not self._withdrawn(pending):
                            continue
                        self.fail(pending.job_id, WorkerLost(
                            f"step '{pending.request.step.key}' left queue '{keys.queue_name(executor)}' "
                            "but no worker claimed it"), True)
                continue
            for pending in mine:
                if not self._withdrawn(pending):
                    continue
                self.fail(pending.job_id, ExecutionError(
                    f"step '{pending.request.step.key}' was not picked up within {defaults.PICKUP_TIMEOUT_S:g} s: "
                    f"no rivers-worker is consuming queue '{keys.queue_name(executor)}' "
                    f"(start one with `rivers-worker --executor {executor}`)"), False)

    def fail_run(self, run_id: str, exc: BaseException) -> None:
        """Fail every step of a run still queued or running (a cancelled run); their jobs are withdrawn."""
        self._disarm_run(run_id)
        with self._lock:
            mine = [p for p in self.pending.values() if p.request.call.run_id == run_id]
        for pending in mine:
            if self._withdrawn(pending):
                self.fail(pending.job_id, exc, False)

    def _disarm_run(self, run_id: str) -> None:
        with self._lock:
            armed = [a for a in self.armed.values() if a.attempt[0] == run_id]
            for one in armed:
                self._drop_armed(one)
        if armed:
            self._disarm_now(armed)

    def _withdrawn(self, pending: _Pending) -> bool:
        """Take a job back from its queue and Redis; False (and the run stands down) when fenced out."""
        run_id = pending.request.call.run_id
        if self._withdraw(keys=[keys.run_key(run_id)],
                          args=[self._tokens.get(run_id, ""), keys.queue_key(pending.executor), pending.job_id]):
            return True
        self._fenced_out(run_id)
        return False

    # -- ownership of runs ------------------------------------------------------------------------
    def fence(self, run_id: str, token: int, on_fenced: Callable[[], None]) -> None:
        """Drive `run_id` with this ownership token: writes for it are refused once another coordinator
        has taken it over, and then `on_fenced` stands this process's coordinator down."""
        with self._lock:
            self._tokens[run_id] = str(token)
            self._on_fenced[run_id] = on_fenced

    def _fenced_out(self, run_id: str) -> None:
        with self._lock:
            first = run_id not in self.fenced
            self.fenced.add(run_id)
            on_fenced = self._on_fenced.get(run_id)
        if first:
            self.log.warning("run.fenced_out", run_id=run_id, reason="another coordinator took the run over")
        if on_fenced is not None:
            on_fenced()

    def forget_run(self, run_id: str) -> None:
        """Stop listening for a run and drop its pending steps, writing nothing (its new owner drives them)."""
        with self._lock:
            for job_id in [j for j, p in self.pending.items() if p.request.call.run_id == run_id]:
                del self.pending[job_id]
            for armed in [a for a in self.armed.values() if a.attempt[0] == run_id]:
                self._drop_armed(armed)  # its release is refused: the run's token moved on
            for step in [s for s in self._job_of_step if s[0] == run_id]:
                del self._job_of_step[step]
            self._runs.pop(run_id, None)
            self._tokens.pop(run_id, None)
            self._on_fenced.pop(run_id, None)
            self._adoptable.pop(run_id, None)

    # -- cancelling ---------------------------------------------------------------------------
    def cancel_run(self, run_id: str) -> None:
        self._disarm_run(run_id)
        with self._lock:
            mine = [p for p in self.pending.values() if p.request.call.run_id == run_id]
        pipe = self.client.pipeline(transaction=False)
        for pending in mine:
            self._take(pending.job_id)
            pipe.lrem(keys.queue_key(pending.executor), 0, pending.job_id)
            pipe.delete(keys.job_key(pending.job_id))
        with contextlib.suppress(Exception):
            pipe.execute()


# Jobs in the hand of a worker that is gone (its key expired) never ran (a take claims and empties a hand at once):
# they go back to the head of the queue, in order, and the worker leaves the set. ARGV: workers set, queue key
RESCUE_SCRIPT = f"""
local moved = 0
for _, name in ipairs(redis.call('SMEMBERS', ARGV[1])) do
  if redis.call('EXISTS', '{keys.WORKER_PREFIX}' .. name) == 0 then
    while redis.call('LMOVE', '{keys.HAND_PREFIX}' .. name, ARGV[2], 'RIGHT', 'LEFT') do
      moved = moved + 1
    end
    redis.call('SREM', ARGV[1], name)
  end
end
return moved
"""


def live_workers(client: Any, executor: str) -> list[str]:
    """Names of the workers that consume `executor`'s queue and heartbeated within WORKER_TTL_MS (the dead ones
    leave the set, and what they left in their hands goes back to the queue)."""
    client.eval(RESCUE_SCRIPT, 0, keys.workers_key(executor), keys.queue_key(executor))
    return [name.decode() for name in client.smembers(keys.workers_key(executor))]


class RedisStepQueue:
    """The StepQueue of one executor key in distributed mode."""

    def __init__(self, hub: RedisHub, executor: str, local: StepQueue | None) -> None:
        self.hub = hub
        self.executor = executor
        self.local = local  # runs the steps that must stay in this process
        self._run_ids: set[str] = set()  # the runs put here (one, in practice: a queue is made per run)
        self._jobs = Prepared(self._job_of)

    def _job_of(self, call: StepCall) -> JobData:
        """A new job for `call`: its id, its data (spec JSON, results list) and its signature under RIVERS_SECRET."""
        spec_json = spec_json_of(call, self.executor, refuse_unsigned_closures)
        return job_data(uuid.uuid4().hex, spec_json, keys.results_key(call.run_id), signing.deployment_key())

    def prepare(self, call: StepCall) -> None:
        self._jobs.prepare(call)

    def arm(self, call: StepCall, upstream: tuple[str, int]) -> bool:
        """Store this attempt's job in Redis now, to be enqueued by the successful report of `upstream` (step key,
        attempt): its step then starts without waiting for this process. False: not armed (prepared only)."""
        self._jobs.prepare(call)
        job = self._jobs.built(call)
        if job is None or not self.hub.arm((call.run_id, call.step_key, call.attempt), self.executor, job, upstream):
            return False
        self._jobs.take(call)  # stored: its id cannot be sent again
        return True

    def disarm(self, call: StepCall) -> None:
        self.hub.disarm((call.run_id, call.step_key, call.attempt))

    def put(self, request: StepRequest) -> None:
        if request.live and self.local is not None:
            self.local.put(request)
            return
        call = request.call
        self._run_ids.add(call.run_id)
        if self.hub.confirm(request):
            return  # its upstream's report enqueued it
        try:
            job = self._jobs.take(call)
        except SpecError as exc:
            request.report(StepResult.failed(call.run_id, call.step_key, call.attempt,
                                             [slot.name for slot in call.outputs], exc))
            return
        adopted = self.hub.adopt(request)
        if adopted is not None:
            job_id, reported = adopted
            pending = _Pending(request, self.executor, job_id, None)
            self.hub.submit(pending, send=False)
            if reported:  # its previous owner died between the report and recording it: the report stands
                self.hub.deliver_stored(pending)
            return
        self.hub.submit(_Pending(request, self.executor, job.job_id, job))

    def flush(self) -> None:
        self.hub.flush()
        if self._run_ids & self.hub.fenced:
            raise FencedOut(f"run {min(self._run_ids & self.hub.fenced)} is owned by another coordinator now")

    def cancel_run(self, run_id: str) -> None:
        self.hub.cancel_run(run_id)
        if self.local is not None:
            self.local.cancel_run(run_id)


def refuse_unsigned_closures(spec: StepSpec) -> None:
    """Without RIVERS_SECRET, pickled code cannot be verified by a remote worker: say what to do instead."""
    if os.environ.get(defaults.SECRET_ENV):
        return
    codes = [spec.definition, spec.context_type, spec.config_type,
             *(h.ref for h in spec.handlers), *(r.ref for r in spec.resources.values())]
    if any(isinstance(code, Pickled) for code in codes):
        raise SpecError(
            f"step '{spec.step_key}' uses a function or class that cannot be imported by reference (defined inside "
            "a function, a lambda, or in __main__), and distributed workers only run module-level code: move it to "
            f"module scope, or set {defaults.SECRET_ENV} on the coordinator and every worker to send it signed"
        )


_hubs: dict[str, RedisHub] = {}
_hubs_lock = threading.Lock()


def redis_queue(url: str, executor: str, local: StepQueue | None = None) -> RedisStepQueue:
    """The queue of `executor` on the Redis at `url`; fails fast, in one sentence, if Redis is unreachable."""
    check_reachable(url)
    with _hubs_lock:
        hub = _hubs.get(url)
        if hub is None:
            hub = _hubs[url] = RedisHub(url)
    return RedisStepQueue(hub, executor, local)
