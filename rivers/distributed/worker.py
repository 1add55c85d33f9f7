"""rivers-worker: claim steps from one queue, hand their spec JSON to warm step processes, hear of their reports.

    one pipeline, one round trip: BLMOVE rq:queue:rivers:<executor> -> rivers:hand:<worker>, then
        ──> TAKE script: the hand's ids and more from the queue (up to the free slots); for each one whose job
            is still queued: lease (PX, value = this worker), job started (at Redis's time)
        ──> decode_job: signature (RIVERS_SECRET) over the exact bytes, bounded decompression, a rivers step?
              refused ──> job failed in Redis, nothing run, nothing reported (its sender is unknown)
        ──> pool.submit(job id, spec JSON, reply, route = the run's results list)
              (pool.py: user code runs only in pool processes; a spec of another protocol or schema fails there
              at once, naming the field and both versions)
    up to PREFETCH jobs per slot beyond the running ones wait in the pool's queue, their leases renewed
    the step process reports its attempt itself (fence.py, REPORT script, fenced by the lease this worker holds:
        RPUSH the signed report, HSET it in the run's reports, DEL lease, job finished | failed; a report whose
        lease is gone is stale: dropped, the coordinator has retried the step), then hands the result back;
        when that report released a downstream job armed on it (queues/armed.py) for this queue, the same script
        claims it for this worker and the step process runs it next (no trip through the queue or this process):
        the result it hands back names it (PoolResult.next) and this process holds its lease from then on
    reporter thread: reports, in batches, what a step process could not (it died: WorkerLost; Redis unreachable)
    heartbeat thread: every HEARTBEAT_S renew each lease (PEXPIRE); a lease that is gone and not reported means
        the step was taken away: its pool process is killed and its report will be dropped. Also the worker's own
        key, `rivers_running_at` of the jobs a step process started since the last beat (queued -> running), and
        RESCUE: what a dead worker left in its hand goes back to the queue.
    SIGTERM once: take nothing new (the stopping key: no report claims for it either), finish running steps,
        exit; twice: hand them back to the queue, exit

The main process never imports user code: it moves bytes, and leaves every decision to the coordinator.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, cast

from redis.exceptions import NoScriptError

from rivers import defaults, signing
from rivers.distributed.connection import check_reachable, connect
from rivers.distributed.fence import REPORT_SCRIPT, LeaseHolder, report_args, report_common_args
from rivers.distributed.jobs import StepJob, decode_job
from rivers.exceptions import RefusedJob
from rivers.executors.pool import PoolResult, ProcessPool
from rivers.executors.pool_process import STALE
from rivers.logs import get_logger
from rivers.queues import keys, rq_view
from rivers.queues.redis import RESCUE_SCRIPT


def _claim_ids(on_claim: str) -> str:
    """Lua claiming `ids` (with worker, lease_ms, now, now_iso, queue in scope) -> id, data, signature, ..."""
    return f"""
