"""What a step process holds of its attempt's lease: the fence of each output write, and the attempt's report.

A worker paused past its lease (SIGSTOP, a long GC, a frozen VM) has lost the step to a retry by the time it
runs again. Right before each output write, the step process checks that the lease key of its job still
names its worker and has at least FENCE_MARGIN_MS to live; otherwise the write is refused and the attempt
ends (StaleAttempt). What remains is a pause longer than that margin that falls between the check and the
end of the write itself (see the README's security section).

The report is fenced the same way, atomically (REPORT script): only an attempt whose lease its holder still
has is reported, and the report deletes the lease, so an attempt is reported once. The step process that ran
the attempt sends it itself (a worker's pool process, a step pod): the result goes from the process that made
it to Redis in one hop, not through its worker's reader and reporter threads. The worker's main process still
imports no user code; it hears of the report through its pool's pipe, and sends a report itself only when its
step process could not (it died: WorkerLost; or Redis was unreachable from it).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from rivers import defaults
from rivers.distributed.jobs import StepJob, decode_job, encode_report
from rivers.exceptions import RefusedJob, StaleAttempt
from rivers.executors.pool_process import REPORTED, STALE, AttemptOwner, ClaimedJob, NextJob, PoolResult
from rivers.queues import keys, rq_view
from rivers.queues.armed import RELEASE_LUA
from rivers.runtime import Fence


def report_script(push: bool = True) -> str:
    """Report results, fenced: only an attempt whose lease this reporter still holds is reported; the others are
    stale. Each report is kept in its run's reports hash and, with `push`, pushed on the run's results list (a step
    pod only keeps it: its launcher pushes it once the pod has ended, so a run's slot is free only when its pod is).
    The jobs armed on a reported attempt leave with its report: queued after a success, deleted otherwise (armed.py);
    up to `take` of those on this reporter's queue are claimed for it instead of queued (the step process that
    reported goes on with one at once), unless its worker is stopping.
    ARGV: worker, now (RQ time), now (epoch s), queue name, take, lease ms, the worker's stopping key, then per
    report: id, reply_to, reports key, message, error, error for RQ's result stream (both '' for a step that
    succeeded). -> {the stale ids, [id, data, signature] of each job claimed}
    """
    pushed = f"""redis.call('RPUSH', reply_to, message)
    redis.call('EXPIRE', reply_to, {defaults.RESULT_TTL_S})""" if push else ""
    return rq_view.LUA_FUNCTIONS + RELEASE_LUA + f"""
local stale, taken = {{}}, {{}}
local take = tonumber(ARGV[5])
if take > 0 and redis.call('EXISTS', ARGV[7]) == 1 then
  take = 0
end
local function keep(id, queue)
  if take <= 0 or queue ~= ARGV[4] then
    return false
  end
  take = take - 1
  redis.call('SET', '{keys.LEASE_PREFIX}' .. id, ARGV[1], 'PX', ARGV[6])
  rq_started(queue, id, ARGV[1], ARGV[3], ARGV[2], {defaults.RQ_STARTED_TTL_S})
  local job = redis.call('HMGET', '{keys.RQ_JOB_PREFIX}' .. id, '{keys.JOB_DATA}', '{keys.JOB_SIGNATURE}')
  taken[#taken + 1] = id
  taken[#taken + 1] = job[1]
  taken[#taken + 1] = job[2] or ''
  return true
end
for i = 8, #ARGV, 6 do
  local id, reply_to, reports, message, err = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local lease = '{keys.LEASE_PREFIX}' .. id
  if redis.call('GET', lease) == ARGV[1] then
    {pushed}
    redis.call('HSET', reports, id, message)
    redis.call('EXPIRE', reports, {defaults.RESULT_TTL_S})
    redis.call('DEL', lease)
    if err == '' then
      rq_finished(ARGV[4], id, ARGV[1], ARGV[3], ARGV[2], {defaults.FINISHED_JOB_TTL_S})
    else
      rq_failed(ARGV[4], id, ARGV[1], ARGV[3], ARGV[2], {defaults.FINISHED_JOB_TTL_S}, err, ARGV[i + 5])
    end
    release_armed(id, err == '', ARGV[2], keep)
  else
    stale[#stale + 1] = id
  end
end
return {{stale, taken}}
"""


def report_common_args(worker: str, queue: str, take: int = 0) -> list[Any]:
    """The arguments of REPORT_SCRIPT before its reports."""
    return [worker, rq_view.rq_time(), time.time(), queue, take, defaults.LEASE_MS, keys.stopping_key(worker)]


REPORT_SCRIPT = report_script()


def report_args(job: StepJob, result: PoolResult, key: bytes | None) -> list[str]:
    """One report's arguments of REPORT_SCRIPT (after its four common ones)."""
    return [job.job_id, job.reply_to, keys.reports_key_of(job.reply_to), encode_report(job.job_id, result.result_json,
            key), result.failure, rq_view.exc_string_field(result.failure) if result.failure else ""]


class LeaseHolder(AttemptOwner):
    """Made in a worker (or a step pod), pickled to its step processes, used there for each attempt."""

    def __init__(self, url: str, worker: str, queue: str, key: bytes | None, push: bool = True) -> None:
        self.url, self.worker, self.queue, self.key, self.push = url, worker, queue, key, push
        self._client: Any = None
        self._report: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None, "_report": None}

    def _connected(self) -> Any:
        if self._client is None:
            from rivers.distributed.connection import connect

            self._client = connect(self.url)
        return self._client

    def fence(self, ticket: str, step_key: str) -> Fence:
        lease = keys.lease_key(ticket)

        def check(output: str) -> None:
            pipe = self._connected().pipeline(transaction=False)
            pipe.get(lease)
            pipe.pttl(lease)
            holder, ttl = pipe.execute()
            if holder is None or holder.decode() != self.worker or ttl < defaults.FENCE_MARGIN_MS:
                raise StaleAttempt(
                    f"'{step_key}' lost its lease (worker {self.worker} was paused or cut off from Redis past "
                    f"{defaults.LEASE_MS / 1000:g} s), so output '{output}' was not written; the step was retried"
                )

        return check

    def report(self, ticket: str, route: str, result: PoolResult) -> str:
        """Report one attempt, fenced: REPORTED, or STALE when its lease is no longer this holder's."""
        return self.report_and_take(ticket, route, result, take=False).reported

    def report_and_take(self, ticket: str, route: str, result: PoolResult, take: bool = True) -> PoolResult:
        """`result`, reported (fenced) and marked so; with `take`, also claimed for this worker: a downstream job
        that this very report released on this queue, to run next in this process (`next`), or to hand to the
        worker when it cannot be run here (`claimed`: its signature does not verify)."""
        if self._report is None:
            self._report = self._connected().register_script(report_script(self.push))
        stale, taken = self._report(args=[*report_common_args(self.worker, self.queue, int(take and self.push)),
                                          *report_args(StepJob(ticket, "", route), result, self.key)])
        reported = dataclasses.replace(result, reported=STALE if stale else REPORTED)
        if not taken:
            return reported
        job_id, data, signature = taken[0].decode(), taken[1], taken[2] or None
        try:
            job = decode_job(job_id, data, signature, self.key)
        except RefusedJob:
            return dataclasses.replace(reported, claimed=ClaimedJob(job_id, data, signature))
        return dataclasses.replace(reported, next=NextJob(job_id, job.spec_json, job.reply_to))
