"""The Redis step queue: steps leave the coordinator's process as RQ jobs; results come back on a list.

    put(request) ─ live? ─────────────> the embedded parallel queue (process-local values never leave)
        └─ spec_from_call ─> JSON ─> outbox ─> sender thread: one MULTI per batch
                                      (RQ enqueue_many on rq:queue:rivers:<executor> + wake the listener)
                                                                  │
                                                                  ▼ rivers-worker: claim (lease), run
    listener thread: BLPOP rivers:run:<id>:results … <── "<job id> <StepResult JSON>"
        └─> request.report(result)
    watcher thread, every WATCH_INTERVAL_S:
        claimed, lease gone twice in a row ──> WorkerLost (infrastructure: the coordinator retries it)
        unclaimed past PICKUP_TIMEOUT_S ──> no live consumer: failed, naming the queue;
                                            not queued either: lost between pop and claim (infrastructure)

Exactly one report per request: whoever removes the job from `pending` first (listener or watcher)
reports it; a late result of a job already reported is dropped. One hub per Redis URL serves every
run of the process.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, cast

from rivers import defaults
from rivers.distributed.connection import check_reachable, connect
from rivers.distributed.jobs import decode_reply, job_args
from rivers.exceptions import ExecutionError, SpecError, WorkerLost
from rivers.executors.worker_side import failed_result
from rivers.logs import get_logger
from rivers.queues import keys
from rivers.queues.base import StepQueue, StepRequest
from rivers.spec import Pickled, StepSpec, spec_from_call

SEND_BATCH = 500  # most jobs in one MULTI
DRAIN_BATCH = 200  # most results taken in one LPOP after a BLPOP returned


@dataclass(eq=False)
class _Pending:
    request: StepRequest
    executor: str
    job_id: str
    spec_json: str
    queued_at: float = 0.0  # monotonic time it was enqueued; 0 while still in the outbox
    misses: int = 0  # watcher ticks in a row that found it claimed but without a lease
    worker: str = ""


class RedisHub:
    """The Redis side of one coordinator process for one URL: sender, listener and watcher threads."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = connect(url)
        self.name = uuid.uuid4().hex[:12]
        self.log = get_logger().bind(component="redis-queue")
        self._lock = threading.Lock()
        self.pending: dict[str, _Pending] = {}
        self._runs: dict[str, int] = {}  # run id -> jobs pending: the listener's keys
        self._adoptable: dict[str, dict[str, str]] = {}  # run id -> step key -> job id (runs taken over)
        self._outbox: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._has_runs = threading.Event()  # the listener sleeps on it while no run waits for results
        self._rq_queues: dict[str, Any] = {}
        for target, name in ((self._send_loop, "sender"), (self._listen_loop, "listener"),
                             (self._watch_loop, "watcher")):
            threading.Thread(target=target, name=f"rivers-redis-{name}", daemon=True).start()

    # -- sending ----------------------------------------------------------------------------
    def submit(self, pending: _Pending, send: bool = True) -> None:
        with self._lock:
            self.pending[pending.job_id] = pending
            run_id = pending.request.call.run_id
            self._runs[run_id] = self._runs.get(run_id, 0) + 1
        self._has_runs.set()
        if send:
            self._outbox.put(pending)
        else:
            pending.queued_at = time.monotonic()
            self.client.lpush(keys.wake_key(self.name), "1")

    def expect(self, run_id: str, jobs: dict[str, str]) -> None:
        """A run taken over: its steps' latest jobs (step key -> job id) may still be running or reported."""
        with self._lock:
            self._adoptable[run_id] = dict(jobs)

    def adopt(self, request: StepRequest) -> str | None:
        """The job id of a step that the previous owner of its run had sent and that is still alive."""
        with self._lock:
            job_id = self._adoptable.get(request.call.run_id, {}).pop(request.step.key, None)
        if job_id is None:
            return None
        if self.client.exists(keys.job_key(job_id)):
            return job_id  # queued or running: its lease is watched like any other
        reported = cast(list[bytes], self.client.lrange(keys.results_key(request.call.run_id), 0, -1))
        return job_id if any(m.split(b" ", 1)[0] == job_id.encode() for m in reported) else None

    def _send_loop(self) -> None:
        while True:
            batch = [self._outbox.get()]
            while len(batch) < SEND_BATCH:
                try:
                    batch.append(self._outbox.get_nowait())
                except queue.Empty:
                    break
            try:
                self._send(batch)
            except Exception as exc:  # noqa: BLE001 - Redis stayed down past the retries: fail these attempts
                self.log.error("redis.enqueue_failed", error=repr(exc), jobs=len(batch))
                for pending in batch:
                    self.fail(pending.job_id, WorkerLost(f"could not enqueue step on Redis: {exc}"), True)

    def _send(self, batch: list[_Pending]) -> None:
        from rq import Queue

        pipe = self.client.pipeline(transaction=True)
        by_executor: dict[str, list[Any]] = {}
        for pending in batch:
            reply_to = keys.results_key(pending.request.call.run_id)
            by_executor.setdefault(pending.executor, []).append(Queue.prepare_data(
                keys.STEP_JOB_FUNCTION, args=job_args(pending.spec_json, reply_to), job_id=pending.job_id,
                timeout=-1, result_ttl=0, description=f"{pending.request.call.run_id} {pending.request.step.key}",
            ))
            pipe.expire(reply_to, defaults.RESULT_TTL_S)
            pipe.hset(keys.run_jobs_key(pending.request.call.run_id), pending.request.step.key, pending.job_id)
        for executor, datas in by_executor.items():
            self._rq_queue(executor).enqueue_many(datas, pipeline=pipe)
        pipe.lpush(keys.wake_key(self.name), "1")  # the listener may be blocked on the keys of older runs
        pipe.execute()
        now = time.monotonic()
        for pending in batch:
            pending.queued_at = now

    def _rq_queue(self, executor: str) -> Any:
        rq_queue = self._rq_queues.get(executor)
        if rq_queue is None:
            from rq import Queue
            from rq.serializers import JSONSerializer

            rq_queue = Queue(keys.queue_name(executor), connection=self.client, serializer=JSONSerializer)
            rq_queue.get_redis_server_version()  # once, outside the pipelines
            self._rq_queues[executor] = rq_queue
        return rq_queue

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
            try:
                popped = cast(tuple[bytes, bytes] | None, client.blpop(watched, timeout=defaults.WORKER_BLOCK_S))
                if popped is None or popped[0].decode() == wake:
                    continue
                self.deliver(popped[1])
                more = cast(list[bytes] | None, client.lpop(popped[0], DRAIN_BATCH))
                for message in more or ():
                    self.deliver(message)
            except Exception as exc:  # noqa: BLE001 - Redis down past the retries: keep trying, slower
                self.log.warning("redis.listener_error", error=repr(exc))
                time.sleep(defaults.REDIS_BACKOFF_CAP_S)

    def deliver(self, message: bytes) -> None:
        job_id, result = decode_reply(message)
        pending = self._take(job_id)
        if pending is None:
            return  # already reported (lease expired, cancelled): a late duplicate
        pending.request.report(result)

    def _take(self, job_id: str) -> _Pending | None:
        with self._lock:
            pending = self.pending.pop(job_id, None)
            if pending is not None:
                run_id = pending.request.call.run_id
                self._runs[run_id] -= 1
                if not self._runs[run_id]:
                    del self._runs[run_id]
        return pending

    def fail(self, job_id: str, exc: BaseException, infrastructure: bool) -> None:
        pending = self._take(job_id)
        if pending is None:
            return
        call = pending.request.call
        pending.request.report(failed_result(call.run_id, call.step_key, call.attempt,
                                             [slot.name for slot in call.outputs], exc, infrastructure=infrastructure))

    # -- watching leases and consumers ------------------------------------------------------------
    def _watch_loop(self) -> None:
        while True:
            time.sleep(defaults.WATCH_INTERVAL_S)
            with self._lock:
                watched = [p for p in self.pending.values() if p.queued_at]
            if not watched:
                continue
            try:
                self._check(watched)
            except Exception as exc:  # noqa: BLE001 - Redis down: the next tick tries again
                self.log.warning("redis.watcher_error", error=repr(exc))

    def _check(self, watched: list[_Pending]) -> None:
        pipe = self.client.pipeline(transaction=True)  # one consistent snapshot of claims and leases
        for pending in watched:
            pipe.exists(keys.job_key(pending.job_id))
            pipe.hget(keys.job_key(pending.job_id), "worker_name")
            pipe.exists(keys.lease_key(pending.job_id))
        replies = pipe.execute()
        overdue: list[_Pending] = []
        now = time.monotonic()
        for index, pending in enumerate(watched):
            exists, worker, leased = replies[3 * index: 3 * index + 3]
            if not exists:
                continue  # finished (its result is on its way) or cancelled
            if worker:
                pending.worker = worker.decode()
                pending.misses = 0 if leased else pending.misses + 1
                if pending.misses >= 2:  # two ticks: a result pushed at the first one has arrived by now
                    self._lost(pending)
            elif now - pending.queued_at > defaults.PICKUP_TIMEOUT_S:
                overdue.append(pending)
        if overdue:
            self._check_overdue(overdue)

    def _lost(self, pending: _Pending) -> None:
        self.client.delete(keys.job_key(pending.job_id))  # a late result of this attempt is dropped
        seconds = defaults.LEASE_MS / 1000
        message = (f"worker {pending.worker} stopped renewing its lease on step '{pending.request.step.key}' "
                   f"(lease expired after {seconds:g} s): the worker was killed or lost its connection to Redis")
        self.log.warning("step.lease_expired", step_key=pending.request.step.key, worker=pending.worker)
        self.fail(pending.job_id, WorkerLost(message), True)

    def _check_overdue(self, overdue: list[_Pending]) -> None:
        for executor in {p.executor for p in overdue}:
            mine = [p for p in overdue if p.executor == executor]
            if live_workers(self.client, executor):
                for pending in mine:  # consumers exist: still queued is fine, neither queued nor claimed is lost
                    if self.client.lpos(keys.queue_key(executor), pending.job_id) is None:
                        self.client.delete(keys.job_key(pending.job_id))
                        self.fail(pending.job_id, WorkerLost(
                            f"step '{pending.request.step.key}' left queue '{keys.queue_name(executor)}' "
                            "but no worker claimed it"), True)
                continue
            for pending in mine:
                pipe = self.client.pipeline(transaction=True)
                pipe.lrem(keys.queue_key(executor), 0, pending.job_id)
                pipe.delete(keys.job_key(pending.job_id))
                pipe.execute()
                self.fail(pending.job_id, ExecutionError(
                    f"step '{pending.request.step.key}' was not picked up within {defaults.PICKUP_TIMEOUT_S:g} s: "
                    f"no rivers-worker is consuming queue '{keys.queue_name(executor)}' "
                    f"(start one with `rivers-worker --executor {executor}`)"), False)

    def fail_run(self, run_id: str, exc: BaseException) -> None:
        """Fail every step of a run still queued or running (a cancelled run); their jobs are withdrawn."""
        with self._lock:
            mine = [p for p in self.pending.values() if p.request.call.run_id == run_id]
        for pending in mine:
            pipe = self.client.pipeline(transaction=True)
            pipe.lrem(keys.queue_key(pending.executor), 0, pending.job_id)
            pipe.delete(keys.job_key(pending.job_id))
            pipe.execute()
            self.fail(pending.job_id, exc, False)

    # -- cancelling ---------------------------------------------------------------------------
    def cancel_run(self, run_id: str) -> None:
        with self._lock:
            mine = [p for p in self.pending.values() if p.request.call.run_id == run_id]
        pipe = self.client.pipeline(transaction=False)
        for pending in mine:
            self._take(pending.job_id)
            pipe.lrem(keys.queue_key(pending.executor), 0, pending.job_id)
            pipe.delete(keys.job_key(pending.job_id))
        with contextlib.suppress(Exception):
            pipe.execute()


