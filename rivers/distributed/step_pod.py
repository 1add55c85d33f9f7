"""A step pod: `rivers-worker --executor kubernetes --step <job id>` runs exactly that job, here, and reports it.

    the pod launcher claimed the job from rivers:kubernetes (the lease names the launcher) and started this pod
        ──> HANDOVER script: the lease passes from the launcher to this pod, only while the job is started
        ──> decode_job: signature (RIVERS_SECRET) over the exact bytes, bounded decompression
        ──> the one step runtime, in this process (pool_process.run_spec), each output write fenced by the lease
        ──> the workers' REPORT script, keeping the report without pushing it (only while this pod holds the
            lease); exit 0 | 1 at once; the launcher pushes the kept report when it sees the pod ended (and the
            coordinator reads it from the run's reports after two watcher ticks if no launcher does)
    heartbeat thread: renews the lease while the step runs

A step pod is one more worker of the same contract: the coordinator cannot tell its reports from a worker's.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

from rivers import defaults, signing
from rivers.distributed.connection import check_reachable, connect
from rivers.distributed.fence import LeaseHolder
from rivers.distributed.jobs import decode_job
from rivers.exceptions import ExecutionError, RefusedJob
from rivers.executors import pool_process
from rivers.executors.pool_process import STALE, PoolResult
from rivers.kubernetes.manifests import POD_NAME_ENV
from rivers.logs import get_logger, log_level
from rivers.queues import keys, rq_view

# Only from a launcher: a lease already held by a pod ("pod:<name>") is never taken over by another.
# ARGV: pod name, lease ms, now (RQ time), now (epoch s), job id. -> {'ok', data, signature} | {'<why not>'}
HANDOVER_SCRIPT = rq_view.LUA_FUNCTIONS + f"""
local id = ARGV[5]
local job = '{keys.RQ_JOB_PREFIX}' .. id
local found = redis.call('HMGET', job, '{keys.JOB_DATA}', '{keys.JOB_SIGNATURE}', '{keys.JOB_STATUS}',
                         '{keys.JOB_WORKER}', '{keys.JOB_ORIGIN}')
if not found[1] then
  return {{'its job is gone'}}
end
local lease = '{keys.LEASE_PREFIX}' .. id
local holder = redis.call('GET', lease)
if found[3] ~= '{keys.STARTED}' or not holder then
  return {{'its job is ' .. (found[3] or 'unknown') .. ', not claimed by a launcher'}}
end
if string.sub(holder, 1, {len(keys.POD_LEASE_PREFIX)}) == '{keys.POD_LEASE_PREFIX}' then
  return {{'another pod (' .. holder .. ') has taken it over already'}}
end
rq_requeued(found[5], id, found[4])
rq_started(found[5], id, ARGV[1], ARGV[4], ARGV[3], {defaults.RQ_STARTED_TTL_S})
redis.call('HSET', job, '{keys.JOB_RUNNING_AT}', ARGV[4])
redis.call('SET', lease, ARGV[1], 'PX', ARGV[2])
return {{'ok', found[1], found[2] or ''}}
"""


class StepPod:
    """One step pod's life: take the job over, run it, report it."""

    def __init__(self, url: str, job_id: str) -> None:
        self.url = url
        self.job_id = job_id
        pod = os.environ.get(POD_NAME_ENV) or os.environ.get("HOSTNAME") or socket.gethostname()
        self.name = keys.POD_LEASE_PREFIX + pod  # a lease held by a pod says so: no other pod may take it over
        self.log = get_logger().bind(pod=self.name, job_id=job_id)
        self.client: Any = None
        self._done = threading.Event()

    def run(self) -> int:
        """0 when the step succeeded, 1 when it failed; ExecutionError when there is nothing this pod may run."""
        check_reachable(self.url)
        self.client = connect(self.url)
        key = signing.deployment_key()
        taken = self.client.register_script(HANDOVER_SCRIPT)(
            args=[self.name, defaults.LEASE_MS, rq_view.rq_time(), time.time(), self.job_id])
        if taken[0] != b"ok":
            raise ExecutionError(f"step pod for job {self.job_id}: {taken[0].decode()}")
        try:
            job = decode_job(self.job_id, taken[1], taken[2] or None, key)
        except RefusedJob as exc:
            raise ExecutionError(f"step pod: {exc}") from None
        threading.Thread(target=self._renew, name="rivers-lease", daemon=True).start()
        # the report is kept, not pushed: the launcher pushes it when it sees this pod ended
        holder = LeaseHolder(self.url, self.name, keys.queue_name("kubernetes"), key, push=False)
        pool_process.configure(None, log_level(), holder, tee=True)
        result = PoolResult(*pool_process.run_spec(job.spec_json, self.job_id))
        self._done.set()
        stale = holder.report(self.job_id, job.reply_to, result) == STALE
        if stale:
            self.log.warning("pod.stale_report_dropped", reason="the attempt lost its lease; it was retried")
        self.log.info("pod.reported", failed=bool(result.failure))
        return 1 if result.failure or stale else 0

    def _renew(self) -> None:
        lease = keys.lease_key(self.job_id)
        while not self._done.wait(defaults.HEARTBEAT_S):
            try:
                if not self.client.pexpire(lease, defaults.LEASE_MS):
                    self.log.warning("pod.lease_lost", reason="paused or cut off from Redis past the lease")
                    return
            except Exception as exc:  # noqa: BLE001 - Redis restarting: the next beat tries again
                self.log.warning("pod.heartbeat_failed", error=repr(exc))