local out = {{}}
for _, id in ipairs(ids) do
  local job = '{keys.RQ_JOB_PREFIX}' .. id
  local found = redis.call('HMGET', job, '{keys.JOB_DATA}', '{keys.JOB_SIGNATURE}', '{keys.JOB_STATUS}')
  if found[1] and found[3] == '{keys.QUEUED}' then
    redis.call('SET', '{keys.LEASE_PREFIX}' .. id, worker, 'PX', lease_ms)
    rq_started(queue, id, worker, now, now_iso, {defaults.RQ_STARTED_TTL_S})
    {on_claim}
    out[#out + 1] = id
    out[#out + 1] = found[1]
    out[#out + 1] = found[2] or ''
  end
end
return out
"""


# Claim popped jobs atomically: only a queued job is claimed. One whose hash is gone (cancelled, or failed by the
# coordinator) or that already ran (its id pushed again: a replay) is skipped. `on_claim` (Lua, with `id` and
# `job` in scope) is what a claimer adds, such as the pod launcher recording itself.
# ARGV: worker, lease ms, now (RQ time), now (epoch s), queue name, ids...
def claim_script(on_claim: str = "") -> str:
    return rq_view.LUA_FUNCTIONS + """
local worker, lease_ms, now_iso, now, queue = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local ids = {}
for i = 6, #ARGV do
  ids[#ids + 1] = ARGV[i]
end
""" + _claim_ids(on_claim)


# Take and claim, atomically, what the worker's BLMOVE just moved to its hand, and more from the queue up to a
# count: sent in one pipeline right after the BLMOVE, a job is claimed in the round trip that delivers it. The
# time is Redis's own (the pipeline was built before the BLMOVE waited).
# ARGV: worker, lease ms, hand key, queue name, queue key, most jobs to take
TAKE_SCRIPT = rq_view.LUA_FUNCTIONS + """
local worker, lease_ms, hand, queue, queue_key = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local now, now_iso = rq_clock()
local ids = redis.call('LRANGE', hand, 0, -1)
redis.call('DEL', hand)
local more = tonumber(ARGV[6]) - #ids
if more > 0 then
  local popped = redis.call('LPOP', queue_key, more)
  if popped then
    for _, id in ipairs(popped) do
      ids[#ids + 1] = id
    end
  end
end
""" + _claim_ids("")


CLAIM_SCRIPT = claim_script()
STOPPING_TTL_MS = 60_000  # the stopping key outlives any drain it is set for; it is deleted when the worker ends



# A job this worker will not run (refused) or gives back (second SIGTERM), fenced: only while this worker holds
# its lease (a job its step process has reported meanwhile is not handed back). ARGV: worker, now (RQ time),
# now (epoch s), queue name, reason ('' = hand back to the queue), reason for RQ's result stream, ids...
RELEASE_SCRIPT = rq_view.LUA_FUNCTIONS + f"""
for i = 7, #ARGV do
  local id = ARGV[i]
  local lease = '{keys.LEASE_PREFIX}' .. id
  if redis.call('GET', lease) == ARGV[1] then
    redis.call('DEL', lease)
    if ARGV[5] == '' then
      rq_requeued(ARGV[4], id, ARGV[1])
      redis.call('LPUSH', '{keys.RQ_QUEUE_PREFIX}' .. ARGV[4], id)
    else
      rq_failed(ARGV[4], id, ARGV[1], ARGV[3], ARGV[2], {defaults.FINISHED_JOB_TTL_S}, ARGV[5], ARGV[6])
    end
  end
end
"""


def on_stop_signals(flag: Callable[[], None]) -> None:
    """SIGTERM and SIGINT call `flag` (from the main thread only; a thread cannot install handlers). It must only
    set flags: logging or locking inside a signal handler can deadlock the main thread."""
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda number, frame: flag())


def announce(pipe: Any, name: str, executor: str, held: list[str], birth: datetime,
             ttl_ms: int = defaults.WORKER_TTL_MS) -> None:
    """A consumer's heartbeat: alive (rivers' key, RQ's worker view) and still running the jobs it holds."""
    queue_name = keys.queue_name(executor)
    pipe.set(keys.worker_key(name), executor, px=ttl_ms)
    pipe.sadd(keys.workers_key(executor), name)
    rq_view.register_worker(pipe, name, [queue_name], hostname=socket.gethostname(), pid=os.getpid(),
                            ttl_s=defaults.RQ_WORKER_TTL_S, state="busy" if held else "idle", birth=birth)
    rq_view.heartbeat_jobs(pipe, queue_name, name, held, ttl_s=defaults.RQ_STARTED_TTL_S)


def unannounce(url: str, name: str, executor: str) -> None:
    """A consumer leaves: one attempt, since Redis may be stopping with it (honcho)."""
    with contextlib.suppress(Exception):
        pipe = connect(url, retries=0).pipeline(transaction=False)
        pipe.delete(keys.worker_key(name))
        pipe.srem(keys.workers_key(executor), name)
        rq_view.unregister_worker(pipe, name, [keys.queue_name(executor)])
        pipe.execute()


class Presence:
    """A consumer's listing in Redis: a heartbeat never lands after the goodbye (it would list a gone consumer)."""

    def __init__(self, url: str, name: str, executor: str) -> None:
        self.url, self.name, self.executor = url, name, executor
        self._lock = threading.Lock()
        self._left = False

    @contextlib.contextmanager
    def beating(self) -> Iterator[bool]:
        """Hold while beating; False once the consumer has left (then beat nothing)."""
        with self._lock:
            yield not self._left

    def leave(self) -> None:
        # a beat stuck in Redis retries must not hold the goodbye for long: it will find _left set
        locked = self._lock.acquire(timeout=defaults.REDIS_SOCKET_TIMEOUT_S)
        try:
            self._left = True
            unannounce(self.url, self.name, self.executor)
        finally:
            if locked:
                self._lock.release()


class Worker:
    """One `rivers-worker` process."""

    def __init__(self, url: str, executor: str = "parallel", concurrency: int | None = None,
                 burst: bool = False, name: str | None = None) -> None:
        self.url = url
        self.executor = executor
        self.queue = keys.queue_name(executor)
        self.concurrency = concurrency or len(os.sched_getaffinity(0))
        self.burst = burst
        self.name = name or f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
        self.log = get_logger().bind(worker=self.name, executor=executor)
        self.key = signing.deployment_key()
        self.client: Any = None
        self._take_script: Any = None
        self._report: Any = None
        self._release: Any = None
        self._rescue: Any = None
        self._cond = threading.Condition()
        self._held: dict[str, StepJob] = {}  # job id -> job running here
        self._began: list[tuple[str, float]] = []  # (job id, when) a step process got it: told at the next beat
        self._reports: queue.SimpleQueue[tuple[str, PoolResult] | None] = queue.SimpleQueue()
        self._stopping = False  # first SIGTERM
        self._handing_back = False  # second SIGTERM
        self._done = threading.Event()
        self.pool: ProcessPool | None = None
        self.birth = datetime.now(UTC)
        self.presence = Presence(url, self.name, executor)

    # -- lifecycle ---------------------------------------------------------------------------
    def run(self) -> int:
        check_reachable(self.url)
        self.client = connect(self.url)
        self._take_script = self.client.register_script(TAKE_SCRIPT)  # loaded at the first take (NoScriptError)
        self._report = self.client.register_script(REPORT_SCRIPT)
        self._release = self.client.register_script(RELEASE_SCRIPT)
        self._rescue = self.client.register_script(RESCUE_SCRIPT)
        self.pool = ProcessPool(self.concurrency, LeaseHolder(self.url, self.name, self.queue, self.key),
                                on_start=lambda job_id: self._began.append((job_id, time.time())))
        self.pool.start()  # warm before the first claim: a step never waits for a process to start
        self._install_signals()
        self._beat()  # registered as a consumer before the first job
        threads = [threading.Thread(target=self._heartbeat_loop, name="rivers-heartbeat", daemon=True),
                   threading.Thread(target=self._report_loop, name="rivers-reporter", daemon=True)]
        for thread in threads:
            thread.start()
        self.log.info("worker.started", concurrency=self.concurrency, queue=self.queue)
        try:
            self._consume()
            self._drain()
        finally:
            self._finish()
        return 0

    def _install_signals(self) -> None:
        on_stop_signals(self._on_signal)

    def _on_signal(self) -> None:
        self._handing_back = self._stopping
        self._stopping = True

    def stop(self) -> None:
        """Finish running steps and exit (what the first SIGTERM does)."""
        self._stopping = True

    def _consume(self) -> None:
        while not self._stopping:
            free = self._wait_for_slot()
            if not free:
                continue
            claimed = self._take(free)
            if not claimed:
                if self.burst and not self._held:
                    return
                continue
            for index in range(0, len(claimed), 3):
                self._start(claimed[index].decode(), claimed[index + 1], claimed[index + 2] or None)

    def _take(self, most: int) -> list[bytes]:
        """Wait for a job and claim up to `most`, in one round trip: BLMOVE to this worker's hand, then TAKE."""
        queue_key = keys.queue_key(self.executor)
        args = [self.name, defaults.LEASE_MS, keys.hand_key(self.name), self.queue, queue_key, most]
        pipe = self.client.pipeline(transaction=False)
        pipe.blmove(queue_key, keys.hand_key(self.name), defaults.WORKER_BLOCK_S, "LEFT", "RIGHT")
        pipe.evalsha(self._take_script.sha, 0, *args)
        moved, claimed = pipe.execute(raise_on_error=False)
        if isinstance(moved, Exception):
            raise moved
        if isinstance(claimed, NoScriptError):  # Redis restarted without its scripts: what was moved is in hand
            claimed = self._take_script(args=args)
        elif isinstance(claimed, Exception):
            raise claimed
        return cast(list[bytes], claimed)

    def _wait_for_slot(self) -> int:
        """How many jobs to claim: the free slots, plus PREFETCH per slot waiting in the pool's queue."""
        limit = self.concurrency * (1 + defaults.PREFETCH)
        with self._cond:
            while len(self._held) >= limit and not self._stopping:
                self._cond.wait(0.5)
            return 0 if self._stopping else limit - len(self._held)

    def _drain(self) -> None:
        """After the first SIGTERM: wait for running steps; after a second one, hand them back."""
        if self._stopping:
            with contextlib.suppress(Exception):  # its step processes' reports claim nothing more for it
                self.client.set(keys.stopping_key(self.name), "1", px=STOPPING_TTL_MS)
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
            self._release(args=[self.name, rq_view.rq_time(), time.time(), self.queue, "", "", *reversed(jobs)])
            self.log.warning("worker.handed_back", jobs=len(jobs))
        for pid in self.pool.worker_pids() if self.pool else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _finish(self) -> None:
        self._reports.put(None)
        self._done.wait(defaults.REDIS_SOCKET_TIMEOUT_S)
        self.presence.leave()
        with contextlib.suppress(Exception):
            self.client.delete(keys.stopping_key(self.name))
        if self.pool is not None and not self._handing_back:
            self.pool.shutdown()
        self.log.info("worker.stopped")

    # -- one job ------------------------------------------------------------------------------
    def _start(self, job_id: str, data: bytes, signature: bytes | None) -> None:
        try:
            job = decode_job(job_id, data, signature, self.key)
        except RefusedJob as exc:  # not ours to run, and its sender cannot be trusted with a report
            self.log.error("worker.refused_job", job_id=job_id, error=str(exc))
            self._release(args=[self.name, rq_view.rq_time(), time.time(), self.queue, str(exc),
                                rq_view.exc_string_field(str(exc)), job_id])
            return
        with self._cond:
            self._held[job_id] = job
        assert self.pool is not None
        self.pool.submit(job_id, job.spec_json, self._on_reply, route=job.reply_to)

    def _on_reply(self, job_id: str, result: PoolResult) -> None:
        if not result.reported:  # its step process died, or could not reach Redis: the reporter sends it
            self._reports.put((job_id, result))
            return
        following = result.next
        with self._cond:
            self._held.pop(job_id, None)
            if following is not None:  # its report claimed a downstream job, which that process runs now
                self._held[following.ticket] = StepJob(following.ticket, following.spec_json, following.route)
            self._cond.notify_all()
        if result.reported == STALE:
            self._stale(job_id)
        if result.claimed is not None:  # claimed by its report, not runnable there: as if this process took it
            claimed = result.claimed
            self._start(claimed.job_id, claimed.data, claimed.signature)

    # -- reporting and heartbeats --------------------------------------------------------------
    def _report_loop(self) -> None:
        """Send reports in batches: one script call for every report that arrived meanwhile."""
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

    def _send(self, batch: list[tuple[str, PoolResult]]) -> None:
        with self._cond:
            mine = [(job_id, result, self._held.pop(job_id)) for job_id, result in batch if job_id in self._held]
            self._cond.notify_all()
        if not mine:
            return
        args: list[Any] = report_common_args(self.name, self.queue)
        for _, result, job in mine:
            args += report_args(job, result, self.key)
        try:
            stale, _ = self._report(args=args)
        except Exception as exc:  # noqa: BLE001 - Redis gone past the retries: the leases expire, steps re-run
            self.log.error("worker.report_failed", error=repr(exc), jobs=len(mine))
            return
        for job_id in stale:
            self._stale(job_id.decode())
        self.log.info("worker.reported", jobs=len(mine) - len(stale))

    def _stale(self, job_id: str) -> None:
        self.log.warning("worker.stale_report_dropped", job_id=job_id,
                         reason="the attempt lost its lease; the coordinator has retried the step")

    def _heartbeat_loop(self) -> None:
        while not self._done.wait(defaults.HEARTBEAT_S):
            try:
                self._beat()
            except Exception as exc:  # noqa: BLE001 - Redis restarting: the next beat tries again
                self.log.warning("worker.heartbeat_failed", error=repr(exc))

    def _beat(self) -> None:
        with self.presence.beating() as present:
            if present:
                self._beat_once()

    def _beat_once(self) -> None:
        with self._cond:
            held = dict(self._held)
        began, self._began = self._began, []
        pipe = self.client.pipeline(transaction=False)
        announce(pipe, self.name, self.executor, list(held), self.birth)
        for job_id, when in began:  # running, not only claimed: the coordinator's watcher tells the run
            if job_id in held:
                pipe.hset(keys.job_key(job_id), keys.JOB_RUNNING_AT, when)
        if self._rescue is not None:
            self._rescue(args=[keys.workers_key(self.executor), keys.queue_key(self.executor)], client=pipe)
        for job_id in held:
            pipe.pexpire(keys.lease_key(job_id), defaults.LEASE_MS)
        replies = pipe.execute()
        renewed = replies[len(replies) - len(held):]
        gone = [job_id for job_id, ok in zip(held, renewed, strict=True) if not ok]
        if gone:  # a lease also ends with its report, which the step process made before telling this process
            pipe = self.client.pipeline(transaction=False)
            for job_id in gone:
                pipe.hexists(keys.reports_key_of(held[job_id].reply_to), job_id)
            for job_id, reported in zip(gone, pipe.execute(), strict=True):
                if not reported:
                    self._lost(job_id)

    def _lost(self, job_id: str) -> None:
        """The lease of a running step is gone: the coordinator has given the step to another attempt."""
        with self._cond:
            job = self._held.pop(job_id, None)
            self._cond.notify_all()
        if job is None:
            return  # reported meanwhile
        killed = self.pool.kill(job_id) if self.pool is not None else False
        self.log.warning("worker.lease_lost", job_id=job_id, killed=killed,
                         reason="this worker was paused or cut off from Redis past its lease")