def live_workers(client: Any, executor: str) -> list[str]:
    """Names of the workers that consume `executor`'s queue and heartbeated within WORKER_TTL_MS."""
    names = [name.decode() for name in client.smembers(keys.workers_key(executor))]
    if not names:
        return []
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.exists(keys.worker_key(name))
    alive = [name for name, exists in zip(names, pipe.execute(), strict=True) if exists]
    dead = set(names) - set(alive)
    if dead:
        client.srem(keys.workers_key(executor), *dead)
    return alive


class RedisStepQueue:
    """The StepQueue of one executor key in distributed mode."""

    def __init__(self, hub: RedisHub, executor: str, local: StepQueue | None) -> None:
        self.hub = hub
        self.executor = executor
        self.local = local  # runs the steps that must stay in this process

    def put(self, request: StepRequest) -> None:
        if request.live and self.local is not None:
            self.local.put(request)
            return
        call = request.call
        try:
            spec = spec_from_call(call, self.executor)
            refuse_unsigned_closures(spec)
        except SpecError as exc:
            request.report(failed_result(call.run_id, call.step_key, call.attempt,
                                         [slot.name for slot in call.outputs], exc))
            return
        adopted = self.hub.adopt(request)
        if adopted is not None:
            self.hub.submit(_Pending(request, self.executor, adopted, ""), send=False)
            return
        self.hub.submit(_Pending(request, self.executor, uuid.uuid4().hex, spec.model_dump_json()))

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
