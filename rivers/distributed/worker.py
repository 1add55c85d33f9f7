"""rivers-worker: consume one step queue with a warm loky pool (sync steps) and an event loop (async steps).

    BLMPOP rq:queue:rivers:<executor> (up to the free slots) ──> claim script: lease (PX), job "started"
        ──> decode: a rivers step job, else refused ──> sync: loky pool of N processes (parallel.ProcessPool)
                                                        async: event-loop thread (parallel.AsyncRunner)
        ──> reporter thread: MULTI { RPUSH reply_to "<job> <StepResult>", DEL lease, DEL job }
    heartbeat thread: every HEARTBEAT_S, renew the leases held and the worker's own key
    SIGTERM once: take nothing new, finish running steps, exit; twice: hand them back to the queue, exit

The loop only takes, runs and reports; retries and failures are decided by the coordinator.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from rivers import defaults, spec
from rivers.definitions.nodes import NodeDefinition
from rivers.distributed.connection import check_reachable, connect
from rivers.distributed.jobs import StepJob, decode_job, encode_reply
from rivers.exceptions import SpecError
from rivers.executors.parallel import AsyncRunner, ProcessPool
from rivers.executors.worker_side import failed_result
from rivers.logs import get_logger
from rivers.queues import keys
from rivers.results import StepResult

# Claim popped jobs atomically: a job whose hash is gone (cancelled, or failed by the coordinator) is skipped.
CLAIM_SCRIPT = """
local out = {}
for i = 6, #ARGV do
  local id = ARGV[i]
  local job = ARGV[4] .. id
  local data = redis.call('HGET', job, 'data')
  if data then
    redis.call('SET', ARGV[5] .. id, ARGV[1], 'PX', ARGV[2])
    redis.call('HSET', job, 'status', 'started', 'worker_name', ARGV[1], 'started_at', ARGV[3])
    out[#out + 1] = id
    out[#out + 1] = data
  end
end
return out
"""


@dataclass
class _Slot:
    name: str


@dataclass
class _Call:
    """What parallel.ProcessPool reads of a StepCall when it has to report a failure itself."""

    run_id: str
    step_key: str
    attempt: int
    outputs: list[_Slot]


@dataclass
class _Step:
    key: str


@dataclass
class _Request:
    """A StepRequest as the parallel executor's pool and event loop see it."""

    step: _Step
    call: Any
    report: Any
    live: bool = field(default=False)


class Worker:
    """One `rivers-worker` process."""

    def __init__(self, url: str, executor: str = "parallel", concurrency: int | None = None,
                 burst: bool = False) -> None:
        self.url = url
        self.executor = executor
        self.concurrency = concurrency or len(os.sched_getaffinity(0))
        self.burst = burst
        self.name = f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
        self.log = get_logger().bind(worker=self.name, executor=executor)
        self.client: Any = None
        self._claim: Any = None
        self._cond = threading.Condition()
        self._held: dict[str, StepJob] = {}  # job id -> job running here
        self._reports: queue.SimpleQueue[tuple[str, StepResult] | None] = queue.SimpleQueue()
        self._stopping = False  # first SIGTERM
        self._handing_back = False  # second SIGTERM
        self._done = threading.Event()
        self.pool: ProcessPool | None = None
        self.async_steps: AsyncRunner | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def run(self) -> int:
        check_reachable(self.url)
        self.client = connect(self.url)
        self._claim = self.client.register_script(CLAIM_SCRIPT)
        self.pool = ProcessPool(self.concurrency)
        self.async_steps = AsyncRunner(None)
        self._install_signals()
        self._beat()  # registered as a consumer before the first job
        threads = [threading.Thread(target=self._heartbeat_loop, name="rivers-heartbeat", daemon=True),
                   threading.Thread(target=self._report_loop, name="rivers-reporter", daemon=True)]
        for thread in threads:
            thread.start()
        self.log.info("worker.started", concurrency=self.concurrency, queue=keys.queue_name(self.executor))
        try:
            self._consume()
            self._drain()
        finally:
            self._finish()
        return 0

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def on_term(signum: int, frame: Any) -> None:
            # Only flags here: logging or locking inside a signal handler can deadlock the main thread.
            self._handing_back = self._stopping
            self._stopping = True

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)

    def stop(self) -> None:
        """Finish running steps and exit (what the first SIGTERM does)."""
        self._stopping = True

    def _consume(self) -> None:
        queue_key = keys.queue_key(self.executor)
        while not self._stopping:
            free = self._wait_for_slot()
            if not free:
                continue
            popped = self.client.blmpop(defaults.WORKER_BLOCK_S, 1, queue_key, direction="LEFT", count=free)
            if not popped:
                if self.burst and not self._held:
                    return
                continue
            ids = [job_id.decode() for job_id in popped[1]]
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            claimed = self._claim(args=[self.name, defaults.LEASE_MS, now, keys.RQ_JOB_PREFIX, keys.LEASE_PREFIX,
                                        *ids])
            for index in range(0, len(claimed), 2):
                self._start(claimed[index].decode(), claimed[index + 1])

    def _wait_for_slot(self) -> int:
        with self._cond:
            while len(self._held) >= self.concurrency and not self._stopping:
                self._cond.wait(0.5)
            return 0 if self._stopping else self.concurrency - len(self._held)

    def _drain(self) -> None:
        """After the first SIGTERM: wait for running steps; after a second one, hand them back."""
        if self._stopping:
            self.log.info("worker.stopping", running=len(self._held))
        with self._cond:
            while self._held and not self._handing_back:
                self._cond.wait(0.2)
        if self._handing_back:
            self._hand_back()

    def _hand_back(self) -> None:
        with self._cond:
            jobs, self._held = list(self._held), {}
        if jobs:
            pipe = self.client.pipeline(transaction=True)
            for job_id in reversed(jobs):
                pipe.delete(keys.lease_key(job_id))
                pipe.hset(keys.job_key(job_id), mapping={"status": "queued", "worker_name": ""})
                pipe.lpush(keys.queue_key(self.executor), job_id)
            pipe.execute()
            self.log.warning("worker.handed_back", jobs=len(jobs))
        for pid in self.pool.worker_pids() if self.pool else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _finish(self) -> None:
        self._reports.put(None)
        self._done.wait(defaults.REDIS_SOCKET_TIMEOUT_S)
        with contextlib.suppress(Exception):  # one attempt: Redis may be stopping with us (honcho)
            pipe = connect(self.url, retries=0).pipeline(transaction=False)
            pipe.delete(keys.worker_key(self.name))
            pipe.srem(keys.workers_key(self.executor), self.name)
            pipe.execute()
        if self.async_steps is not None:
            self.async_steps.shutdown()
        if self.pool is not None and not self._handing_back:
            self.pool.shutdown()
        self.log.info("worker.stopped")

    # -- one job ------------------------------------------------------------------------------
    def _start(self, job_id: str, data: bytes) -> None:
        try:
            job = decode_job(job_id, data)
        except SpecError as exc:  # not ours to run, and no one to tell: drop it
            self.log.error("worker.refused_job", job_id=job_id, error=str(exc))
            self.client.delete(keys.lease_key(job_id))
            self.client.hset(keys.job_key(job_id), "status", "failed")
            return
        with self._cond:
            self._held[job_id] = job
        try:
            step_spec = spec.StepSpec.model_validate_json(job.spec_json)
        except ValueError as exc:
            self._report_failure(job_id, None, SpecError(f"job {job_id}: unreadable step spec: {exc}"))
            return
        request = _Request(_Step(step_spec.step_key), None, lambda result: self._reports.put((job_id, result)))
        try:
            definition = spec.load_code(step_spec.definition, step_spec.step_key, _is_definition,
                                        "a rivers Asset or Task")
            if definition.is_async:
                request.call = spec.call_from_spec(step_spec)
                assert self.async_steps is not None
                self.async_steps.submit(cast(Any, request))
                return
        except SpecError as exc:
            self._report_failure(job_id, step_spec, exc)
            return
        request.call = _Call(step_spec.run_id, step_spec.step_key, step_spec.attempt,
                             [_Slot(out.name) for out in step_spec.outputs])
        assert self.pool is not None
        self.pool.submit_spec(cast(Any, request), job.spec_json)

    def _report_failure(self, job_id: str, step_spec: spec.StepSpec | None, exc: BaseException) -> None:
        if step_spec is None:
            self.log.error("worker.refused_job", job_id=job_id, error=str(exc))
            with self._cond:
                self._held.pop(job_id, None)
                self._cond.notify_all()
            self.client.delete(keys.lease_key(job_id))
            return
        result = failed_result(step_spec.run_id, step_spec.step_key, step_spec.attempt,
                               [out.name for out in step_spec.outputs], exc)
        self._reports.put((job_id, result))

    # -- reporting and heartbeats --------------------------------------------------------------
    def _report_loop(self) -> None:
        """Send results in batches: one MULTI for every result that finished meanwhile."""
        try:
            while True:
                item = self._reports.get()
                batch = [item]
                while True:
                    try:
                        batch.append(self._reports.get_nowait())
                    except queue.Empty:
                        break
                self._send([entry for entry in batch if entry is not None])
                if None in batch:
                    return
        finally:
            self._done.set()

    def _send(self, batch: list[tuple[str, StepResult]]) -> None:
        with self._cond:
            mine = [(job_id, result, self._held.pop(job_id)) for job_id, result in batch if job_id in self._held]
            self._cond.notify_all()
        if not mine:
            return
        pipe = self.client.pipeline(transaction=True)
        for job_id, result, job in mine:
            pipe.rpush(job.reply_to, encode_reply(job_id, result))
            pipe.delete(keys.lease_key(job_id), keys.job_key(job_id))
        try:
            pipe.execute()
        except Exception as exc:  # noqa: BLE001 - Redis gone past the retries: the leases expire, steps re-run
            self.log.error("worker.report_failed", error=repr(exc), jobs=len(mine))
        for _, result, _ in mine:
            self.log.info("step.finished", run_id=result.run_id, step_key=result.step_key, status=result.status,
                          attempt=result.attempt, duration_s=round(result.duration_s, 6))

    def _heartbeat_loop(self) -> None:
        while not self._done.wait(defaults.HEARTBEAT_S):
            try:
                self._beat()
            except Exception as exc:  # noqa: BLE001 - Redis restarting: the next beat tries again
                self.log.warning("worker.heartbeat_failed", error=repr(exc))

    def _beat(self) -> None:
        with self._cond:
            held = list(self._held)
        pipe = self.client.pipeline(transaction=False)
        pipe.set(keys.worker_key(self.name), self.executor, px=defaults.WORKER_TTL_MS)
        pipe.sadd(keys.workers_key(self.executor), self.name)
        for job_id in held:
            pipe.pexpire(keys.lease_key(job_id), defaults.LEASE_MS)
        pipe.execute()


def _is_definition(value: Any) -> bool:
    return isinstance(value, NodeDefinition) and value.fn is not None

