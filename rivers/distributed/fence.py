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

import time
from typing import Any

from rivers import defaults
from rivers.distributed.jobs import StepJob, encode_report
from rivers.exceptions import StaleAttempt
from rivers.executors.pool_process import REPORTED, STALE, AttemptOwner, PoolResult
from rivers.queues import keys, rq_view
from rivers.queues.armed import RELEASE_LUA
from rivers.runtime import Fence


def report_script(push: bool = True) -> str:
    """Report results, fenced: only an attempt whose lease this reporter still holds is reported; the others are
    stale. Each report is kept in its run's reports hash and, with `push`, pushed on the run's results list (a step
    pod only keeps it: its launcher pushes it once the pod has ended, so a run's slot is free only when its pod is).
    The jobs armed on a reported attempt leave with its report: queued after a success, deleted otherwise (armed.py).
    ARGV: worker, now (RQ time), now (epoch s), queue name, then per report: id, reply_to, reports key, message,
    error, error for RQ's result stream (both '' for a step that succeeded). -> the stale ids
    """
    pushed = f"""redis.call('RPUSH', reply_to, message)
    redis.call('EXPIRE', reply_to, {defaults.RESULT_TTL_S})""" if push else ""
    return rq_view.LUA_FUNCTIONS + RELEASE_LUA + f"""
local stale = {{}}
for i = 5, #ARGV, 6 do
  local id, reply_to, reports, message, err = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local lease = '{keys.LEASE_PREFIX}' .. id
  if redis.call('GET', lease) == ARGV[1] then
    {pushed}
    redis.call('HSET', reports, id, message)
    redis.call('EXPIRE', reports, {defaults.RESULT_TTL_S})
    redis.call('DEL', lease)
    release_armed(id, err == '', ARGV[2])
    if err == '' then
      rq_finished(ARGV[4], id, ARGV[1], ARGV[3], ARGV[2], {defaults.FINISHED_JOB_TTL_S})
    else
      rq_failed(ARGV[4], id, ARGV[1], ARGV[3], ARGV[2], {defaults.FINISHED_JOB_TTL_S}, err, ARGV[i + 5])
    end
  else
    stale[#stale + 1] = id
  end
end
return stale
"""


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
        if self._report is None:
            self._report = self._connected().register_script(report_script(self.push))
        stale = self._report(args=[self.worker, rq_view.rq_time(), time.time(), self.queue,
                                   *report_args(StepJob(ticket, "", route), result, self.key)])
        return STALE if stale else REPORTED
